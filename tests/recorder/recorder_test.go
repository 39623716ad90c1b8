package recorder_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

const testWriteKey = "test-write-key"

// waitBound caps every wait in these tests so that a broken recorder fails
// the test instead of hanging it.
const waitBound = 10 * time.Second

var client = &http.Client{Timeout: waitBound}

// response is what a test request got back.
type response struct {
	status int
	header http.Header
	body   string
}

func startRecorder(t *testing.T) *recorder.Recorder {
	t.Helper()
	return startRecorderWith(t, recorder.Options{WriteKey: testWriteKey})
}

func startRecorderWith(t *testing.T, opts recorder.Options) *recorder.Recorder {
	t.Helper()
	rec, err := recorder.Start(opts)
	if err != nil {
		t.Fatalf("Start failed: %v", err)
	}
	t.Cleanup(rec.Close)
	return rec
}

// newBatchRequest builds a valid batch request carrying body, which edit may
// change before it is sent.
func newBatchRequest(t *testing.T, rec *recorder.Recorder, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, rec.URL()+"/v1/batch", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("building request failed: %v", err)
	}
	req.SetBasicAuth(testWriteKey, "")
	req.Header.Set("Content-Type", "application/json")
	return req
}

func send(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s failed: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response to %s %s failed: %v", req.Method, req.URL, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// post sends body as a valid batch request, after edit changes the request
// unless edit is nil.
func post(t *testing.T, rec *recorder.Recorder, body []byte, edit func(*http.Request)) response {
	t.Helper()
	req := newBatchRequest(t, rec, body)
	if edit != nil {
		edit(req)
	}
	return send(t, req)
}

func trackEvent(anonymousID, messageID string) map[string]any {
	event := map[string]any{
		"type":        "track",
		"event":       "[GitBook] space_view",
		"anonymousId": anonymousID,
		"properties":  map[string]any{"spaceId": "space-1", "pageId": "page-1"},
		"context": map[string]any{
			"page": map[string]any{"path": "/guide", "url": "http://localhost/guide"},
		},
	}
	if messageID != "" {
		event["messageId"] = messageID
	}
	return event
}

func batchBody(t *testing.T, events ...map[string]any) []byte {
	t.Helper()
	if events == nil {
		events = []map[string]any{}
	}
	body, err := json.Marshal(map[string]any{"batch": events})
	if err != nil {
		t.Fatalf("encoding batch failed: %v", err)
	}
	return body
}

func gzipBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	var buffer bytes.Buffer
	writer, err := gzip.NewWriterLevel(&buffer, gzip.BestSpeed)
	if err != nil {
		t.Fatalf("gzip writer failed: %v", err)
	}
	if _, err := writer.Write(data); err != nil {
		t.Fatalf("gzip write failed: %v", err)
	}
	if err := writer.Close(); err != nil {
		t.Fatalf("gzip close failed: %v", err)
	}
	return buffer.Bytes()
}

// padJSON appends spaces, which JSON allows after the value, until data is
// size bytes long.
func padJSON(t *testing.T, data []byte, size int) []byte {
	t.Helper()
	if len(data) > size {
		t.Fatalf("cannot pad %d bytes of JSON to %d bytes", len(data), size)
	}
	return append(data, bytes.Repeat([]byte(" "), size-len(data))...)
}

// eventOfSize returns a track event whose JSON encoding is exactly size bytes.
func eventOfSize(t *testing.T, size int) map[string]any {
	t.Helper()
	event := trackEvent("anon-size", "")
	properties := event["properties"].(map[string]any)
	properties["padding"] = ""
	encoded, err := json.Marshal(event)
	if err != nil {
		t.Fatalf("encoding event failed: %v", err)
	}
	properties["padding"] = strings.Repeat("x", size-len(encoded))

	encoded, err = json.Marshal(event)
	if err != nil {
		t.Fatalf("encoding event failed: %v", err)
	}
	if len(encoded) != size {
		t.Fatalf("built an event of %d bytes, expected %d", len(encoded), size)
	}
	return event
}

// waitUntil polls condition until it holds, and fails the test after
// waitBound.
func waitUntil(t *testing.T, what string, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", waitBound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closeWithinBound runs Close and fails the test if it has not returned after
// waitBound.
func closeWithinBound(t *testing.T, rec *recorder.Recorder) {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		rec.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(waitBound):
		t.Fatalf("Close did not return within %s", waitBound)
	}
}

func TestStartRejectsInvalidWriteKey(t *testing.T) {
	tests := []struct {
		name     string
		writeKey string
	}{
		{name: "empty", writeKey: ""},
		{name: "with colon", writeKey: "key:secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := recorder.Start(recorder.Options{WriteKey: tt.writeKey})
			if err == nil {
				rec.Close()
				t.Fatalf("Start with WriteKey %q returned no error", tt.writeKey)
			}
		})
	}
}

func TestURLIsLoopbackWithoutSlash(t *testing.T) {
	rec := startRecorder(t)
	url := rec.URL()

	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Errorf("URL() = %q, expected it to start with http://127.0.0.1:", url)
	}
	if strings.HasSuffix(url, "/") {
		t.Errorf("URL() = %q ends with a slash", url)
	}
}

