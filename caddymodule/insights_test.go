package caddymodule

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// beaconErrorPattern matches every error message parseBeacon may return.
// None of them may quote the body.
var beaconErrorPattern = regexp.MustCompile(`^invalid insights beacon: (the body is not a JSON object|the body has no "events" array|the body is not valid JSON \(syntax error at byte [0-9]+\))$`)

// Parts of a realistic beacon event, with the fields GitBook's browser
// client sends.
const (
	beaconTestSession = `{"sessionId":"a41f0c7e-2b9d-4e63-8c15-d07e9b3a6f21R",` +
		`"visitorId":"6d2e8b1a-f47c-4a09-b3d5-1c8e2f9a7b40R",` +
		`"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Safari/537.36",` +
		`"language":"en-US",` +
		`"cookies":{"__gitbook_cookie_granted":"yes","ajs_anonymous_id":"\"0f6a3c52-9e1b-4d87-a2c4-5b7e8d9f1a03\"","_ga":"GA1.1.1843207765.1755768600"},` +
		`"referrer":"https://www.google.com/","visitorAuthClaims":{}}`
	beaconTestLocation = `{"url":"https://docs.example.com/guides/install","siteSection":"sitesc_Qm4Tz8Lk",` +
		`"siteSpace":"sitesp_Wn2Hx7Rc","space":"spc_7Hq2LmNx4Rt","siteShareKey":null,"revision":"rev_K5pJ9sDe",` +
		`"page":"pg_3Vd8KwZp1Ys","displayContext":"site"}`
	beaconTestPageView = `{"type":"page_view","timestamp":"2026-08-21T09:30:12.345Z",` +
		`"session":` + beaconTestSession + `,"location":` + beaconTestLocation + `}`
)

// beaconTestInstall is the page view that beaconTestPageView decodes to.
var beaconTestInstall = beaconPageView{
	Timestamp: time.Date(2026, 8, 21, 9, 30, 12, 345_000_000, time.UTC),
	URL:       "https://docs.example.com/guides/install",
	SpaceID:   "spc_7Hq2LmNx4Rt",
	PageID:    "pg_3Vd8KwZp1Ys",
	Referrer:  "https://www.google.com/",
}

// beaconTestEvent returns an event of the given type with the realistic
// session and location.
func beaconTestEvent(eventType, extra, timestamp string) string {
	return fmt.Sprintf(`{"type":%q,%s"timestamp":%q,"session":%s,"location":%s}`,
		eventType, extra, timestamp, beaconTestSession, beaconTestLocation)
}

// beaconTestBody wraps events into a beacon body.
func beaconTestBody(events ...string) string {
	return `{"events":[` + strings.Join(events, ",") + `]}`
}

// beaconCheckPageViews compares page views field by field.
func beaconCheckPageViews(t *testing.T, got, want []beaconPageView) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d page views, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if !got[i].Timestamp.Equal(want[i].Timestamp) {
			t.Errorf("page view %d: Timestamp = %v, want %v", i, got[i].Timestamp, want[i].Timestamp)
		}
		if got[i].URL != want[i].URL {
			t.Errorf("page view %d: URL = %q, want %q", i, got[i].URL, want[i].URL)
		}
		if got[i].SpaceID != want[i].SpaceID {
			t.Errorf("page view %d: SpaceID = %q, want %q", i, got[i].SpaceID, want[i].SpaceID)
		}
		if got[i].PageID != want[i].PageID {
			t.Errorf("page view %d: PageID = %q, want %q", i, got[i].PageID, want[i].PageID)
		}
		if got[i].Referrer != want[i].Referrer {
			t.Errorf("page view %d: Referrer = %q, want %q", i, got[i].Referrer, want[i].Referrer)
		}
	}
}

// beaconWithFields returns the install page view with some fields replaced.
func beaconWithFields(change func(*beaconPageView)) beaconPageView {
	view := beaconTestInstall
	change(&view)
	return view
}

