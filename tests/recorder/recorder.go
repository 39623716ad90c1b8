// Package recorder runs a loopback HTTP server that accepts event batches the
// way Segment's HTTP Tracking API batch endpoint (POST /v1/batch) does, and
// records the events it accepts. Integration tests, the end-to-end browser
// test and the benchmark harness point a Segment client at its URL.
//
// The recorder checks the limits and required fields that Segment documents
// (see validate.go) and can simulate outages, rate limits and slow or hung
// responses through [Mode].
package recorder

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Options configures a Recorder.
type Options struct {
	// WriteKey is the only HTTP Basic auth user name that is accepted, with an
	// empty password, as Segment does with a source's write key. Required.
	WriteKey string

	// CountOnly keeps no events, only their counts and messageIds, which
	// is all long load tests need. Every event is still checked against
	// the same rules, but not decoded in full, which takes more than two
	// thirds of the recorder's time. Events and WaitEvents then return no
	// events.
	CountOnly bool
}

// Mode simulates failures of the endpoint. The zero Mode accepts every valid
// request at once.
//
// A Mode applies to every request before routing, authentication and
// validation, the way an outage hits every request. So during a failure even
// an invalid request gets FailStatus, and a request that the Mode lets through
// is validated as usual.
type Mode struct {
	// FailFirst is the number of requests, counted from the SetMode call, that
	// fail with FailStatus. Later requests are handled normally.
	FailFirst int

	// FailStatus is the HTTP status of a failure response, from 400 to 599.
	// Zero means 500.
	FailStatus int

	// RetryAfter, if not empty, is sent as the Retry-After header of failure
	// responses, for example "2" (seconds).
	RetryAfter string

	// FailAlways makes every request fail with FailStatus.
	FailAlways bool

	// Delay is how long the recorder waits before it responds. Close ends the
	// wait, and the request then gets no response.
	Delay time.Duration

	// Hang makes the recorder read requests and never respond. Close ends such
	// requests, and so does the client cancelling its request.
	Hang bool
}

// Recorder is a running batch endpoint. Its methods are safe for concurrent
// use.
type Recorder struct {
	writeKey  string
	countOnly bool
	url       string
	server    *http.Server

	closeOnce sync.Once
	closed    chan struct{}  // closed when Close starts
	serveDone chan struct{}  // closed when the server's Serve loop returns
	handlers  sync.WaitGroup // running request handlers

	mu           sync.Mutex
	closing      bool // set under mu before Close waits for handlers
	mode         Mode
	modeRequests int // requests that reached the Mode check since the last SetMode
	events       []Event
	messageIDs   map[string]struct{}
	stats        Stats
	// eventsAdded is closed and replaced each time events are accepted, which
	// wakes up WaitEvents.
	eventsAdded chan struct{}
}

// Stats counts what the recorder received since Start or the last Reset.
type Stats struct {
	// Requests counts all HTTP requests received, whatever their response.
	Requests int
	// Batches counts the batch requests that were accepted (status 200).
	Batches int
	// Rejected maps an HTTP error status to the number of responses with that
	// status, failures caused by the Mode included.
	Rejected map[int]int
	// Events counts the accepted events.
	Events int
	// DuplicateMessageIDs counts accepted events whose messageId was already
	// seen on an earlier accepted event. Events without a messageId, or with
	// an empty one, are not counted.
	DuplicateMessageIDs int
	// MaxEventsPerBatch is the largest number of events in one accepted batch.
	MaxEventsPerBatch int
}

// MeanEventsPerBatch returns the mean number of events per accepted batch, or
// 0 when no batch was accepted.
func (s Stats) MeanEventsPerBatch() float64 {
	if s.Batches == 0 {
		return 0
	}
	return float64(s.Events) / float64(s.Batches)
}

