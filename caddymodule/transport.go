package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// maxRequestBytes is Segment's limit on the body of one batch request,
// 500 KB, which analytics-go counts as 500,000 bytes.
const maxRequestBytes = 500_000

// batchTransport carries analytics-go's requests to Segment and reports
// failed attempts. It does two things analytics-go v3.3.0 does not:
//   - it cuts every in-flight request when the sender's shutdown_timeout
//     ends, since analytics-go's Close has no deadline;
//   - it splits a batch whose body is over maxRequestBytes into halves.
//     analytics-go cuts a batch at 500,000 bytes of events but does not
//     count the commas between them, so a batch of many events can exceed
//     Segment's limit by up to one byte per event, and Segment refuses it.
type batchTransport struct {
	base  http.RoundTripper
	abort context.Context
	// failed is called for each attempt that analytics-go will retry: a
	// request that gets no response, or a response of 300 or more.
	failed func()
}

func (t *batchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.ContentLength > maxRequestBytes && req.Body != nil {
		return t.split(req)
	}
	return t.send(req)
}

// split sends the events of an oversized batch in two requests, splitting
// again where needed. It returns the first failed response, or the last
// successful one. When the second half fails, analytics-go retries the whole
// batch; Segment drops the repeated events by their messageId.
func (t *batchTransport) split(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}

	var envelope map[string]json.RawMessage
	var events []json.RawMessage
	if json.Unmarshal(body, &envelope) != nil || json.Unmarshal(envelope["batch"], &events) != nil || len(events) < 2 {
		// Not a batch that can be split: Segment gives its verdict.
		return t.send(requestWithBody(req, body))
	}

	half := len(events) / 2
	parts := [][]json.RawMessage{events[:half], events[half:]}
	var res *http.Response
	for i, part := range parts {
		if envelope["batch"], err = json.Marshal(part); err != nil {
			return nil, err
		}
		partBody, err := json.Marshal(envelope)
		if err != nil {
			return nil, err
		}

		res, err = t.RoundTrip(requestWithBody(req, partBody))
		if err != nil {
			return nil, err
		}
		if res.StatusCode >= http.StatusMultipleChoices || i == len(parts)-1 {
			break
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	return res, nil
}

// send passes the request on with a context that the sender's abort
// cancels.
func (t *batchTransport) send(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(t.abort, cancel)
	release := func() {
		stop()
		cancel()
	}

	res, err := t.base.RoundTrip(req.WithContext(ctx))
	if (err != nil || res.StatusCode >= http.StatusMultipleChoices) && t.failed != nil {
		t.failed()
	}
	if err != nil {
		release()
		return nil, err
	}
	res.Body = &releasingBody{ReadCloser: res.Body, release: release}
	return res, nil
}

// requestWithBody returns a copy of req that sends body.
func requestWithBody(req *http.Request, body []byte) *http.Request {
	clone := req.Clone(req.Context())
	clone.Body = io.NopCloser(bytes.NewReader(body))
	clone.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
	clone.ContentLength = int64(len(body))
	clone.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return clone
}

// releasingBody frees the request's context once the body is closed.
type releasingBody struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