func TestParseBeaconShapes(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []beaconPageView
	}{
		{
			name: "single page view",
			body: beaconTestBody(beaconTestPageView),
			want: []beaconPageView{beaconTestInstall},
		},
		{
			name: "page views among other events",
			body: beaconTestBody(
				beaconTestEvent("link_click", `"link":{"target":{"kind":"url","url":"https://github.com/example/project"},"position":"content"},`, "2026-08-21T09:30:10.000Z"),
				beaconTestEvent("page_view", "", "2026-08-21T09:30:11.000Z"),
				beaconTestEvent("search_open", "", "2026-08-21T09:30:12.000Z"),
				beaconTestEvent("search_type_query", `"query":"install",`, "2026-08-21T09:30:13.000Z"),
				beaconTestEvent("search_open_result", `"query":"install","result":{"spaceId":"spc_7Hq2LmNx4Rt","pageId":"pg_3Vd8KwZp1Ys"},`, "2026-08-21T09:30:14.000Z"),
				beaconTestEvent("page_view", "", "2026-08-21T09:30:15.000Z"),
				beaconTestEvent("ad_display", `"ad":{},`, "2026-08-21T09:30:16.000Z"),
			),
			want: []beaconPageView{
				beaconWithFields(func(v *beaconPageView) { v.Timestamp = time.Date(2026, 8, 21, 9, 30, 11, 0, time.UTC) }),
				beaconWithFields(func(v *beaconPageView) { v.Timestamp = time.Date(2026, 8, 21, 9, 30, 15, 0, time.UTC) }),
			},
		},
		{
			name: "null page and referrer",
			body: beaconTestBody(`{"type":"page_view","timestamp":"2026-08-21T09:30:12.345Z",` +
				`"session":{"sessionId":"s","referrer":null},` +
				`"location":{"url":"https://docs.example.com/missing","space":"spc_7Hq2LmNx4Rt","page":null}}`),
			want: []beaconPageView{{
				Timestamp: beaconTestInstall.Timestamp,
				URL:       "https://docs.example.com/missing",
				SpaceID:   "spc_7Hq2LmNx4Rt",
			}},
		},
		{
			name: "missing session",
			body: beaconTestBody(`{"type":"page_view","timestamp":"2026-08-21T09:30:12.345Z","location":` + beaconTestLocation + `}`),
			want: []beaconPageView{beaconWithFields(func(v *beaconPageView) { v.Referrer = "" })},
		},
		{
			name: "missing location",
			body: beaconTestBody(`{"type":"page_view","timestamp":"2026-08-21T09:30:12.345Z","session":` + beaconTestSession + `}`),
			want: []beaconPageView{{Timestamp: beaconTestInstall.Timestamp, Referrer: "https://www.google.com/"}},
		},
		{
			name: "type only",
			body: beaconTestBody(`{"type":"page_view"}`),
			want: []beaconPageView{{}},
		},
		{
			name: "null session and location",
			body: beaconTestBody(`{"type":"page_view","session":null,"location":null}`),
			want: []beaconPageView{{}},
		},
		{
			name: "session and location not objects",
			body: beaconTestBody(`{"type":"page_view","session":["referrer"],"location":"https://docs.example.com/"}`),
			want: []beaconPageView{{}},
		},
		{
			name: "events that are not objects",
			body: beaconTestBody(`null`, `1`, `"page_view"`, `["page_view"]`, `true`, beaconTestPageView, `{}`),
			want: []beaconPageView{beaconTestInstall},
		},
		{
			name: "numbers and other types in string fields",
			body: beaconTestBody(`{"type":"page_view","session":{"referrer":42},` +
				`"location":{"url":1e3,"space":123,"page":true}}`),
			want: []beaconPageView{{}},
		},
		{
			name: "objects in string fields",
			body: beaconTestBody(`{"type":"page_view","session":{"referrer":{"url":"https://www.google.com/"}},` +
				`"location":{"url":["https://docs.example.com/"],"space":{},"page":[]}}`),
			want: []beaconPageView{{}},
		},
		{
			name: "type that is not a string",
			body: beaconTestBody(`{"type":1}`, `{"type":null}`, `{"type":["page_view"]}`, `{"type":{"page_view":true}}`, `{"location":{}}`),
			want: nil,
		},
		{
			name: "type with other spelling",
			body: beaconTestBody(`{"type":"Page_View"}`, `{"type":" page_view"}`, `{"type":"pageview"}`, `{"type":"page_view "}`),
			want: nil,
		},
		{
			name: "key with other case",
			body: beaconTestBody(`{"Type":"page_view"}`,
				`{"type":"page_view","Location":{"url":"https://docs.example.com/","Space":"spc_1"},"location":{"URL":"https://docs.example.com/"}}`),
			want: []beaconPageView{{}},
		},
		{
			name: "duplicate type key uses last",
			body: beaconTestBody(`{"type":"page_view","type":"link_click"}`, `{"type":"link_click","type":"page_view","location":{"page":"pg_1","page":"pg_2"}}`),
			want: []beaconPageView{{PageID: "pg_2"}},
		},
		{
			name: "escaped strings",
			body: beaconTestBody(`{"type":"page\u005fview","location":{"url":"https://docs.example.com/caf\u00e9?q=a\u0026b","space":"spc\u005f1"}}`),
			want: []beaconPageView{{URL: "https://docs.example.com/café?q=a&b", SpaceID: "spc_1"}},
		},
		{
			name: "extra fields",
			body: `{"version":2,"events":[{"type":"page_view","custom":{"deep":[1,2,{"x":null}]},` +
				`"location":{"url":"https://docs.example.com/","space":"spc_1","extra":"x"},"session":{"referrer":"","more":1}}],"trailer":true}`,
			want: []beaconPageView{{URL: "https://docs.example.com/", SpaceID: "spc_1"}},
		},
		{
			name: "whitespace between tokens",
			body: "\n { \"events\" : [ { \"type\" : \"page_view\" , \"location\" : { \"page\" : \"pg_1\" } } ] } \n",
			want: []beaconPageView{{PageID: "pg_1"}},
		},
		{
			name: "empty events array",
			body: `{"events":[]}`,
			want: nil,
		},
		{
			name: "duplicate events key uses last",
			body: `{"events":[{"type":"page_view","location":{"page":"pg_1"}}],"events":[{"type":"page_view","location":{"page":"pg_2"}}]}`,
			want: []beaconPageView{{PageID: "pg_2"}},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBeacon([]byte(tt.body))
			if err != nil {
				t.Fatalf("parseBeacon returned error %q, want page views", err)
			}
			beaconCheckPageViews(t, got, tt.want)
		})
	}
}