// Start starts a recorder listening on 127.0.0.1 with a port chosen by the
// system. Stop it with Close.
func Start(opts Options) (*Recorder, error) {
	if opts.WriteKey == "" {
		return nil, errors.New("recorder: Options.WriteKey is empty: set the write key that clients send as the Basic auth user")
	}
	if strings.Contains(opts.WriteKey, ":") {
		return nil, fmt.Errorf("recorder: Options.WriteKey %q contains a colon, which HTTP Basic auth cannot carry in a user name", opts.WriteKey)
	}

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("recorder: listening on 127.0.0.1 failed: %w", err)
	}

	r := &Recorder{
		writeKey:    opts.WriteKey,
		countOnly:   opts.CountOnly,
		url:         "http://" + listener.Addr().String(),
		closed:      make(chan struct{}),
		serveDone:   make(chan struct{}),
		messageIDs:  make(map[string]struct{}),
		stats:       Stats{Rejected: make(map[int]int)},
		eventsAdded: make(chan struct{}),
	}
	r.server = &http.Server{
		Handler:           http.HandlerFunc(r.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
	}

	go func() {
		defer close(r.serveDone)
		// Serve returns http.ErrServerClosed after Close, and any other error
		// only when the listener fails, which leaves nothing to recover.
		_ = r.server.Serve(listener)
	}()
	return r, nil
}

// URL returns the base URL of the recorder, "http://127.0.0.1:PORT", without a
// trailing slash. Clients post batches to URL() + "/v1/batch".
func (r *Recorder) URL() string {
	return r.url
}

// SetMode sets how the recorder responds from now on and restarts the count of
// requests for Mode.FailFirst. Requests already waiting keep the Mode they
// arrived with. It panics if m.FailStatus is neither 0 nor an error status
// (400-599).
func (r *Recorder) SetMode(m Mode) {
	if m.FailStatus != 0 && (m.FailStatus < 400 || m.FailStatus > 599) {
		panic(fmt.Sprintf("recorder: Mode.FailStatus %d is not an error status: use 400-599, or 0 for 500", m.FailStatus))
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.mode = m
	r.modeRequests = 0
}

// Events returns a deep copy of the accepted events in arrival order.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return copyEvents(r.events)
}

// WaitEvents waits until at least n events were accepted and returns a copy of
// all accepted events. After timeout, or when the recorder is closed, it
// returns the events that did arrive and an error that states how many there
// are.
func (r *Recorder) WaitEvents(n int, timeout time.Duration) ([]Event, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()

	for {
		r.mu.Lock()
		if len(r.events) >= n {
			events := copyEvents(r.events)
			r.mu.Unlock()
			return events, nil
		}
		added := r.eventsAdded
		r.mu.Unlock()

		select {
		case <-added:
		case <-timer.C:
			events := r.Events()
			return events, fmt.Errorf("recorder: timed out after %s waiting for %d events: %d arrived", timeout, n, len(events))
		case <-r.closed:
			events := r.Events()
			return events, fmt.Errorf("recorder: closed while waiting for %d events: %d arrived", n, len(events))
		}
	}
}

// Stats returns a copy of the counters.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()

	stats := r.stats
	stats.Rejected = make(map[int]int, len(r.stats.Rejected))
	for status, count := range r.stats.Rejected {
		stats.Rejected[status] = count
	}
	return stats
}

// Reset clears the accepted events, their messageIds and the counters. The
// Mode and its FailFirst count stay as they are.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = nil
	r.messageIDs = make(map[string]struct{})
	r.stats = Stats{Rejected: make(map[int]int)}
}

// Close stops the server and waits for its request handlers to return. It
// returns promptly even while requests are delayed or hanging, because it
// ends them without a response. Calling Close again does nothing.
func (r *Recorder) Close() {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closing = true
		r.mu.Unlock()

		close(r.closed)
		// Close shuts the listener and every connection at once, so handlers
		// blocked on reading a body see an error.
		_ = r.server.Close()
		r.handlers.Wait()
		<-r.serveDone
	})
}

