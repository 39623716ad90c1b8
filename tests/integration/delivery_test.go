package integration

import (
	"net/http"
	"strconv"
	"testing"
)

func TestDeliveryBatchSize(t *testing.T) {
	root := writeSite(t)
	const pageViews = 7

	for _, batchSize := range []int{1, 3} {
		t.Run("batch_size "+strconv.Itoa(batchSize), func(t *testing.T) {
			startCaddy(t, caddyfile("", "\troot * "+root+"\n\t"+segmentBlockWith(testWriteKey, batchSize)+"\n\tfile_server"))

			for range pageViews {
				if resp := get(t, "/guide.html", nil); resp.status != http.StatusOK {
					t.Fatalf("status = %d, expected 200", resp.status)
				}
			}
			events, err := rec.WaitEvents(pageViews, eventTimeout)
			if err != nil {
				t.Fatalf("waiting for %d events: %v", pageViews, err)
			}

			stats := rec.Stats()
			if len(events) != pageViews || stats.Events != pageViews {
				t.Errorf("recorder holds %d events and counted %d, expected %d", len(events), stats.Events, pageViews)
			}
			if stats.MaxEventsPerBatch > batchSize {
				t.Errorf("largest accepted batch has %d events, expected at most batch_size %d", stats.MaxEventsPerBatch, batchSize)
			}
			if minBatches := (pageViews + batchSize - 1) / batchSize; stats.Batches < minBatches {
				t.Errorf("recorder accepted %d batches, expected at least %d for %d events of batch_size %d", stats.Batches, minBatches, pageViews, batchSize)
			}
			if len(stats.Rejected) != 0 {
				t.Errorf("recorder rejected requests %v, expected none with the configured write key", stats.Rejected)
			}
			if stats.DuplicateMessageIDs != 0 {
				t.Errorf("recorder saw %d duplicate messageIds, expected every event to have its own", stats.DuplicateMessageIDs)
			}
		})
	}
}

func TestDeliveryWrongWriteKey(t *testing.T) {
	root := writeSite(t)
	startCaddy(t, caddyfile("", "\troot * "+root+"\n\t"+segmentBlockWith("wrong-write-key", 2)+"\n\tfile_server"))

	resp := get(t, "/guide.html", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("status = %d, expected 200 whatever happens to the event", resp.status)
	}
	if len(anonymousIDCookies(resp.header)) != 1 {
		t.Errorf("the page view sets %d ajs_anonymous_id cookies, expected 1 whatever happens to the event", len(anonymousIDCookies(resp.header)))
	}

	eventually(t, "the recorder rejects a batch with 401", func() bool {
		return rec.Stats().Rejected[http.StatusUnauthorized] > 0
	})
	if events := rec.Events(); len(events) != 0 {
		t.Errorf("recorder stored %d events sent with a wrong write key, expected none: %v", len(events), events)
	}
	if stats := rec.Stats(); stats.Batches != 0 {
		t.Errorf("recorder accepted %d batches sent with a wrong write key, expected none", stats.Batches)
	}
}