func TestParseBeaconTimestamps(t *testing.T) {
	tests := []struct {
		name      string
		timestamp string // JSON value, or "" to leave the field out
		want      time.Time
	}{
		{"toISOString", `"2026-08-21T09:30:12.345Z"`, time.Date(2026, 8, 21, 9, 30, 12, 345_000_000, time.UTC)},
		{"without fraction", `"2026-08-21T09:30:12Z"`, time.Date(2026, 8, 21, 9, 30, 12, 0, time.UTC)},
		{"nanoseconds", `"2026-08-21T09:30:12.123456789Z"`, time.Date(2026, 8, 21, 9, 30, 12, 123_456_789, time.UTC)},
		{"positive offset", `"2026-08-21T11:30:12.345+02:00"`, time.Date(2026, 8, 21, 9, 30, 12, 345_000_000, time.UTC)},
		{"negative offset", `"2026-08-21T04:00:12.345-05:30"`, time.Date(2026, 8, 21, 9, 30, 12, 345_000_000, time.UTC)},
		{"absent", ``, time.Time{}},
		{"null", `null`, time.Time{}},
		{"empty string", `""`, time.Time{}},
		{"number", `1755768612345`, beaconInvalidTimestamp},
		{"zero number", `0`, beaconInvalidTimestamp},
		{"boolean", `true`, beaconInvalidTimestamp},
		{"object", `{"iso":"2026-08-21T09:30:12.345Z"}`, beaconInvalidTimestamp},
		{"not a date", `"yesterday"`, beaconInvalidTimestamp},
		{"date only", `"2026-08-21"`, beaconInvalidTimestamp},
		{"no zone", `"2026-08-21T09:30:12.345"`, beaconInvalidTimestamp},
		{"space separator", `"2026-08-21 09:30:12.345Z"`, beaconInvalidTimestamp},
		{"out of range month", `"2026-13-21T09:30:12.345Z"`, beaconInvalidTimestamp},
		{"zero time", `"0001-01-01T00:00:00Z"`, beaconInvalidTimestamp},
		{"zero time with offset", `"0001-01-01T00:00:00+00:00"`, beaconInvalidTimestamp},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			event := `{"type":"page_view"}`
			if tt.timestamp != "" {
				event = `{"type":"page_view","timestamp":` + tt.timestamp + `}`
			}
			views, err := parseBeacon([]byte(beaconTestBody(event)))
			if err != nil {
				t.Fatalf("parseBeacon returned error %q, want one page view", err)
			}
			if len(views) != 1 {
				t.Fatalf("got %d page views, want 1", len(views))
			}
			if !views[0].Timestamp.Equal(tt.want) {
				t.Errorf("Timestamp = %v, want %v", views[0].Timestamp, tt.want)
			}
		})
	}
}

