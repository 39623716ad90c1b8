package recorder

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// Limits of Segment's HTTP Tracking API, as the "HTTP API Source" page of
// Segment's documentation states them.
//
// NOTE: the recorder is stricter than Segment. That page states that Segment
// returns 200 for every request except oversize bodies and invalid JSON, and
// drops invalid events: those of a batch over 2,500 events, those without
// userId and anonymousId, and a track without event. The recorder returns 400
// for these, so that a sender's mistake fails the test.
const (
	// MaxBodyBytes is the maximum size of a batch request body, after gzip
	// decoding. Segment states it as 500 KB, read here as 500,000 bytes.
	MaxBodyBytes = 500_000
	// MaxEventBytes is the maximum size of one event's JSON text inside the
	// batch array. Segment states it as 32 KB, read here as 32,000 bytes.
	MaxEventBytes = 32_000
	// MaxBatchEvents is the maximum number of events in one batch.
	MaxBatchEvents = 2_500
	// MaxMessageIDChars is the maximum length of a messageId in characters
	// (Unicode code points). Segment requires it to be under 100.
	MaxMessageIDChars = 99
)

const (
	// gzipSlackBytes is how far a gzip body may exceed MaxBodyBytes before it
	// is rejected unread. Deflate adds about 5 bytes per 64 KiB of data it
	// cannot compress, plus a header of a few dozen bytes, so a body that a
	// usual gzip writer made this much larger decodes to more than
	// MaxBodyBytes. NOTE: a gzip header with a very long file name or comment
	// field could exceed this slack with a small decoded body, and is then
	// rejected as too large.
	gzipSlackBytes = 64 << 10
	// maxDrainBytes bounds how much of an oversize body is read and dropped so
	// that the client, still sending, can read the 400 response.
	maxDrainBytes = 8 << 20
)

// eventTypes lists the call types of Segment's spec.
var eventTypes = map[string]bool{
	"identify": true,
	"track":    true,
	"page":     true,
	"screen":   true,
	"group":    true,
	"alias":    true,
}

// requiredFieldByType names the field, besides type and an id, that a call
// type needs.
var requiredFieldByType = map[string]string{
	"track": "event",
	"group": "groupId",
	"alias": "previousId",
}

// rawBody is a request body as read from the connection, still encoded.
type rawBody struct {
	data     []byte
	tooLarge bool  // the body exceeded the read limit, and data is empty
	err      error // reading the body failed
}

// statusError is a validation error whose response status is not 400.
type statusError struct {
	status  int
	message string
}

func (e *statusError) Error() string {
	return e.message
}

// readBody reads the whole request body, up to MaxBodyBytes for a plain body
// and a little more for a gzip one.
func readBody(req *http.Request) rawBody {
	limit := int64(MaxBodyBytes)
	if isGzip(req.Header.Get("Content-Encoding")) {
		limit += gzipSlackBytes
	}

	data, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		return rawBody{err: err}
	}
	if int64(len(data)) > limit {
		_, _ = io.CopyN(io.Discard, req.Body, maxDrainBytes)
		return rawBody{tooLarge: true}
	}
	return rawBody{data: data}
}

// decodeBatch decodes and validates a batch request body. It returns the
// messageId of each event ("" for none) and, with keep, the events decoded
// in full. An invalid body gives an error that names the first rule it
// breaks, a *statusError when its status is not 400.
func decodeBatch(header http.Header, body rawBody, keep bool) ([]Event, []string, error) {
	if body.err != nil {
		return nil, nil, fmt.Errorf("reading the request body failed: %v", body.err)
	}

	if err := checkContentType(header.Get("Content-Type")); err != nil {
		return nil, nil, err
	}
	compressed, err := parseContentEncoding(header.Get("Content-Encoding"))
	if err != nil {
		return nil, nil, err
	}
	if body.tooLarge {
		return nil, nil, fmt.Errorf("request body is larger than the limit of %d bytes", MaxBodyBytes)
	}

	data := body.data
	if compressed {
		data, err = gunzip(data)
		if err != nil {
			return nil, nil, err
		}
	}
	if len(data) > MaxBodyBytes {
		return nil, nil, fmt.Errorf("request body is %d bytes, larger than the limit of %d bytes", len(data), MaxBodyBytes)
	}

	items, err := decodeBatchArray(data)
	if err != nil {
		return nil, nil, err
	}
	if len(items) > MaxBatchEvents {
		return nil, nil, fmt.Errorf("batch has %d events, more than the limit of %d", len(items), MaxBatchEvents)
	}

	var events []Event
	if keep {
		events = make([]Event, 0, len(items))
	}
	ids := make([]string, 0, len(items))
	for i, item := range items {
		event, id, err := decodeEvent(item, keep)
		if err != nil {
			return nil, nil, fmt.Errorf("batch event %d: %w", i, err)
		}
		if keep {
			events = append(events, event)
		}
		ids = append(ids, id)
	}
	return events, ids, nil
}