// serveHTTP handles every request: it reads the body, applies the Mode, then
// validates and stores the batch.
func (r *Recorder) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if !r.beginRequest() {
		abortWithoutResponse()
	}
	defer r.handlers.Done()

	// The body is read before the Mode applies, so that a client that is still
	// sending gets the response and not a connection reset.
	body := readBody(req)

	decision := r.takeModeDecision()
	if decision.hang {
		r.wait(req, nil)
		abortWithoutResponse()
	}
	if decision.delay > 0 {
		timer := time.NewTimer(decision.delay)
		respond := r.wait(req, timer.C)
		timer.Stop()
		if !respond {
			abortWithoutResponse()
		}
	}
	if decision.fail {
		r.reject(w, decision.status, fmt.Sprintf("simulated failure with status %d", decision.status), decision.retryAfter)
		return
	}

	status, message := r.checkRequest(req)
	if status != http.StatusOK {
		r.reject(w, status, message, "")
		return
	}

	events, ids, err := decodeBatch(req.Header, body, !r.countOnly)
	if err != nil {
		var statusErr *statusError
		if errors.As(err, &statusErr) {
			status = statusErr.status
		} else {
			status = http.StatusBadRequest
		}
		r.reject(w, status, err.Error(), "")
		return
	}

	r.accept(events, ids)
	writeJSON(w, http.StatusOK, `{"success":true}`)
}

// beginRequest counts the request and registers its handler, unless Close has
// started. Registering under mu keeps WaitGroup.Add from racing with the Wait
// in Close.
func (r *Recorder) beginRequest() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.handlers.Add(1)
	r.stats.Requests++
	return true
}

// modeDecision is what the Mode makes of one request.
type modeDecision struct {
	hang       bool
	delay      time.Duration
	fail       bool
	status     int
	retryAfter string
}

func (r *Recorder) takeModeDecision() modeDecision {
	r.mu.Lock()
	defer r.mu.Unlock()

	r.modeRequests++
	mode := r.mode
	decision := modeDecision{hang: mode.Hang, delay: mode.Delay}
	if mode.FailAlways || r.modeRequests <= mode.FailFirst {
		decision.fail = true
		decision.status = mode.FailStatus
		if decision.status == 0 {
			decision.status = http.StatusInternalServerError
		}
		decision.retryAfter = mode.RetryAfter
	}
	return decision
}

// wait blocks until ready fires, the recorder closes or the client goes away.
// It reports whether ready fired, which means the request should still get a
// response. A nil ready never fires.
func (r *Recorder) wait(req *http.Request, ready <-chan time.Time) bool {
	select {
	case <-ready:
		return true
	case <-r.closed:
		return false
	case <-req.Context().Done():
		return false
	}
}

// abortWithoutResponse ends the handler so that the server closes the
// connection without a response. A handler that just returned would make the
// server send an empty 200 whenever the connection is still open.
func abortWithoutResponse() {
	panic(http.ErrAbortHandler)
}

// checkRequest checks the path, method and credentials, and returns 200 or
// the error status with its message.
func (r *Recorder) checkRequest(req *http.Request) (int, string) {
	if req.URL.Path != "/v1/batch" {
		return http.StatusNotFound, fmt.Sprintf("path %q not found: post batches to /v1/batch", req.URL.Path)
	}
	if req.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on /v1/batch: use POST", req.Method)
	}

	user, password, ok := req.BasicAuth()
	if !ok {
		return http.StatusUnauthorized, "missing HTTP Basic auth: send the write key as the user name with an empty password"
	}
	if user != r.writeKey || password != "" {
		return http.StatusUnauthorized, "invalid write key: send the write key as the user name with an empty password"
	}
	return http.StatusOK, ""
}

// reject counts the error status and writes it with a JSON error body.
func (r *Recorder) reject(w http.ResponseWriter, status int, message, retryAfter string) {
	r.mu.Lock()
	r.stats.Rejected[status]++
	r.mu.Unlock()

	if status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="recorder"`)
	}
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, status, errorBody(message))
}

// accept stores the events of a valid batch, if any were kept, and counts
// them by their messageIds. It runs before the 200 response is written, so
// the events are visible once the client has its response.
func (r *Recorder) accept(events []Event, ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()

	for _, id := range ids {
		if id == "" {
			continue
		}
		if _, seen := r.messageIDs[id]; seen {
			r.stats.DuplicateMessageIDs++
		}
		r.messageIDs[id] = struct{}{}
	}

	r.events = append(r.events, events...)
	r.stats.Batches++
	r.stats.Events += len(ids)
	r.stats.MaxEventsPerBatch = max(r.stats.MaxEventsPerBatch, len(ids))

	close(r.eventsAdded)
	r.eventsAdded = make(chan struct{})
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// A failed write means the client has disconnected, so the error is dropped.
	_, _ = io.WriteString(w, body)
}