func TestParseBeaconErrors(t *testing.T) {
	// Every body carries a cookie value that no error message may contain.
	const secret = "0f6a3c52-9e1b-4d87-a2c4-5b7e8d9f1a03"
	tests := []struct {
		name string
		body string
	}{
		{"empty object", `{}`},
		{"empty array", `[]`},
		{"array of events", `[` + beaconTestPageView + `]`},
		{"empty body", ``},
		{"whitespace", " \n\t"},
		{"form body", `ajs_anonymous_id=` + secret},
		{"cookie header", `ajs_anonymous_id="` + secret + `"; _ga=GA1.1.1.1`},
		{"truncated", beaconTestBody(beaconTestPageView)[:400]},
		{"truncated after events", `{"events":[` + beaconTestPageView},
		{"trailing data", beaconTestBody(beaconTestPageView) + `x` + secret},
		{"two objects", `{"events":[]}{"events":[]}`},
		{"null", `null`},
		{"string", `"` + secret + `"`},
		{"number", `12345`},
		{"events null", `{"events":null,"cookie":"` + secret + `"}`},
		{"events object", `{"events":{"0":` + beaconTestPageView + `}}`},
		{"events string", `{"events":"` + secret + `"}`},
		{"events number", `{"events":1}`},
		{"events key with other case", `{"Events":[` + beaconTestPageView + `]}`},
		{"event key only", `{"event":[` + beaconTestPageView + `]}`},
		{"invalid escape", `{"events":[{"type":"page_view","location":{"url":"\x` + secret + `"}}]}`},
		{"raw control character", "{\"events\":[{\"type\":\"page_view\",\"location\":{\"url\":\"a\nb\"}}]}"},
		{"single quotes", `{'events':[]}`},
		{"trailing comma", `{"events":[{"type":"page_view"},]}`},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			views, err := parseBeacon([]byte(tt.body))
			if err == nil {
				t.Fatalf("parseBeacon returned %d page views and no error, want an error", len(views))
			}
			if views != nil {
				t.Errorf("parseBeacon returned %d page views with its error, want none", len(views))
			}
			if !beaconErrorPattern.MatchString(err.Error()) {
				t.Errorf("error %q is not one of the fixed messages that never quote the body", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q quotes the cookie value from the body", err)
			}
		})
	}
}

func TestParseBeaconSyntaxErrorOffset(t *testing.T) {
	body := `{"events":[{"type":"page_view"}` // truncated after 31 bytes
	_, err := parseBeacon([]byte(body))
	want := fmt.Sprintf("invalid insights beacon: the body is not valid JSON (syntax error at byte %d)", len(body))
	if err == nil || err.Error() != want {
		t.Errorf("parseBeacon error = %v, want %q", err, want)
	}
}

