package recorder

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
)

// FuzzDecodeBatch checks that any body either fails to decode or decodes
// the same way whether the events are kept or only counted, that an
// accepted body is valid JSON, and that each kept event carries the
// messageId returned for it.
func FuzzDecodeBatch(f *testing.F) {
	seeds := []string{
		``, `null`, `[]`, `{"batch":[]}`, `{"batch":[1]}`, `{"batch":{}}`, `{"batch":[]} {}`,
		`{"batch":[1],"batch":[]}`, `{"batch":[],"batch":[1]}`,
		`{"batch":[{"type":"track","anonymousId":"a","event":"e","messageId":"m"}]}`,
		`{"batch":[{"type":"page","userId":"u","messageId":"m","context":{"page":{"url":"x"}}}],"sentAt":"t"}`,
		`{"batch":[{"type":"track","anonymousId":"a","event":"e","messageId":7}]}`,
		`{"batch":[{"type":"group","anonymousId":"a","groupId":"g","type":"alias","previousId":"p"}]}`,
		"{\"batch\":[{\"type\":\"track\",\"anonymousId\":\"\xff\",\"event\":\"e\",\"messageId\":\"\xfe\"}]}",
	}
	for _, seed := range seeds {
		f.Add([]byte(seed))
	}
	header := http.Header{"Content-Type": {"application/json"}}

	f.Fuzz(func(t *testing.T, body []byte) {
		keptEvents, keptIDs, keptErr := decodeBatch(header, rawBody{data: body}, true)
		counted, countedIDs, countedErr := decodeBatch(header, rawBody{data: body}, false)

		if (keptErr == nil) != (countedErr == nil) {
			t.Fatalf("keeping events gives error %v, counting them gives %v", keptErr, countedErr)
		}
		if keptErr != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not valid JSON: %q", body)
		}
		if counted != nil {
			t.Errorf("counting returned %d events, want none", len(counted))
		}
		if !reflect.DeepEqual(keptIDs, countedIDs) {
			t.Errorf("messageIds differ: kept %q, counted %q", keptIDs, countedIDs)
		}
		if len(keptEvents) != len(keptIDs) {
			t.Fatalf("%d events kept with %d messageIds", len(keptEvents), len(keptIDs))
		}
		for i, event := range keptEvents {
			id, _ := event["messageId"].(string)
			if id != keptIDs[i] {
				t.Errorf("event %d has messageId %q, returned as %q", i, id, keptIDs[i])
			}
		}
	})
}