// checkContentType rejects a body that is not declared as application/json
// with 415, because Segment's documentation requires that Content-Type.
func checkContentType(value string) error {
	mediaType, _, err := mime.ParseMediaType(value)
	if err == nil && mediaType == "application/json" {
		return nil
	}
	return &statusError{
		status:  http.StatusUnsupportedMediaType,
		message: fmt.Sprintf("Content-Type %q is not supported: send application/json", value),
	}
}

// parseContentEncoding reports whether the body is gzip-compressed, and
// rejects any coding other than gzip and identity with 415.
func parseContentEncoding(value string) (bool, error) {
	coding := strings.ToLower(strings.TrimSpace(value))
	switch coding {
	case "", "identity":
		return false, nil
	case "gzip", "x-gzip":
		return true, nil
	}
	return false, &statusError{
		status:  http.StatusUnsupportedMediaType,
		message: fmt.Sprintf("Content-Encoding %q is not supported: send gzip or an uncompressed body", value),
	}
}

func isGzip(contentEncoding string) bool {
	compressed, err := parseContentEncoding(contentEncoding)
	return err == nil && compressed
}

// gunzip decodes a gzip body, reading at most one byte more than MaxBodyBytes
// so that a small body cannot expand without bound.
func gunzip(data []byte) ([]byte, error) {
	reader, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("invalid gzip body: %v", err)
	}
	defer reader.Close()

	decoded, err := io.ReadAll(io.LimitReader(reader, MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("invalid gzip body: %v", err)
	}
	return decoded, nil
}

// jsonOptions make jsontext read JSON as encoding/json does, which is what
// Segment's libraries write: a repeated name takes the last value, and
// invalid UTF-8 becomes U+FFFD.
var jsonOptions = []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}