func TestParseBeaconLimits(t *testing.T) {
	longURL := "https://docs.example.com/" + strings.Repeat("a", 5000)
	// "é" is 2 bytes and would straddle the limit, so it is dropped whole.
	straddlingURL := "https://docs.example.com/" + strings.Repeat("b", beaconMaxURLBytes-len("https://docs.example.com/")-1) + "é" + "tail"
	longReferrer := "https://www.google.com/search?q=" + strings.Repeat("q", 70_000)
	exactURL := "https://docs.example.com/" + strings.Repeat("c", beaconMaxURLBytes-len("https://docs.example.com/"))
	id256 := strings.Repeat("i", beaconMaxIDBytes)
	id257 := strings.Repeat("j", beaconMaxIDBytes+1)

	tests := []struct {
		name     string
		location string
		referrer string
		want     beaconPageView
	}{
		{
			name:     "long URL truncated",
			location: fmt.Sprintf(`{"url":%q}`, longURL),
			want:     beaconPageView{URL: longURL[:beaconMaxURLBytes]},
		},
		{
			name:     "URL at limit kept",
			location: fmt.Sprintf(`{"url":%q}`, exactURL),
			want:     beaconPageView{URL: exactURL},
		},
		{
			name:     "truncation keeps whole characters",
			location: fmt.Sprintf(`{"url":%q}`, straddlingURL),
			want:     beaconPageView{URL: straddlingURL[:beaconMaxURLBytes-1]},
		},
		{
			name:     "long referrer truncated",
			referrer: fmt.Sprintf("%q", longReferrer),
			want:     beaconPageView{Referrer: longReferrer[:beaconMaxURLBytes]},
		},
		{
			name:     "id at limit kept",
			location: fmt.Sprintf(`{"space":%q,"page":%q}`, id256, id256),
			want:     beaconPageView{SpaceID: id256, PageID: id256},
		},
		{
			name:     "id over limit dropped",
			location: fmt.Sprintf(`{"space":%q,"page":%q}`, id257, id257),
			want:     beaconPageView{},
		},
		{
			name:     "NUL in ids",
			location: `{"space":"spc_1\u0000","page":"\u0000"}`,
			want:     beaconPageView{},
		},
		{
			name:     "line breaks in ids",
			location: `{"space":"spc\n1","page":"pg\r1"}`,
			want:     beaconPageView{},
		},
		{
			name:     "DEL and C1 in ids",
			location: `{"space":"spc\u007f","page":"pg\u0085"}`,
			want:     beaconPageView{},
		},
		{
			name:     "tab in URL",
			location: `{"url":"https://docs.example.com/\tguides","space":"spc_1"}`,
			want:     beaconPageView{SpaceID: "spc_1"},
		},
		{
			name:     "escape sequence in referrer",
			referrer: `"https://www.google.com/\u001b[31m"`,
			want:     beaconPageView{},
		},
		{
			name:     "printable Unicode kept",
			location: `{"url":"https://docs.example.com/日本語","space":"spc_ü","page":"pg_✓"}`,
			want:     beaconPageView{URL: "https://docs.example.com/日本語", SpaceID: "spc_ü", PageID: "pg_✓"},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			location, referrer := tt.location, tt.referrer
			if location == "" {
				location = "{}"
			}
			if referrer == "" {
				referrer = "null"
			}
			body := beaconTestBody(`{"type":"page_view","session":{"referrer":` + referrer + `},"location":` + location + `}`)

			views, err := parseBeacon([]byte(body))
			if err != nil {
				t.Fatalf("parseBeacon returned error %q, want one page view", err)
			}
			beaconCheckPageViews(t, views, []beaconPageView{tt.want})
			if len(views) == 1 && !utf8.ValidString(views[0].URL) {
				t.Errorf("URL %q is not valid UTF-8 after truncation", views[0].URL)
			}
		})
	}
}

func TestParseBeaconCopiesStrings(t *testing.T) {
	body := []byte(beaconTestBody(beaconTestPageView))
	views, err := parseBeacon(body)
	if err != nil {
		t.Fatalf("parseBeacon returned error %q, want one page view", err)
	}

	// Returned strings must not share memory with the body, which the
	// caller reuses or forwards.
	for i := range body {
		body[i] = 'X'
	}
	beaconCheckPageViews(t, views, []beaconPageView{beaconTestInstall})
}