func TestValidBatchIsRecorded(t *testing.T) {
	rec := startRecorder(t)
	body := batchBody(t, trackEvent("anon-1", "msg-1"), trackEvent("anon-2", "msg-2"))

	got := post(t, rec, body, nil)

	if got.status != http.StatusOK {
		t.Fatalf("status = %d, expected 200; body %s", got.status, got.body)
	}
	if got.body != `{"success":true}` {
		t.Errorf(`body = %s, expected {"success":true}`, got.body)
	}
	if contentType := got.header.Get("Content-Type"); contentType != "application/json" {
		t.Errorf("Content-Type = %q, expected application/json", contentType)
	}

	events := rec.Events()
	if len(events) != 2 {
		t.Fatalf("recorded %d events, expected 2", len(events))
	}
	if id := events[0].String("anonymousId"); id != "anon-1" {
		t.Errorf("first event anonymousId = %q, expected anon-1 (arrival order)", id)
	}
	if id := events[1].String("anonymousId"); id != "anon-2" {
		t.Errorf("second event anonymousId = %q, expected anon-2 (arrival order)", id)
	}
	if url := events[0].String("context.page.url"); url != "http://localhost/guide" {
		t.Errorf("context.page.url = %q, expected http://localhost/guide", url)
	}

	stats := rec.Stats()
	if stats.Requests != 1 {
		t.Errorf("Stats.Requests = %d, expected 1", stats.Requests)
	}
	if stats.Batches != 1 {
		t.Errorf("Stats.Batches = %d, expected 1", stats.Batches)
	}
	if stats.Events != 2 {
		t.Errorf("Stats.Events = %d, expected 2", stats.Events)
	}
	if len(stats.Rejected) != 0 {
		t.Errorf("Stats.Rejected = %v, expected none", stats.Rejected)
	}
}

func TestGzipBatchIsRecorded(t *testing.T) {
	rec := startRecorder(t)
	body := gzipBytes(t, batchBody(t, trackEvent("anon-gzip", "msg-gzip")))

	got := post(t, rec, body, func(req *http.Request) {
		req.Header.Set("Content-Encoding", "gzip")
	})

	if got.status != http.StatusOK {
		t.Fatalf("status = %d, expected 200; body %s", got.status, got.body)
	}
	events := rec.Events()
	if len(events) != 1 {
		t.Fatalf("recorded %d events, expected 1", len(events))
	}
	if id := events[0].String("anonymousId"); id != "anon-gzip" {
		t.Errorf("anonymousId = %q, expected anon-gzip", id)
	}
}

func TestRoutingAndAuthentication(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(*http.Request)
		wantStatus int
		wantHeader map[string]string
	}{
		{
			name:       "valid request",
			wantStatus: http.StatusOK,
		},
		{
			name:       "GET method",
			edit:       func(req *http.Request) { req.Method = http.MethodGet },
			wantStatus: http.StatusMethodNotAllowed,
			wantHeader: map[string]string{"Allow": "POST"},
		},
		{
			name:       "PUT method",
			edit:       func(req *http.Request) { req.Method = http.MethodPut },
			wantStatus: http.StatusMethodNotAllowed,
			wantHeader: map[string]string{"Allow": "POST"},
		},
		{
			name:       "track path",
			edit:       func(req *http.Request) { req.URL.Path = "/v1/track" },
			wantStatus: http.StatusNotFound,
		},
		{
			name:       "trailing slash",
			edit:       func(req *http.Request) { req.URL.Path = "/v1/batch/" },
			wantStatus: http.StatusNotFound,
		},
		{
			name:       "no credentials",
			edit:       func(req *http.Request) { req.Header.Del("Authorization") },
			wantStatus: http.StatusUnauthorized,
			wantHeader: map[string]string{"WWW-Authenticate": `Basic realm="recorder"`},
		},
		{
			name:       "wrong write key",
			edit:       func(req *http.Request) { req.SetBasicAuth("other-key", "") },
			wantStatus: http.StatusUnauthorized,
		},
		{
			name:       "non-empty password",
			edit:       func(req *http.Request) { req.SetBasicAuth(testWriteKey, "secret") },
			wantStatus: http.StatusUnauthorized,
		},
		{
			name:       "bearer token",
			edit:       func(req *http.Request) { req.Header.Set("Authorization", "Bearer "+testWriteKey) },
			wantStatus: http.StatusUnauthorized,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := startRecorder(t)
			got := post(t, rec, batchBody(t, trackEvent("anon-1", "msg-1")), tt.edit)

			if got.status != tt.wantStatus {
				t.Fatalf("status = %d, expected %d; body %s", got.status, tt.wantStatus, got.body)
			}
			for name, want := range tt.wantHeader {
				if value := got.header.Get(name); value != want {
					t.Errorf("header %s = %q, expected %q", name, value, want)
				}
			}

			wantEvents := 0
			if tt.wantStatus == http.StatusOK {
				wantEvents = 1
			}
			if events := rec.Events(); len(events) != wantEvents {
				t.Errorf("recorded %d events, expected %d", len(events), wantEvents)
			}
			if tt.wantStatus != http.StatusOK {
				if count := rec.Stats().Rejected[tt.wantStatus]; count != 1 {
					t.Errorf("Stats.Rejected[%d] = %d, expected 1", tt.wantStatus, count)
				}
			}
		})
	}
}