// decodeBatchArray returns the raw items of the body's "batch" array, as
// parts of data. It reads the body in one pass without decoding the items.
func decodeBatchArray(data []byte) ([]jsontext.Value, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsonOptions...)
	switch kind := dec.PeekKind(); kind {
	case '{':
	case 'n':
		return nil, errors.New("request body is JSON null, not an object")
	default:
		_, err := dec.ReadValue()
		return nil, fmt.Errorf("request body is not a JSON object: %v", jsonError(err, kind))
	}

	var items []jsontext.Value
	found := false
	if _, err := dec.ReadToken(); err != nil {
		return nil, fmt.Errorf("request body is not a JSON object: %v", err)
	}
	for dec.PeekKind() == '"' {
		name, err := dec.ReadToken()
		if err != nil {
			return nil, fmt.Errorf("request body is not a JSON object: %v", err)
		}
		if name.String() != "batch" {
			if err := dec.SkipValue(); err != nil {
				return nil, fmt.Errorf("request body is not a JSON object: %v", err)
			}
			continue
		}
		// A repeated "batch" counts once, with its last value.
		switch dec.PeekKind() {
		case '[':
		case 0: // the body ends or is not JSON
			_, err := dec.ReadValue()
			return nil, fmt.Errorf("request body is not a JSON object: %v", err)
		default:
			return nil, errors.New(`"batch" is not a JSON array`)
		}
		found = true
		if items, err = readItems(dec, data); err != nil {
			return nil, fmt.Errorf(`"batch" is not a valid JSON array: %v`, err)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, fmt.Errorf("request body is not a JSON object: %v", err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, errors.New("request body has data after its JSON object")
	}
	if !found {
		return nil, errors.New(`request body has no "batch" array`)
	}
	return items, nil
}

// readItems reads the array at the decoder's position, which reads data,
// and returns its items as parts of data.
func readItems(dec *jsontext.Decoder, data []byte) ([]jsontext.Value, error) {
	if _, err := dec.ReadToken(); err != nil {
		return nil, err
	}
	var items []jsontext.Value
	for dec.PeekKind() != ']' {
		value, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		end := int(dec.InputOffset())
		items = append(items, jsontext.Value(data[end-len(value):end]))
	}
	_, err := dec.ReadToken()
	return items, err
}

// jsonError returns err, or for a value that read without error but has
// the wrong kind, an error naming that kind.
func jsonError(err error, kind jsontext.Kind) error {
	if err != nil {
		return err
	}
	switch kind {
	case '[':
		return errors.New("found an array")
	case '"':
		return errors.New("found a string")
	case '0':
		return errors.New("found a number")
	default:
		return errors.New("found a boolean")
	}
}

// eventFields maps each top-level field of an event that Segment's rules
// check, when present, to its value.
type eventFields map[string]fieldValue

// fieldValue is a field's value when it is a JSON string.
type fieldValue struct {
	text     string
	isString bool
}

// checkedFields lists the fields that eventFields contains.
var checkedFields = map[string]bool{
	"type": true, "userId": true, "anonymousId": true, "event": true,
	"groupId": true, "previousId": true, "messageId": true,
}

// readEventFields reads the top level of an event. Other fields and the
// values of nested objects are checked to be valid JSON, not decoded.
func readEventFields(raw []byte) (eventFields, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(raw), jsonOptions...)
	if kind := dec.PeekKind(); kind != '{' {
		return nil, errors.New("event is not a JSON object")
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, errors.New("event is not a JSON object")
	}
	fields := make(eventFields, len(checkedFields))
	for dec.PeekKind() == '"' {
		name, err := dec.ReadToken()
		if err != nil {
			return nil, errors.New("event is not a JSON object")
		}
		key := name.String()
		if !checkedFields[key] {
			if err := dec.SkipValue(); err != nil {
				return nil, errors.New("event is not a JSON object")
			}
			continue
		}
		if dec.PeekKind() != '"' {
			if err := dec.SkipValue(); err != nil {
				return nil, errors.New("event is not a JSON object")
			}
			fields[key] = fieldValue{}
			continue
		}
		value, err := dec.ReadToken()
		if err != nil {
			return nil, errors.New("event is not a JSON object")
		}
		fields[key] = fieldValue{text: value.String(), isString: true}
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, errors.New("event is not a JSON object")
	}
	return fields, nil
}

// decodeEvent checks one batch item against Segment's rules for a single
// call, and returns its messageId ("" for none). The check reads only the
// item's top level; with keep, decodeEvent also returns the item decoded in
// full.
func decodeEvent(raw []byte, keep bool) (Event, string, error) {
	if len(raw) > MaxEventBytes {
		return nil, "", fmt.Errorf("event is %d bytes, larger than the limit of %d bytes", len(raw), MaxEventBytes)
	}

	fields, err := readEventFields(raw)
	if err != nil {
		return nil, "", err
	}

	eventType := fields["type"].text
	if eventType == "" {
		return nil, "", errors.New(`event has no "type"`)
	}
	if !eventTypes[eventType] {
		return nil, "", fmt.Errorf(`event "type" %q is not one of identify, track, page, screen, group, alias`, eventType)
	}

	if fields["userId"].text == "" && fields["anonymousId"].text == "" {
		return nil, "", errors.New(`event has neither "userId" nor "anonymousId": send at least one as a non-empty string`)
	}
	if field := requiredFieldByType[eventType]; field != "" && fields[field].text == "" {
		return nil, "", fmt.Errorf("%s event has no %q: send it as a non-empty string", eventType, field)
	}

	id, present := fields["messageId"]
	if present && !id.isString {
		return nil, "", errors.New(`event "messageId" is not a string`)
	}
	if length := utf8.RuneCountInString(id.text); length > MaxMessageIDChars {
		return nil, "", fmt.Errorf(`event "messageId" is %d characters long: it must be under 100`, length)
	}

	if !keep {
		return nil, id.text, nil
	}
	var event Event
	if err := json.Unmarshal(raw, &event); err != nil {
		return nil, "", errors.New("event is not a JSON object")
	}
	return event, id.text, nil
}

// errorBody returns the JSON body of an error response.
func errorBody(message string) string {
	body := struct {
		Success bool   `json:"success"`
		Error   string `json:"error"`
	}{Error: message}

	// Marshalling a struct of a bool and a string cannot fail.
	encoded, _ := json.Marshal(body)
	return string(encoded)
}