func TestParseBeaconFixtures(t *testing.T) {
	install := func(timestamp time.Time) beaconPageView {
		view := beaconTestInstall
		view.Timestamp = timestamp
		return view
	}
	configure := beaconPageView{
		Timestamp: time.Date(2026, 8, 21, 9, 31, 9, 731_000_000, time.UTC),
		URL:       "https://docs.example.com/guides/configure",
		SpaceID:   "spc_7Hq2LmNx4Rt",
		PageID:    "pg_8Tn4QeRb6Wc",
		Referrer:  "https://www.google.com/",
	}

	tests := []struct {
		file string
		want []beaconPageView
	}{
		{"page_view.json", []beaconPageView{install(time.Date(2026, 8, 21, 9, 30, 12, 345_000_000, time.UTC))}},
		{"multi_page.json", []beaconPageView{install(time.Date(2026, 8, 21, 9, 31, 2, 118_000_000, time.UTC)), configure}},
	}

	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join("testdata", "beacon", tt.file))
			if err != nil {
				t.Fatalf("reading fixture: %v", err)
			}
			views, err := parseBeacon(body)
			if err != nil {
				t.Fatalf("parseBeacon returned error %q, want page views", err)
			}
			beaconCheckPageViews(t, views, tt.want)
		})
	}
}

func TestFilterBeaconPageViewsWindow(t *testing.T) {
	now := time.Date(2026, 8, 21, 9, 30, 0, 0, time.UTC)
	tests := []struct {
		name      string
		timestamp time.Time
		kept      bool
	}{
		{"now", now, true},
		{"4m59.999s old", now.Add(-(5*time.Minute - time.Millisecond)), true},
		{"1ns short of 5m old", now.Add(-(5*time.Minute - time.Nanosecond)), true},
		{"exactly 5m old", now.Add(-5 * time.Minute), false},
		{"5m0.001s old", now.Add(-(5*time.Minute + time.Millisecond)), false},
		{"a day old", now.Add(-24 * time.Hour), false},
		{"60s ahead", now.Add(time.Minute), true},
		{"60.001s ahead", now.Add(time.Minute + time.Millisecond), false},
		{"an hour ahead", now.Add(time.Hour), false},
		{"year 9999", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), false},
		{"year 1970", time.Unix(0, 0), false},
		{"invalid timestamp", beaconInvalidTimestamp, false},
		{"same instant in other zone", now.In(time.FixedZone("UTC+2", 2*60*60)), true},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			view := beaconPageView{Timestamp: tt.timestamp, URL: "https://docs.example.com/"}
			kept, stale := filterBeaconPageViews([]beaconPageView{view}, now)

			if tt.kept {
				if len(kept) != 1 || stale != 0 {
					t.Fatalf("got %d kept and %d stale, want the page view kept", len(kept), stale)
				}
				if !kept[0].Timestamp.Equal(tt.timestamp) {
					t.Errorf("kept Timestamp = %v, want it unchanged at %v", kept[0].Timestamp, tt.timestamp)
				}
				if kept[0].URL != view.URL {
					t.Errorf("kept URL = %q, want %q", kept[0].URL, view.URL)
				}
				return
			}
			if len(kept) != 0 || stale != 1 {
				t.Errorf("got %d kept and %d stale, want the page view skipped as stale", len(kept), stale)
			}
		})
	}
}

func TestFilterBeaconPageViewsZeroTimestamp(t *testing.T) {
	now := time.Date(2026, 8, 21, 9, 30, 0, 0, time.UTC)
	views := []beaconPageView{{PageID: "pg_1"}}

	kept, stale := filterBeaconPageViews(views, now)
	if len(kept) != 1 || stale != 0 {
		t.Fatalf("got %d kept and %d stale, want the page view without timestamp kept", len(kept), stale)
	}
	if !kept[0].Timestamp.Equal(now) {
		t.Errorf("kept Timestamp = %v, want now (%v)", kept[0].Timestamp, now)
	}
	if kept[0].PageID != "pg_1" {
		t.Errorf("kept PageID = %q, want %q", kept[0].PageID, "pg_1")
	}
	if !views[0].Timestamp.IsZero() {
		t.Errorf("input Timestamp = %v, want it left zero", views[0].Timestamp)
	}
}

