package recorder

import "strings"

// Event is one item of an accepted batch, decoded by encoding/json: objects
// are map[string]any, arrays []any and numbers float64.
//
// It holds the item as the client sent it. Segment merges the batch-level
// "context" and "integrations" objects into each item, and the recorder does
// not, so a test checks what the sender put on each event.
type Event map[string]any

// Lookup returns the value at a dotted path such as "context.page.url", and
// whether it exists. Each path element is a key of a JSON object.
func (e Event) Lookup(path string) (any, bool) {
	var current any = map[string]any(e)
	for key := range strings.SplitSeq(path, ".") {
		object, ok := current.(map[string]any)
		if !ok {
			return nil, false
		}
		current, ok = object[key]
		if !ok {
			return nil, false
		}
	}
	return current, true
}

// String returns the string at a dotted path such as "context.page.url", or
// "" if the path is absent or its value is not a string.
func (e Event) String(path string) string {
	value, _ := e.Lookup(path)
	text, _ := value.(string)
	return text
}

// copyEvents returns a deep copy of events, so that callers may change what
// they get without a data race with the recorder or each other.
func copyEvents(events []Event) []Event {
	copied := make([]Event, len(events))
	for i, event := range events {
		copied[i] = Event(copyJSONObject(event))
	}
	return copied
}

func copyJSONObject(object map[string]any) map[string]any {
	copied := make(map[string]any, len(object))
	for key, value := range object {
		copied[key] = copyJSONValue(value)
	}
	return copied
}

func copyJSONValue(value any) any {
	switch typed := value.(type) {
	case map[string]any:
		return copyJSONObject(typed)
	case []any:
		copied := make([]any, len(typed))
		for i, item := range typed {
			copied[i] = copyJSONValue(item)
		}
		return copied
	default:
		// Strings, float64, bool and nil are values and need no copy.
		return value
	}
}