func TestErrorBodyIsJSON(t *testing.T) {
	rec := startRecorder(t)
	got := post(t, rec, []byte(`{"batch":`), nil)

	if got.status != http.StatusBadRequest {
		t.Fatalf("status = %d, expected 400", got.status)
	}
	if contentType := got.header.Get("Content-Type"); contentType != "application/json" {
		t.Errorf("Content-Type = %q, expected application/json", contentType)
	}
	var decoded struct {
		Success *bool  `json:"success"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal([]byte(got.body), &decoded); err != nil {
		t.Fatalf("error body %q is not JSON: %v", got.body, err)
	}
	if decoded.Success == nil || *decoded.Success {
		t.Errorf(`error body %s has no "success":false`, got.body)
	}
	if decoded.Error == "" {
		t.Errorf(`error body %s has no "error" message`, got.body)
	}
}

func TestHeaderRules(t *testing.T) {
	valid := func(t *testing.T) []byte { return batchBody(t, trackEvent("anon-1", "msg-1")) }

	tests := []struct {
		name       string
		body       func(t *testing.T) []byte
		edit       func(*http.Request)
		wantStatus int
	}{
		{
			name:       "JSON with charset",
			body:       valid,
			edit:       func(req *http.Request) { req.Header.Set("Content-Type", "application/json; charset=utf-8") },
			wantStatus: http.StatusOK,
		},
		{
			name:       "text/plain",
			body:       valid,
			edit:       func(req *http.Request) { req.Header.Set("Content-Type", "text/plain") },
			wantStatus: http.StatusUnsupportedMediaType,
		},
		{
			name:       "no Content-Type",
			body:       valid,
			edit:       func(req *http.Request) { req.Header.Del("Content-Type") },
			wantStatus: http.StatusUnsupportedMediaType,
		},
		{
			name:       "identity encoding",
			body:       valid,
			edit:       func(req *http.Request) { req.Header.Set("Content-Encoding", "identity") },
			wantStatus: http.StatusOK,
		},
		{
			name:       "brotli encoding",
			body:       valid,
			edit:       func(req *http.Request) { req.Header.Set("Content-Encoding", "br") },
			wantStatus: http.StatusUnsupportedMediaType,
		},
		{
			name:       "x-gzip encoding",
			body:       func(t *testing.T) []byte { return gzipBytes(t, valid(t)) },
			edit:       func(req *http.Request) { req.Header.Set("Content-Encoding", "x-gzip") },
			wantStatus: http.StatusOK,
		},
		{
			name:       "gzip header on plain body",
			body:       valid,
			edit:       func(req *http.Request) { req.Header.Set("Content-Encoding", "gzip") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "truncated gzip body",
			body: func(t *testing.T) []byte {
				compressed := gzipBytes(t, valid(t))
				return compressed[:len(compressed)-6]
			},
			edit:       func(req *http.Request) { req.Header.Set("Content-Encoding", "gzip") },
			wantStatus: http.StatusBadRequest,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := startRecorder(t)
			got := post(t, rec, tt.body(t), tt.edit)

			if got.status != tt.wantStatus {
				t.Fatalf("status = %d, expected %d; body %s", got.status, tt.wantStatus, got.body)
			}
			if tt.wantStatus != http.StatusOK && len(rec.Events()) != 0 {
				t.Errorf("a rejected request stored %d events", len(rec.Events()))
			}
		})
	}
}

func TestBodySizeLimit(t *testing.T) {
	small := func(t *testing.T) []byte { return batchBody(t, trackEvent("anon-1", "msg-1")) }
	gzipHeader := func(req *http.Request) { req.Header.Set("Content-Encoding", "gzip") }

	tests := []struct {
		name       string
		body       func(t *testing.T) []byte
		edit       func(*http.Request)
		wantStatus int
	}{
		{
			name:       "plain at limit",
			body:       func(t *testing.T) []byte { return padJSON(t, small(t), recorder.MaxBodyBytes) },
			wantStatus: http.StatusOK,
		},
		{
			name:       "plain one byte over",
			body:       func(t *testing.T) []byte { return padJSON(t, small(t), recorder.MaxBodyBytes+1) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "plain far over",
			body:       func(t *testing.T) []byte { return padJSON(t, small(t), 3*recorder.MaxBodyBytes) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "gzip decoding to limit",
			body: func(t *testing.T) []byte {
				return gzipBytes(t, padJSON(t, small(t), recorder.MaxBodyBytes))
			},
			edit:       gzipHeader,
			wantStatus: http.StatusOK,
		},
		{
			name: "gzip decoding one byte over",
			body: func(t *testing.T) []byte {
				return gzipBytes(t, padJSON(t, small(t), recorder.MaxBodyBytes+1))
			},
			edit:       gzipHeader,
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "gzip decoding far over",
			body: func(t *testing.T) []byte {
				return gzipBytes(t, padJSON(t, small(t), 4*recorder.MaxBodyBytes))
			},
			edit:       gzipHeader,
			wantStatus: http.StatusBadRequest,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := startRecorder(t)
			got := post(t, rec, tt.body(t), tt.edit)

			if got.status != tt.wantStatus {
				t.Fatalf("status = %d, expected %d; body %s", got.status, tt.wantStatus, got.body)
			}
			wantEvents := 0
			if tt.wantStatus == http.StatusOK {
				wantEvents = 1
			}
			if events := rec.Events(); len(events) != wantEvents {
				t.Errorf("recorded %d events, expected %d", len(events), wantEvents)
			}
		})
	}
}

func TestBatchShape(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
	}{
		{name: "empty batch", body: `{"batch":[]}`, wantStatus: http.StatusOK},
		{name: "extra top-level fields", body: `{"batch":[],"context":{"library":{"name":"x"}},"sentAt":"2026-01-01T00:00:00Z"}`, wantStatus: http.StatusOK},
		{name: "empty body", body: ``, wantStatus: http.StatusBadRequest},
		{name: "truncated JSON", body: `{"batch":`, wantStatus: http.StatusBadRequest},
		{name: "top-level array", body: `[{"type":"track"}]`, wantStatus: http.StatusBadRequest},
		{name: "top-level null", body: `null`, wantStatus: http.StatusBadRequest},
		{name: "no batch field", body: `{"events":[]}`, wantStatus: http.StatusBadRequest},
		{name: "batch null", body: `{"batch":null}`, wantStatus: http.StatusBadRequest},
		{name: "batch object", body: `{"batch":{}}`, wantStatus: http.StatusBadRequest},
		{name: "batch string", body: `{"batch":"[]"}`, wantStatus: http.StatusBadRequest},
		{name: "item number", body: `{"batch":[1]}`, wantStatus: http.StatusBadRequest},
		{name: "item null", body: `{"batch":[null]}`, wantStatus: http.StatusBadRequest},
		{name: "item array", body: `{"batch":[[]]}`, wantStatus: http.StatusBadRequest},
		{name: "trailing data", body: `{"batch":[]} {}`, wantStatus: http.StatusBadRequest},
		{name: "repeated batch takes the last", body: `{"batch":[1],"batch":[]}`, wantStatus: http.StatusOK},
		{name: "repeated batch with a bad last", body: `{"batch":[],"batch":[1]}`, wantStatus: http.StatusBadRequest},
		{name: "invalid JSON after batch", body: `{"batch":[],}`, wantStatus: http.StatusBadRequest},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := startRecorder(t)
			got := post(t, rec, []byte(tt.body), nil)

			if got.status != tt.wantStatus {
				t.Fatalf("status = %d for body %s, expected %d; response %s", got.status, tt.body, tt.wantStatus, got.body)
			}
		})
	}
}

func TestBatchEventCountLimit(t *testing.T) {
	tests := []struct {
		name       string
		count      int
		wantStatus int
	}{
		{name: "at limit", count: recorder.MaxBatchEvents, wantStatus: http.StatusOK},
		{name: "one over", count: recorder.MaxBatchEvents + 1, wantStatus: http.StatusBadRequest},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := startRecorder(t)
			events := make([]map[string]any, tt.count)
			for i := range events {
				events[i] = map[string]any{"type": "track", "event": "e", "anonymousId": fmt.Sprint(i)}
			}

			got := post(t, rec, batchBody(t, events...), nil)

			if got.status != tt.wantStatus {
				t.Fatalf("status = %d for %d events, expected %d; body %s", got.status, tt.count, tt.wantStatus, got.body)
			}
			wantEvents := 0
			if tt.wantStatus == http.StatusOK {
				wantEvents = tt.count
			}
			if stored := len(rec.Events()); stored != wantEvents {
				t.Errorf("recorded %d events, expected %d", stored, wantEvents)
			}
		})
	}
}

func TestEventRules(t *testing.T) {
	withField := func(key string, value any) map[string]any {
		event := trackEvent("anon-1", "")
		event[key] = value
		return event
	}
	withoutField := func(event map[string]any, key string) map[string]any {
		delete(event, key)
		return event
	}

	tests := []struct {
		name       string
		event      func(t *testing.T) map[string]any
		wantStatus int
	}{
		{
			name:       "track with anonymousId",
			event:      func(*testing.T) map[string]any { return trackEvent("anon-1", "msg-1") },
			wantStatus: http.StatusOK,
		},
		{
			name: "track with userId only",
			event: func(*testing.T) map[string]any {
				return withoutField(withField("userId", "user-1"), "anonymousId")
			},
			wantStatus: http.StatusOK,
		},
		{
			name:       "no type",
			event:      func(*testing.T) map[string]any { return withoutField(trackEvent("anon-1", ""), "type") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "unknown type",
			event:      func(*testing.T) map[string]any { return withField("type", "pageview") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "type not a string",
			event:      func(*testing.T) map[string]any { return withField("type", 1) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "no ids",
			event:      func(*testing.T) map[string]any { return withoutField(trackEvent("anon-1", ""), "anonymousId") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "empty anonymousId",
			event:      func(*testing.T) map[string]any { return trackEvent("", "") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "anonymousId not a string",
			event:      func(*testing.T) map[string]any { return withField("anonymousId", 42) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "track without event",
			event:      func(*testing.T) map[string]any { return withoutField(trackEvent("anon-1", ""), "event") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "track with empty event",
			event:      func(*testing.T) map[string]any { return withField("event", "") },
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "page without name",
			event: func(*testing.T) map[string]any {
				return map[string]any{"type": "page", "anonymousId": "anon-1"}
			},
			wantStatus: http.StatusOK,
		},
		{
			name: "identify",
			event: func(*testing.T) map[string]any {
				return map[string]any{"type": "identify", "userId": "user-1", "traits": map[string]any{}}
			},
			wantStatus: http.StatusOK,
		},
		{
			name: "group without groupId",
			event: func(*testing.T) map[string]any {
				return map[string]any{"type": "group", "userId": "user-1"}
			},
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "alias without previousId",
			event: func(*testing.T) map[string]any {
				return map[string]any{"type": "alias", "userId": "user-1"}
			},
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "messageId of 99 characters",
			event:      func(*testing.T) map[string]any { return trackEvent("anon-1", strings.Repeat("m", 99)) },
			wantStatus: http.StatusOK,
		},
		{
			name:       "messageId of 100 characters",
			event:      func(*testing.T) map[string]any { return trackEvent("anon-1", strings.Repeat("m", 100)) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "messageId of 99 two-byte characters",
			event:      func(*testing.T) map[string]any { return trackEvent("anon-1", strings.Repeat("é", 99)) },
			wantStatus: http.StatusOK,
		},
		{
			name:       "messageId not a string",
			event:      func(*testing.T) map[string]any { return withField("messageId", 7) },
			wantStatus: http.StatusBadRequest,
		},
		{
			name:       "event at size limit",
			event:      func(t *testing.T) map[string]any { return eventOfSize(t, recorder.MaxEventBytes) },
			wantStatus: http.StatusOK,
		},
		{
			name:       "event one byte over size limit",
			event:      func(t *testing.T) map[string]any { return eventOfSize(t, recorder.MaxEventBytes+1) },
			wantStatus: http.StatusBadRequest,
		},
	}

	// A recorder that keeps only counts applies the same rules.
	for _, countOnly := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/count_only=%v", tt.name, countOnly), func(t *testing.T) {
				rec := startRecorderWith(t, recorder.Options{WriteKey: testWriteKey, CountOnly: countOnly})
				got := post(t, rec, batchBody(t, tt.event(t)), nil)

				if got.status != tt.wantStatus {
					t.Fatalf("status = %d, expected %d; body %s", got.status, tt.wantStatus, got.body)
				}
			})
		}
	}
}

func TestRejectedBatchStoresNothing(t *testing.T) {
	rec := startRecorder(t)
	invalid := trackEvent("anon-2", "msg-2")
	delete(invalid, "event")

	got := post(t, rec, batchBody(t, trackEvent("anon-1", "msg-1"), invalid), nil)

	if got.status != http.StatusBadRequest {
		t.Fatalf("status = %d, expected 400; body %s", got.status, got.body)
	}
	if !strings.Contains(got.body, "batch event 1") {
		t.Errorf("error body %s does not name batch event 1", got.body)
	}
	if events := rec.Events(); len(events) != 0 {
		t.Errorf("recorded %d events from a rejected batch, expected 0", len(events))
	}

	stats := rec.Stats()
	if stats.Events != 0 {
		t.Errorf("Stats.Events = %d, expected 0", stats.Events)
	}
	if stats.Batches != 0 {
		t.Errorf("Stats.Batches = %d, expected 0", stats.Batches)
	}
	if stats.Rejected[http.StatusBadRequest] != 1 {
		t.Errorf("Stats.Rejected[400] = %d, expected 1", stats.Rejected[http.StatusBadRequest])
	}

	// The valid event's messageId must not count as seen.
	post(t, rec, batchBody(t, trackEvent("anon-1", "msg-1")), nil)
	if duplicates := rec.Stats().DuplicateMessageIDs; duplicates != 0 {
		t.Errorf("Stats.DuplicateMessageIDs = %d after a rejected batch, expected 0", duplicates)
	}
}

func withMessageID(event map[string]any, messageID string) map[string]any {
	event["messageId"] = messageID
	return event
}

func TestDuplicateMessageIDs(t *testing.T) {
	for _, countOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("count_only=%v", countOnly), func(t *testing.T) {
			testDuplicateMessageIDs(t, recorder.Options{WriteKey: testWriteKey, CountOnly: countOnly})
		})
	}
}

func testDuplicateMessageIDs(t *testing.T, opts recorder.Options) {
	rec := startRecorderWith(t, opts)

	post(t, rec, batchBody(t, trackEvent("a", "id-a"), trackEvent("b", "id-b")), nil)
	post(t, rec, batchBody(t,
		trackEvent("a", "id-a"), // seen in the first batch
		trackEvent("n", ""),     // no messageId
		trackEvent("n", ""),     // no messageId
		withMessageID(trackEvent("e", ""), ""),
		withMessageID(trackEvent("e", ""), ""),
		trackEvent("c", "id-c"),
		trackEvent("c", "id-c"), // seen earlier in this batch
	), nil)

	stats := rec.Stats()
	if stats.DuplicateMessageIDs != 2 {
		t.Errorf("Stats.DuplicateMessageIDs = %d, expected 2", stats.DuplicateMessageIDs)
	}
	if stats.Events != 9 {
		t.Errorf("Stats.Events = %d, expected 9 (duplicates are still accepted)", stats.Events)
	}
	if stats.MaxEventsPerBatch != 7 {
		t.Errorf("Stats.MaxEventsPerBatch = %d, expected 7", stats.MaxEventsPerBatch)
	}
	wantKept := 9
	if opts.CountOnly {
		wantKept = 0
	}
	if got := len(rec.Events()); got != wantKept {
		t.Errorf("Events returned %d events, expected %d", got, wantKept)
	}
}

func TestStatsCounts(t *testing.T) {
	rec := startRecorder(t)

	if mean := rec.Stats().MeanEventsPerBatch(); mean != 0 {
		t.Errorf("MeanEventsPerBatch() = %v before any batch, expected 0", mean)
	}

	post(t, rec, batchBody(t, trackEvent("a", "1")), nil)
	post(t, rec, batchBody(t, trackEvent("b", "2"), trackEvent("c", "3"), trackEvent("d", "4")), nil)
	post(t, rec, []byte(`not json`), nil)
	post(t, rec, batchBody(t), func(req *http.Request) { req.SetBasicAuth("wrong", "") })

	stats := rec.Stats()
	if stats.Requests != 4 {
		t.Errorf("Stats.Requests = %d, expected 4", stats.Requests)
	}
	if stats.Batches != 2 {
		t.Errorf("Stats.Batches = %d, expected 2", stats.Batches)
	}
	if stats.Events != 4 {
		t.Errorf("Stats.Events = %d, expected 4", stats.Events)
	}
	if stats.MaxEventsPerBatch != 3 {
		t.Errorf("Stats.MaxEventsPerBatch = %d, expected 3", stats.MaxEventsPerBatch)
	}
	if mean := stats.MeanEventsPerBatch(); mean != 2 {
		t.Errorf("MeanEventsPerBatch() = %v, expected 2", mean)
	}
	if stats.Rejected[http.StatusBadRequest] != 1 {
		t.Errorf("Stats.Rejected[400] = %d, expected 1", stats.Rejected[http.StatusBadRequest])
	}
	if stats.Rejected[http.StatusUnauthorized] != 1 {
		t.Errorf("Stats.Rejected[401] = %d, expected 1", stats.Rejected[http.StatusUnauthorized])
	}
}

func TestStatsReturnsCopy(t *testing.T) {
	rec := startRecorder(t)
	post(t, rec, []byte(`not json`), nil)

	stats := rec.Stats()
	stats.Rejected[http.StatusBadRequest] = 100

	if count := rec.Stats().Rejected[http.StatusBadRequest]; count != 1 {
		t.Errorf("Stats.Rejected[400] = %d after changing a returned copy, expected 1", count)
	}
}

func TestModeFailFirst(t *testing.T) {
	rec := startRecorder(t)
	rec.SetMode(recorder.Mode{FailFirst: 2, FailStatus: http.StatusTooManyRequests, RetryAfter: "3"})

	for attempt := 1; attempt <= 2; attempt++ {
		got := post(t, rec, batchBody(t, trackEvent("a", fmt.Sprint(attempt))), nil)
		if got.status != http.StatusTooManyRequests {
			t.Errorf("attempt %d: status = %d, expected 429", attempt, got.status)
		}
		if retryAfter := got.header.Get("Retry-After"); retryAfter != "3" {
			t.Errorf("attempt %d: Retry-After = %q, expected 3", attempt, retryAfter)
		}
	}

	got := post(t, rec, batchBody(t, trackEvent("a", "3")), nil)
	if got.status != http.StatusOK {
		t.Errorf("attempt 3: status = %d, expected 200 once FailFirst is used up", got.status)
	}
	if retryAfter := got.header.Get("Retry-After"); retryAfter != "" {
		t.Errorf("attempt 3: Retry-After = %q on a 200 response, expected none", retryAfter)
	}

	events := rec.Events()
	if len(events) != 1 || events[0].String("messageId") != "3" {
		t.Errorf("recorded %v, expected only the event of attempt 3", events)
	}
	stats := rec.Stats()
	if stats.Rejected[http.StatusTooManyRequests] != 2 {
		t.Errorf("Stats.Rejected[429] = %d, expected 2", stats.Rejected[http.StatusTooManyRequests])
	}
	if stats.Requests != 3 {
		t.Errorf("Stats.Requests = %d, expected 3", stats.Requests)
	}
}

func TestModeFailFirstRestartsOnSetMode(t *testing.T) {
	rec := startRecorder(t)
	body := batchBody(t, trackEvent("a", ""))
	mode := recorder.Mode{FailFirst: 1}

	rec.SetMode(mode)
	if got := post(t, rec, body, nil); got.status != http.StatusInternalServerError {
		t.Errorf("first request: status = %d, expected 500 (FailStatus 0 means 500)", got.status)
	}
	if got := post(t, rec, body, nil); got.status != http.StatusOK {
		t.Errorf("second request: status = %d, expected 200", got.status)
	}

	rec.SetMode(mode)
	if got := post(t, rec, body, nil); got.status != http.StatusInternalServerError {
		t.Errorf("first request after SetMode again: status = %d, expected 500", got.status)
	}
}

func TestModeFailAlways(t *testing.T) {
	rec := startRecorder(t)
	body := batchBody(t, trackEvent("a", ""))
	rec.SetMode(recorder.Mode{FailAlways: true, FailStatus: http.StatusServiceUnavailable})

	for attempt := 1; attempt <= 5; attempt++ {
		got := post(t, rec, body, nil)
		if got.status != http.StatusServiceUnavailable {
			t.Errorf("attempt %d: status = %d, expected 503", attempt, got.status)
		}
		if retryAfter := got.header.Get("Retry-After"); retryAfter != "" {
			t.Errorf("attempt %d: Retry-After = %q, expected none when RetryAfter is empty", attempt, retryAfter)
		}
	}
	if events := rec.Events(); len(events) != 0 {
		t.Errorf("recorded %d events during FailAlways, expected 0", len(events))
	}

	rec.SetMode(recorder.Mode{})
	if got := post(t, rec, body, nil); got.status != http.StatusOK {
		t.Errorf("status = %d after SetMode(Mode{}), expected 200", got.status)
	}
}

func TestModeAppliesBeforeValidation(t *testing.T) {
	tests := []struct {
		name string
		edit func(*http.Request)
	}{
		{name: "unknown path", edit: func(req *http.Request) { req.URL.Path = "/elsewhere" }},
		{name: "wrong write key", edit: func(req *http.Request) { req.SetBasicAuth("wrong", "") }},
		{name: "GET method", edit: func(req *http.Request) { req.Method = http.MethodGet }},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := startRecorder(t)
			rec.SetMode(recorder.Mode{FailAlways: true, FailStatus: http.StatusBadGateway})

			got := post(t, rec, []byte(`not json`), tt.edit)

			if got.status != http.StatusBadGateway {
				t.Errorf("status = %d, expected the Mode's 502 to win over validation", got.status)
			}
		})
	}
}

func TestSetModeRejectsNonErrorStatus(t *testing.T) {
	for _, status := range []int{200, 302, 399, 600} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			rec := startRecorder(t)
			defer func() {
				if recover() == nil {
					t.Errorf("SetMode with FailStatus %d did not panic", status)
				}
			}()
			rec.SetMode(recorder.Mode{FailFirst: 1, FailStatus: status})
		})
	}
}

func TestModeDelay(t *testing.T) {
	rec := startRecorder(t)
	const delay = 100 * time.Millisecond
	rec.SetMode(recorder.Mode{Delay: delay})

	start := time.Now()
	got := post(t, rec, batchBody(t, trackEvent("a", "")), nil)
	elapsed := time.Since(start)

	if got.status != http.StatusOK {
		t.Errorf("status = %d, expected 200 after the delay", got.status)
	}
	if elapsed < delay {
		t.Errorf("response came after %s, expected at least the Delay of %s", elapsed, delay)
	}
	if events := rec.Events(); len(events) != 1 {
		t.Errorf("recorded %d events, expected 1", len(events))
	}
}

func TestModeDelayWithFailure(t *testing.T) {
	rec := startRecorder(t)
	const delay = 50 * time.Millisecond
	rec.SetMode(recorder.Mode{Delay: delay, FailFirst: 1, FailStatus: http.StatusGatewayTimeout})

	start := time.Now()
	got := post(t, rec, batchBody(t, trackEvent("a", "")), nil)
	elapsed := time.Since(start)

	if got.status != http.StatusGatewayTimeout {
		t.Errorf("status = %d, expected 504", got.status)
	}
	if elapsed < delay {
		t.Errorf("failure came after %s, expected at least the Delay of %s", elapsed, delay)
	}
}

// startStuckRequest posts a batch on a cancellable request, waits until the
// recorder has received it, and returns a channel that gets the client's
// result.
func startStuckRequest(t *testing.T, rec *recorder.Recorder) (<-chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	before := rec.Stats().Requests
	req := newBatchRequest(t, rec, batchBody(t, trackEvent("a", ""))).WithContext(ctx)
	result := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			result <- err
			return
		}
		resp.Body.Close()
		result <- fmt.Errorf("unexpected response with status %d", resp.StatusCode)
	}()

	waitUntil(t, "the recorder received the request", func() bool {
		return rec.Stats().Requests > before
	})
	return result, cancel
}

// expectNoResponse fails the test if the stuck request got an HTTP response, or
// if it has not ended within waitBound.
func expectNoResponse(t *testing.T, result <-chan error) {
	t.Helper()
	select {
	case err := <-result:
		if strings.HasPrefix(err.Error(), "unexpected response") {
			t.Errorf("stuck request: %v, expected no response", err)
		}
	case <-time.After(waitBound):
		t.Fatalf("stuck request did not end within %s", waitBound)
	}
}

func TestCloseEndsHangingRequest(t *testing.T) {
	rec := startRecorder(t)
	rec.SetMode(recorder.Mode{Hang: true})
	result, cancel := startStuckRequest(t, rec)

	closeWithinBound(t, rec)
	cancel()

	expectNoResponse(t, result)
	if events := rec.Events(); len(events) != 0 {
		t.Errorf("recorded %d events from a hanging request, expected 0", len(events))
	}
}

func TestCloseEndsDelayedRequest(t *testing.T) {
	rec := startRecorder(t)
	rec.SetMode(recorder.Mode{Delay: time.Hour})
	result, cancel := startStuckRequest(t, rec)

	closeWithinBound(t, rec)
	cancel()

	expectNoResponse(t, result)
	if events := rec.Events(); len(events) != 0 {
		t.Errorf("recorded %d events from a request cut short by Close, expected 0", len(events))
	}
}

func TestHangingRequestEndsOnClientCancel(t *testing.T) {
	rec := startRecorder(t)
	rec.SetMode(recorder.Mode{Hang: true})
	result, cancel := startStuckRequest(t, rec)

	cancel()
	expectNoResponse(t, result)

	// The recorder still serves other requests once the mode changes.
	rec.SetMode(recorder.Mode{})
	if got := post(t, rec, batchBody(t, trackEvent("a", "")), nil); got.status != http.StatusOK {
		t.Errorf("status = %d after a cancelled hanging request, expected 200", got.status)
	}
	closeWithinBound(t, rec)
}

func TestCloseIsIdempotent(t *testing.T) {
	rec := startRecorder(t)
	url := rec.URL()

	closeWithinBound(t, rec)
	closeWithinBound(t, rec)

	resp, err := client.Post(url+"/v1/batch", "application/json", strings.NewReader(`{"batch":[]}`))
	if err == nil {
		resp.Body.Close()
		t.Errorf("request after Close got status %d, expected a connection error", resp.StatusCode)
	}
}

func TestWaitEventsReturnsOnceEnoughArrived(t *testing.T) {
	rec := startRecorder(t)

	var posting sync.WaitGroup
	posting.Add(1)
	go func() {
		defer posting.Done()
		for i := range 3 {
			req, err := http.NewRequest(http.MethodPost, rec.URL()+"/v1/batch",
				bytes.NewReader(batchBody(t, trackEvent("a", fmt.Sprint(i)))))
			if err != nil {
				t.Errorf("building request failed: %v", err)
				return
			}
			req.SetBasicAuth(testWriteKey, "")
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("post %d failed: %v", i, err)
				return
			}
			resp.Body.Close()
		}
	}()

	events, err := rec.WaitEvents(3, waitBound)
	posting.Wait()

	if err != nil {
		t.Fatalf("WaitEvents(3) failed: %v", err)
	}
	if len(events) < 3 {
		t.Errorf("WaitEvents(3) returned %d events, expected at least 3", len(events))
	}
}

func TestWaitEventsTimesOut(t *testing.T) {
	rec := startRecorder(t)
	post(t, rec, batchBody(t, trackEvent("a", "")), nil)

	events, err := rec.WaitEvents(5, 50*time.Millisecond)

	if err == nil {
		t.Fatal("WaitEvents(5) with 1 event returned no error")
	}
	if !strings.Contains(err.Error(), "1 arrived") {
		t.Errorf("error %q does not say that 1 event arrived", err)
	}
	if len(events) != 1 {
		t.Errorf("WaitEvents returned %d events on timeout, expected the 1 that arrived", len(events))
	}
}

func TestWaitEventsEndsOnClose(t *testing.T) {
	rec := startRecorder(t)
	result := make(chan error, 1)
	go func() {
		_, err := rec.WaitEvents(1, time.Hour)
		result <- err
	}()

	closeWithinBound(t, rec)

	select {
	case err := <-result:
		if err == nil || !strings.Contains(err.Error(), "closed") {
			t.Errorf("WaitEvents error = %v, expected one saying the recorder closed", err)
		}
	case <-time.After(waitBound):
		t.Fatalf("WaitEvents did not return within %s of Close", waitBound)
	}
}

func TestResetKeepsMode(t *testing.T) {
	rec := startRecorder(t)
	body := batchBody(t, trackEvent("a", "id-a"))
	post(t, rec, body, nil)
	rec.SetMode(recorder.Mode{FailAlways: true, FailStatus: http.StatusServiceUnavailable})
	post(t, rec, body, nil)

	rec.Reset()

	if events := rec.Events(); len(events) != 0 {
		t.Errorf("Events() returned %d events after Reset, expected 0", len(events))
	}
	stats := rec.Stats()
	if stats.Requests != 0 || stats.Batches != 0 || stats.Events != 0 || stats.MaxEventsPerBatch != 0 {
		t.Errorf("Stats() = %+v after Reset, expected zero counters", stats)
	}
	if len(stats.Rejected) != 0 {
		t.Errorf("Stats.Rejected = %v after Reset, expected empty", stats.Rejected)
	}

	if got := post(t, rec, body, nil); got.status != http.StatusServiceUnavailable {
		t.Errorf("status = %d after Reset, expected the kept Mode's 503", got.status)
	}

	rec.SetMode(recorder.Mode{})
	post(t, rec, body, nil)
	if duplicates := rec.Stats().DuplicateMessageIDs; duplicates != 0 {
		t.Errorf("Stats.DuplicateMessageIDs = %d, expected 0 because Reset forgets messageIds", duplicates)
	}
}

func TestEventsReturnsDeepCopy(t *testing.T) {
	rec := startRecorder(t)
	post(t, rec, batchBody(t, trackEvent("a", "")), nil)

	first := rec.Events()
	first[0]["anonymousId"] = "changed"
	first[0]["context"].(map[string]any)["page"].(map[string]any)["url"] = "changed"

	second := rec.Events()
	if id := second[0].String("anonymousId"); id != "a" {
		t.Errorf("anonymousId = %q after changing a returned copy, expected a", id)
	}
	if url := second[0].String("context.page.url"); url != "http://localhost/guide" {
		t.Errorf("context.page.url = %q after changing a returned copy, expected the original", url)
	}
}

func TestEventLookup(t *testing.T) {
	var event recorder.Event
	raw := `{"type":"track","anonymousId":"anon","context":{"page":{"url":"http://x/","search":""},"ip":null},
		"properties":{"count":3,"flag":true,"list":["a"]}}`
	if err := json.Unmarshal([]byte(raw), &event); err != nil {
		t.Fatalf("decoding test event failed: %v", err)
	}

	tests := []struct {
		path       string
		wantString string
		wantFound  bool
		wantValue  any
	}{
		{path: "anonymousId", wantString: "anon", wantFound: true, wantValue: "anon"},
		{path: "context.page.url", wantString: "http://x/", wantFound: true, wantValue: "http://x/"},
		{path: "context.page.search", wantString: "", wantFound: true, wantValue: ""},
		{path: "context.ip", wantString: "", wantFound: true, wantValue: nil},
		{path: "properties.count", wantString: "", wantFound: true, wantValue: float64(3)},
		{path: "properties.flag", wantString: "", wantFound: true, wantValue: true},
		{path: "properties.list.0", wantString: "", wantFound: false},
		{path: "context.page.title", wantString: "", wantFound: false},
		{path: "anonymousId.inner", wantString: "", wantFound: false},
		{path: "missing", wantString: "", wantFound: false},
		{path: "", wantString: "", wantFound: false},
	}

	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := event.String(tt.path); got != tt.wantString {
				t.Errorf("String(%q) = %q, expected %q", tt.path, got, tt.wantString)
			}
			value, found := event.Lookup(tt.path)
			if found != tt.wantFound {
				t.Errorf("Lookup(%q) found = %v, expected %v", tt.path, found, tt.wantFound)
			}
			if found && tt.wantFound && value != tt.wantValue {
				t.Errorf("Lookup(%q) = %#v, expected %#v", tt.path, value, tt.wantValue)
			}
		})
	}
}

func TestConcurrentBatches(t *testing.T) {
	rec := startRecorder(t)
	const (
		senders          = 8
		batchesPerSender = 25
		eventsPerBatch   = 4
		wantEvents       = senders * batchesPerSender * eventsPerBatch
		wantBatches      = senders * batchesPerSender
	)

	var sending sync.WaitGroup
	for sender := range senders {
		sending.Add(1)
		go func() {
			defer sending.Done()
			for batch := range batchesPerSender {
				events := make([]map[string]any, eventsPerBatch)
				for i := range events {
					events[i] = trackEvent("anon", fmt.Sprintf("%d-%d-%d", sender, batch, i))
				}
				body, err := json.Marshal(map[string]any{"batch": events})
				if err != nil {
					t.Errorf("encoding batch failed: %v", err)
					return
				}
				req, err := http.NewRequest(http.MethodPost, rec.URL()+"/v1/batch", bytes.NewReader(body))
				if err != nil {
					t.Errorf("building request failed: %v", err)
					return
				}
				req.SetBasicAuth(testWriteKey, "")
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("sender %d batch %d failed: %v", sender, batch, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("sender %d batch %d: status %d, expected 200", sender, batch, resp.StatusCode)
				}
			}
		}()
	}

	// Readers run beside the senders so that the race detector checks both.
	stopReading := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stopReading:
				return
			default:
				_ = rec.Stats()
				_ = rec.Events()
			}
		}
	}()

	events, err := rec.WaitEvents(wantEvents, waitBound)
	sending.Wait()
	close(stopReading)
	readers.Wait()

	if err != nil {
		t.Fatalf("WaitEvents(%d) failed: %v", wantEvents, err)
	}
	if len(events) != wantEvents {
		t.Errorf("recorded %d events, expected %d", len(events), wantEvents)
	}
	stats := rec.Stats()
	if stats.Batches != wantBatches {
		t.Errorf("Stats.Batches = %d, expected %d", stats.Batches, wantBatches)
	}
	if stats.DuplicateMessageIDs != 0 {
		t.Errorf("Stats.DuplicateMessageIDs = %d, expected 0", stats.DuplicateMessageIDs)
	}
	if stats.MaxEventsPerBatch != eventsPerBatch {
		t.Errorf("Stats.MaxEventsPerBatch = %d, expected %d", stats.MaxEventsPerBatch, eventsPerBatch)
	}
	if mean := stats.MeanEventsPerBatch(); mean != eventsPerBatch {
		t.Errorf("MeanEventsPerBatch() = %v, expected %d", mean, eventsPerBatch)
	}
}