func TestFilterBeaconPageViewsMixed(t *testing.T) {
	now := time.Date(2026, 8, 21, 9, 30, 0, 0, time.UTC)
	views := []beaconPageView{
		{PageID: "recent", Timestamp: now.Add(-time.Minute)},
		{PageID: "old", Timestamp: now.Add(-10 * time.Minute)},
		{PageID: "absent"},
		{PageID: "invalid", Timestamp: beaconInvalidTimestamp},
		{PageID: "ahead", Timestamp: now.Add(2 * time.Minute)},
		{PageID: "slightly ahead", Timestamp: now.Add(time.Second)},
	}

	kept, stale := filterBeaconPageViews(views, now)
	if stale != 3 {
		t.Errorf("stale = %d, want 3 (old, invalid, ahead)", stale)
	}
	var keptIDs []string
	for _, view := range kept {
		keptIDs = append(keptIDs, view.PageID)
	}
	if got, want := strings.Join(keptIDs, ","), "recent,absent,slightly ahead"; got != want {
		t.Errorf("kept page views = %s, want %s in input order", got, want)
	}
}

func TestFilterBeaconPageViewsEmpty(t *testing.T) {
	kept, stale := filterBeaconPageViews(nil, time.Now())
	if len(kept) != 0 {
		t.Errorf("got %d kept page views from none", len(kept))
	}
	if stale != 0 {
		t.Errorf("stale = %d from no page views, want 0", stale)
	}
}

func TestParseBeaconThenFilter(t *testing.T) {
	now := time.Date(2026, 8, 21, 9, 30, 0, 0, time.UTC)
	body := beaconTestBody(
		beaconTestEvent("page_view", "", "2026-08-21T09:29:30.000Z"),
		beaconTestEvent("page_view", "", "2026-08-21T09:20:00.000Z"),
		beaconTestEvent("page_view", "", "not a timestamp"),
		`{"type":"page_view","location":{"page":"pg_no_time"}}`,
		beaconTestEvent("link_click", "", "2026-08-21T09:20:00.000Z"),
	)

	views, err := parseBeacon([]byte(body))
	if err != nil {
		t.Fatalf("parseBeacon returned error %q, want page views", err)
	}
	kept, stale := filterBeaconPageViews(views, now)
	if stale != 2 {
		t.Errorf("stale = %d, want 2 (one 10 minutes old, one with an invalid timestamp)", stale)
	}
	if len(kept) != 2 {
		t.Fatalf("got %d kept page views, want 2", len(kept))
	}
	if want := time.Date(2026, 8, 21, 9, 29, 30, 0, time.UTC); !kept[0].Timestamp.Equal(want) {
		t.Errorf("first kept Timestamp = %v, want %v", kept[0].Timestamp, want)
	}
	if kept[1].PageID != "pg_no_time" {
		t.Errorf("second kept PageID = %q, want pg_no_time", kept[1].PageID)
	}
	if !kept[1].Timestamp.Equal(now) {
		t.Errorf("second kept Timestamp = %v, want now for an event without timestamp", kept[1].Timestamp)
	}
}

// beaconReferenceEvents returns the page_view events found by a generic
// decoding of the body, as an oracle independent of parseBeacon. It reports
// false when the body is not a beacon.
func beaconReferenceEvents(body []byte) ([]map[string]any, bool) {
	var beacon any
	if err := json.Unmarshal(body, &beacon); err != nil {
		return nil, false
	}
	object, ok := beacon.(map[string]any)
	if !ok {
		return nil, false
	}
	events, ok := object["events"].([]any)
	if !ok {
		return nil, false
	}

	var pageViews []map[string]any
	for _, event := range events {
		fields, ok := event.(map[string]any)
		if ok && fields["type"] == "page_view" {
			pageViews = append(pageViews, fields)
		}
	}
	return pageViews, true
}

// beaconReferenceString returns a string field of a nested object in a
// generically decoded event.
func beaconReferenceString(event map[string]any, object, field string) (string, bool) {
	fields, ok := event[object].(map[string]any)
	if !ok {
		return "", false
	}
	text, ok := fields[field].(string)
	return text, ok
}

// beaconCheckString checks one returned string against the value in the
// body: equal when it fits the limit and has no control character, a
// truncated prefix (URLs) or empty (ids) when it does not.
func beaconCheckString(t *testing.T, name, got, source string, present bool, limit int, truncates bool) {
	t.Helper()
	if len(got) > limit {
		t.Errorf("%s is %d bytes, over the limit of %d", name, len(got), limit)
	}
	if !utf8.ValidString(got) {
		t.Errorf("%s %q is not valid UTF-8", name, got)
	}
	if beaconHasControl(got) {
		t.Errorf("%s %q contains a control character", name, got)
	}

	usable := present && !beaconHasControl(source)
	switch {
	case !usable:
		if got != "" {
			t.Errorf("%s = %q, want empty for an unusable value", name, got)
		}
	case len(source) <= limit:
		if got != source {
			t.Errorf("%s = %q, want %q", name, got, source)
		}
	case truncates:
		if !strings.HasPrefix(source, got) || len(got) < limit-utf8.UTFMax+1 {
			t.Errorf("%s = %q, want a prefix of %d to %d bytes of the value", name, got, limit-utf8.UTFMax+1, limit)
		}
	default:
		if got != "" {
			t.Errorf("%s = %q, want empty for a value over the limit", name, got)
		}
	}
}

func FuzzParseBeacon(f *testing.F) {
	for _, file := range []string{"page_view.json", "multi_page.json"} {
		body, err := os.ReadFile(filepath.Join("testdata", "beacon", file))
		if err != nil {
			f.Fatalf("reading fixture: %v", err)
		}
		f.Add(body)
	}
	seeds := []string{
		beaconTestBody(beaconTestPageView),
		beaconTestBody(beaconTestEvent("link_click", "", "2026-08-21T09:30:10.000Z"), beaconTestPageView, `{"type":"search_open"}`),
		beaconTestBody(`{"type":"page_view","session":{"referrer":null},"location":{"url":"https://docs.example.com/","space":"spc_1","page":null}}`),
		beaconTestBody(`{"type":"page_view"}`, `null`, `1`, `[]`, `"page_view"`),
		beaconTestBody(`{"type":"page_view","timestamp":12,"location":{"url":1,"space":{},"page":[]}}`),
		beaconTestBody(`{"type":"page_view","timestamp":"0001-01-01T00:00:00Z","location":{"space":"a\u0000b"}}`),
		`{"events":[]}`,
		`{}`,
		`[]`,
		`null`,
		`{"events":[{"type":"page_view","location":{"url":"é"`,
	}
	for _, seed := range seeds {
		f.Add([]byte(seed))
	}

	now := time.Date(2026, 8, 21, 9, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		views, err := parseBeacon(body)
		referenceViews, isBeacon := beaconReferenceEvents(body)

		if err != nil {
			if isBeacon {
				t.Fatalf("parseBeacon returned error %q for a body that decodes as a beacon", err)
			}
			if views != nil {
				t.Errorf("parseBeacon returned %d page views with its error", len(views))
			}
			if !beaconErrorPattern.MatchString(err.Error()) {
				t.Errorf("error %q is not one of the fixed messages that never quote the body", err)
			}
			return
		}
		if !isBeacon {
			t.Fatalf("parseBeacon returned %d page views for a body that does not decode as a beacon", len(views))
		}
		if len(views) != len(referenceViews) {
			t.Fatalf("parseBeacon returned %d page views, generic decoding finds %d", len(views), len(referenceViews))
		}

		for i, view := range views {
			event := referenceViews[i]
			url, ok := beaconReferenceString(event, "location", "url")
			beaconCheckString(t, "URL", view.URL, url, ok, beaconMaxURLBytes, true)
			referrer, ok := beaconReferenceString(event, "session", "referrer")
			beaconCheckString(t, "Referrer", view.Referrer, referrer, ok, beaconMaxURLBytes, true)
			space, ok := beaconReferenceString(event, "location", "space")
			beaconCheckString(t, "SpaceID", view.SpaceID, space, ok, beaconMaxIDBytes, false)
			page, ok := beaconReferenceString(event, "location", "page")
			beaconCheckString(t, "PageID", view.PageID, page, ok, beaconMaxIDBytes, false)
		}

		kept, stale := filterBeaconPageViews(views, now)
		if len(kept)+stale != len(views) {
			t.Errorf("filter kept %d and skipped %d of %d page views", len(kept), stale, len(views))
		}
		for _, view := range kept {
			if now.Sub(view.Timestamp) >= beaconMaxAge || view.Timestamp.Sub(now) > beaconMaxAhead {
				t.Errorf("kept page view with Timestamp %v outside the window around %v", view.Timestamp, now)
			}
		}
	})
}
