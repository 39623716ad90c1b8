package caddymodule

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// titleCase is an identity-encoded body and the title expected from it.
type titleCase struct {
	name string
	body string
	want string
}

var titleCases = []titleCase{
	{"plain", "<!DOCTYPE html><html><head><title>Getting started</title></head><body>x</body></html>", "Getting started"},
	{"uppercase tag", "<HTML><HEAD><TITLE>Docs</TITLE></HEAD>", "Docs"},
	{"mixed case tag", "<TiTlE>Docs</tItLe>", "Docs"},
	{"attributes", `<title id="x" data-a='y>z' data-b="<title>">Docs</title>`, "Docs"},
	{"unquoted attribute", "<title lang=en dir = ltr>Docs</title>", "Docs"},
	{"unquoted attribute with quote", `<title a=b"c>Docs</title>`, "Docs"},
	{"self-closing syntax", "<title/>Docs</title>", "Docs"},
	{"newline after tag name", "<title\n>Docs</title>", "Docs"},
	{"end tag with space", "<title>Docs</title >rest", "Docs"},
	{"end tag with slash", "<title>Docs</title/>rest", "Docs"},
	{"end tag with attributes", `<title>Docs</TITLE class="a">rest`, "Docs"},

	{"entity amp", "<title>Guides &amp; tutorials</title>", "Guides & tutorials"},
	{"entity decimal apostrophe", "<title>Reader&#39;s guide</title>", "Reader's guide"},
	{"entity lt gt", "<title>&lt;title&gt; tag</title>", "<title> tag"},
	{"entity numeric", "<title>&#65;&#x42;&#X43;&#0068;</title>", "ABCD"},
	{"entity unknown", "<title>&unknown; &zz</title>", "&unknown; &zz"},
	{"entity without semicolon", "<title>&amp &copy 2024</title>", "& © 2024"},
	{"entity prefix", "<title>&notit;</title>", "¬it;"},
	{"entity two runes", "<title>&NotEqualTilde;</title>", "\u2242\u0338"},
	{"entity nbsp kept", "<title>a&nbsp;b</title>", "a\u00a0b"},
	{"entity newline collapsed", "<title>a&#10;&#9; b</title>", "a b"},
	{"entity zero", "<title>a&#0;b</title>", "a\uFFFDb"},
	{"entity bare ampersand", "<title>R & D &</title>", "R & D &"},
	{"entity adjacent", "<title>&amp&amp;&lt&gt;</title>", "&&<>"},
	{"entity windows-1252", "<title>&#150;</title>", "\u2013"},
	{"entity long name", "<title>&" + strings.Repeat("a", 60) + ";</title>", "&" + strings.Repeat("a", 60) + ";"},
	{"entity long name with prefix", "<title>&amp" + strings.Repeat("x", 60) + "</title>", "&" + strings.Repeat("x", 60)},

	{"whitespace collapsed", "<title>\n  Getting\tstarted \r\n |  Docs \f\n</title>", "Getting started | Docs"},
	{"whitespace only", "<title> \n\t </title>", ""},
	{"vertical tab kept", "<title>a\vb</title>", "a\vb"},
	{"non-ASCII", "<title>Café – 文档 🚀</title>", "Café – 文档 🚀"},
	{"invalid UTF-8", "<title>bad \xff\xfe byte</title>", "bad \uFFFD\uFFFD byte"},
	{"truncated rune", "<title>cut \xe2\x82 here</title>", "cut \uFFFD\uFFFD here"},
	{"NUL byte", "<title>a\x00b</title>", "a\uFFFDb"},

	{"absent", "<html><head></head><body>No title here</body></html>", ""},
	{"empty body", "", ""},
	{"empty title wins", "<title></title><title>Second</title>", ""},
	{"first title wins", "<title>One</title><title>Two</title>", "One"},
	{"title in body", "<body><p>Text</p><title>Late</title></body>", "Late"},
	{"end tag before start", "</title><title>Docs</title>", "Docs"},
	{"longer tag names", "<titles>No</titles><titlex>No</titlex><tit>No</tit><title>Yes</title>", "Yes"},
	{"space after less-than", "< title>No</title>", ""},
	{"markup in title", "<title><b>Bold</b> &amp; <i>it</i></title>", "<b>Bold</b> & <i>it</i>"},
	{"less-than in title", "<title>a < b << c</title>", "a < b << c"},
	{"near end tags in title", "<title>x </titlex> </tit </ y</title>", "x </titlex> </tit </ y"},
	{"end tag prefix then end tag", "<title>a </ti</title>", "a </ti"},
	{"less-than before end tag", "<title>a <</title>", "a <"},

	{"comment hides title", "<!-- <title>Hidden</title> --><title>Shown</title>", "Shown"},
	{"comment with dashes", "<!-- a -- b - <title>Hidden</title> ---><title>Shown</title>", "Shown"},
	{"comment abrupt close", "<!--><title>Shown</title>", "Shown"},
	{"comment abrupt close dash", "<!---><title>Shown</title>", "Shown"},
	{"comment empty", "<!----><title>Shown</title>", "Shown"},
	{"comment end bang", "<!-- x --!><title>Shown</title>", "Shown"},
	{"comment bang without close", "<!-- x --!- <title>Hidden</title> --><title>Shown</title>", "Shown"},
	{"comment bang at start", "<!--!> <title>Hidden</title> --><title>Shown</title>", "Shown"},
	{"comment unclosed", "<!-- <title>Hidden</title>", ""},
	{"comment in title is text", "<title>a <!-- b --> c</title>", "a <!-- b --> c"},
	{"doctype", "<!DOCTYPE html PUBLIC \"x\"><title>Docs</title>", "Docs"},
	{"bogus comment", "<!x <title>Hidden</title> ><title>Shown</title>", "Shown"},
	{"empty markup", "<!><title>Shown</title>", "Shown"},
	{"processing instruction", "<?xml version=\"1.0\"?><title>Docs</title>", "Docs"},
	{"end tag bogus", "</ <title>Hidden</title> ><title>Shown</title>", "Shown"},
	{"empty end tag", "</><title>Shown</title>", "Shown"},

	{"script hides title", `<script>var t = "<title>Hidden</title>";</script><title>Shown</title>`, "Shown"},
	{"script end tag uppercase", "<script>x</SCRIPT\n><title>Shown</title>", "Shown"},
	{"script near end tags", "<script>a</scriptx><title>Hidden</title></scrip </script><title>Shown</title>", "Shown"},
	{"script unclosed", "<script><title>Hidden</title>", ""},
	{"script with attributes", `<script type="text/javascript" src="a>b"></script><title>Shown</title>`, "Shown"},
	{"style hides title", "<style>/* <title>Hidden</title> */</style><title>Shown</title>", "Shown"},
	{"scripts tag is not script", "<scripts><title>Shown</title>", "Shown"},
	{"attribute hides title", `<meta content="<title>Hidden</title>"><title>Shown</title>`, "Shown"},

	{"unterminated title", "<title>Partial text", "Partial text"},
	{"unterminated title in end tag", "<title>Partial </tit", "Partial </tit"},
	{"unterminated title after end tag name", "<title>Partial</title", "Partial"},
	{"unterminated entity", "<title>AT&amp", "AT&"},
	{"unterminated start tag", `<title id="x`, ""},
	{"unterminated start tag name", "<title", ""},
}

// titleScanChunks scans body as one response in writes of chunk bytes (one
// write if chunk is 0) and returns the title.
func titleScanChunks(contentEncoding string, body []byte, chunk int) string {
	var s titleScanner
	s.reset(contentEncoding)
	if chunk <= 0 {
		chunk = len(body) + 1
	}
	for len(body) > 0 {
		n := min(chunk, len(body))
		s.Write(body[:n])
		body = body[n:]
	}
	return s.Title()
}

func titleGzipBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	if _, err := w.Write(data); err != nil {
		t.Fatalf("gzip write failed: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("gzip close failed: %v", err)
	}
	return out.Bytes()
}

func titleBrotliBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := brotli.NewWriter(&out)
	if _, err := w.Write(data); err != nil {
		t.Fatalf("brotli write failed: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("brotli close failed: %v", err)
	}
	return out.Bytes()
}

func titleZstdBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	encoder, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatalf("creating zstd encoder failed: %v", err)
	}
	defer encoder.Close()
	return encoder.EncodeAll(data, nil)
}

// titleZstdStreamBytes compresses data as a zstd stream with several blocks and
// no declared content size, the way a server streaming a response does.
func titleZstdStreamBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	encoder, err := zstd.NewWriter(&out, zstd.WithWindowSize(1<<20))
	if err != nil {
		t.Fatalf("creating zstd encoder failed: %v", err)
	}
	for len(data) > 0 {
		n := min(8<<10, len(data))
		if _, err := encoder.Write(data[:n]); err != nil {
			t.Fatalf("zstd write failed: %v", err)
		}
		if err := encoder.Flush(); err != nil {
			t.Fatalf("zstd flush failed: %v", err)
		}
		data = data[n:]
	}
	if err := encoder.Close(); err != nil {
		t.Fatalf("zstd close failed: %v", err)
	}
	return out.Bytes()
}

// titleRandomText returns n bytes of printable text that compresses poorly.
func titleRandomText(seed uint64, n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:"
	random := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]byte, n)
	for i := range out {
		out[i] = alphabet[random.IntN(len(alphabet))]
	}
	return out
}

// titleTestPage returns an HTML page of about size bytes shaped like a
// rendered docs page: a head with meta and link tags, then the title,
// then a body.
func titleTestPage(title string, size int) []byte {
	var b bytes.Buffer
	b.WriteString("<!DOCTYPE html><html lang=\"en\"><head><meta charSet=\"utf-8\"/>")
	b.WriteString(`<meta name="viewport" content="width=device-width, initial-scale=1"/>`)
	for i := 0; i < 12; i++ {
		fmt.Fprintf(&b, `<link rel="preload" as="script" fetchPriority="low" href="/_next/static/chunks/%04d-0123456789abcdef.js"/>`, i)
	}
	b.WriteString("<!-- <title>Not this one</title> -->")
	if title != "" {
		fmt.Fprintf(&b, "<title>%s</title>", title)
	}
	b.WriteString(`<meta name="generator" content="GitBook"/></head><body><main><h1>Page</h1>`)
	for i := 0; b.Len() < size-len("</main></body></html>"); i++ {
		fmt.Fprintf(&b, "<p>Paragraph %d explains one step of the setup in plain words.</p>\n", i)
	}
	b.WriteString("</main></body></html>")
	return b.Bytes()
}

func TestTitleScannerTitles(t *testing.T) {
	for _, tc := range titleCases {
		t.Run(tc.name, func(t *testing.T) {
			got := titleScanChunks("", []byte(tc.body), 0)
			if got != tc.want {
				t.Errorf("title of %q = %q, want %q", tc.body, got, tc.want)
			}
		})
	}
}

func TestTitleScannerChunkBoundaries(t *testing.T) {
	for _, tc := range titleCases {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			for cut := 0; cut <= len(body); cut++ {
				var s titleScanner
				s.Write(body[:cut])
				s.Write(body[cut:])
				if got := s.Title(); got != tc.want {
					t.Errorf("title of %q split at byte %d = %q, want %q", tc.body, cut, got, tc.want)
				}
			}
			if got := titleScanChunks("", body, 1); got != tc.want {
				t.Errorf("title of %q in 1-byte writes = %q, want %q", tc.body, got, tc.want)
			}
		})
	}
}

func TestTitleScannerScanLimit(t *testing.T) {
	pad := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name string
		body string
		want string
	}{
		{"title after limit", pad(titleScanLimit) + "<title>Late</title>", ""},
		{"start tag across limit", pad(titleScanLimit-4) + "<title>Late</title>", ""},
		{"start tag ends at limit", pad(titleScanLimit-len("<title>")) + "<title>Late</title>", ""},
		{"text across limit", pad(titleScanLimit-len("<title>Cut")) + "<title>Cutoff</title>", "Cut"},
		{"end tag at limit", pad(titleScanLimit-len("<title>Fits</title>")) + "<title>Fits</title>", "Fits"},
		{"end tag name at limit", pad(titleScanLimit-len("<title>Fits</title")) + "<title>Fits</title>", "Fits"},
		// A partial end tag at the limit is text, as at the end of a document.
		{"end tag split by limit", pad(titleScanLimit-len("<title>Fits</ti")) + "<title>Fits</title>", "Fits</ti"},
		{"comment across limit", "<!--" + pad(titleScanLimit) + "--><title>Late</title>", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{0, 1000, 4096, 7} {
				if got := titleScanChunks("", []byte(tc.body), chunk); got != tc.want {
					t.Errorf("title in writes of %d bytes = %q, want %q", chunk, got, tc.want)
				}
			}
		})
	}
}

func TestTitleScannerTextLimit(t *testing.T) {
	euro := strings.Repeat("€", titleMaxBytes/3)
	tests := []struct {
		name string
		text string
		want string
	}{
		{"ASCII", strings.Repeat("a", 2000), strings.Repeat("a", titleMaxBytes)},
		{"two-byte runes", strings.Repeat("é", 1000), strings.Repeat("é", titleMaxBytes/2)},
		{"three-byte runes", strings.Repeat("€", 1000), euro},
		{"four-byte runes", strings.Repeat("🚀", 300), strings.Repeat("🚀", titleMaxBytes/4)},
		{"space at cut", strings.Repeat("a", titleMaxBytes) + " b", strings.Repeat("a", titleMaxBytes)},
		{"space before cut", strings.Repeat("a", titleMaxBytes-1) + " bc", strings.Repeat("a", titleMaxBytes-1)},
		{"entities", strings.Repeat("&amp;", 1500), strings.Repeat("&", titleMaxBytes)},
		{"invalid bytes", strings.Repeat("\xff", 2000), strings.Repeat("\uFFFD", titleMaxBytes/3)},
		{"invalid byte at cut", strings.Repeat("a", titleMaxBytes-2) + "\xff", strings.Repeat("a", titleMaxBytes-2)},
		{"rune at cut", strings.Repeat("a", titleMaxBytes-1) + "€x", strings.Repeat("a", titleMaxBytes-1)},
		{"exact limit", strings.Repeat("a", titleMaxBytes-3) + "€", strings.Repeat("a", titleMaxBytes-3) + "€"},
		{"long whitespace run", "a" + strings.Repeat(" \n", 5000) + "b", "a b"},
		{"whitespace before text", strings.Repeat(" ", 3000) + "a", "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte("<title>" + tc.text + "</title>")
			for _, chunk := range []int{0, 1, 100} {
				got := titleScanChunks("", body, chunk)
				if got != tc.want {
					t.Errorf("title in writes of %d bytes = %q (%d bytes), want %q (%d bytes)", chunk, got, len(got), tc.want, len(tc.want))
				}
				if len(got) > titleMaxBytes {
					t.Errorf("title in writes of %d bytes has %d bytes, want at most %d", chunk, len(got), titleMaxBytes)
				}
				if !utf8.ValidString(got) {
					t.Errorf("title in writes of %d bytes is not valid UTF-8: %q", chunk, got)
				}
			}
		})
	}
}

func TestTitleScannerEncodings(t *testing.T) {
	page := titleTestPage("Install &amp; configure | Docs", 10<<10)
	const want = "Install & configure | Docs"
	encoders := map[string]func(testing.TB, []byte) []byte{
		"gzip": titleGzipBytes,
		"zstd": titleZstdBytes,
		"br":   titleBrotliBytes,
	}
	tests := []struct {
		contentEncoding string
		encoder         string
	}{
		{"gzip", "gzip"},
		{"x-gzip", "gzip"},
		{"GZIP", "gzip"},
		{" gzip ", "gzip"},
		{"zstd", "zstd"},
		{"ZSTD", "zstd"},
		{"br", "br"},
		{"BR", "br"},
		{"identity", ""},
		{"IDENTITY", ""},
		{"", ""},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.contentEncoding), func(t *testing.T) {
			body := page
			if tc.encoder != "" {
				body = encoders[tc.encoder](t, page)
			}
			for _, chunk := range []int{0, 1, 7, 4096} {
				if got := titleScanChunks(tc.contentEncoding, body, chunk); got != want {
					t.Errorf("title in writes of %d bytes = %q, want %q", chunk, got, want)
				}
			}
		})
	}
}

func TestTitleScannerEncodedLimits(t *testing.T) {
	title := []byte("<html><head><title>Large page</title></head><body>")
	// The random tail makes the encoded body larger than titleScanLimit.
	large := append(append([]byte{}, title...), titleRandomText(1, 400<<10)...)
	// Whitespace compresses to almost nothing but counts as decoded HTML.
	late := append(bytes.Repeat([]byte(" "), titleScanLimit), title...)
	// The title ends just before the limit of decoded bytes.
	fits := append(bytes.Repeat([]byte(" "), titleScanLimit-len(title)), title...)

	encoded := map[string]func(testing.TB, []byte) []byte{
		"gzip": titleGzipBytes,
		"zstd": titleZstdStreamBytes,
		"br":   titleBrotliBytes,
	}
	for contentEncoding, encode := range encoded {
		t.Run(contentEncoding, func(t *testing.T) {
			largeBody := encode(t, large)
			if len(largeBody) <= titleScanLimit {
				t.Fatalf("encoded large page has %d bytes, want more than %d for this test", len(largeBody), titleScanLimit)
			}
			if got := titleScanChunks(contentEncoding, largeBody, 4096); got != "Large page" {
				t.Errorf("title of large page = %q, want %q from its first %d encoded bytes", got, "Large page", titleScanLimit)
			}
			if got := titleScanChunks(contentEncoding, encode(t, late), 4096); got != "" {
				t.Errorf("title after %d decoded bytes = %q, want none", titleScanLimit, got)
			}
			if got := titleScanChunks(contentEncoding, encode(t, fits), 4096); got != "Large page" {
				t.Errorf("title ending within %d decoded bytes = %q, want %q", titleScanLimit, got, "Large page")
			}
		})
	}
}

func TestTitleScannerTruncatedStreams(t *testing.T) {
	page := append([]byte("<title>Truncated</title>"), titleRandomText(2, 60<<10)...)
	encoded := map[string][]byte{
		"gzip": titleGzipBytes(t, page),
		"zstd": titleZstdStreamBytes(t, page),
		"br":   titleBrotliBytes(t, page),
	}
	for contentEncoding, body := range encoded {
		t.Run(contentEncoding, func(t *testing.T) {
			for _, keep := range []int{len(body) - 1, len(body) - 4, len(body) / 2, len(body) / 4} {
				if got := titleScanChunks(contentEncoding, body[:keep], 1000); got != "Truncated" {
					t.Errorf("title of stream cut to %d of %d bytes = %q, want %q", keep, len(body), got, "Truncated")
				}
			}
			for _, keep := range []int{0, 1, 5} {
				if got := titleScanChunks(contentEncoding, body[:keep], 1000); got != "" {
					t.Errorf("title of stream cut to %d bytes = %q, want none", keep, got)
				}
			}
		})
	}
}

func TestTitleScannerCorruptBodies(t *testing.T) {
	page := []byte("<title>Plain</title>")
	gzipBody := titleGzipBytes(t, page)
	corruptGzip := append([]byte{}, gzipBody...)
	corruptGzip[len(corruptGzip)/2] ^= 0xff
	corruptZstd := titleZstdBytes(t, page)
	corruptZstd[len(corruptZstd)/2] ^= 0xff
	tests := []struct {
		name            string
		contentEncoding string
		body            []byte
	}{
		{"plain HTML as gzip", "gzip", page},
		{"plain HTML as zstd", "zstd", page},
		{"random bytes as gzip", "gzip", titleRandomText(3, 5000)},
		{"random bytes as zstd", "zstd", titleRandomText(4, 5000)},
		{"gzip magic then garbage", "gzip", append([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}, titleRandomText(5, 500)...)},
		{"zstd magic then garbage", "zstd", append([]byte{0x28, 0xb5, 0x2f, 0xfd}, titleRandomText(6, 500)...)},
		{"zstd body as gzip", "gzip", titleZstdBytes(t, page)},
		{"gzip body as zstd", "zstd", gzipBody},
		{"empty gzip body", "gzip", nil},
		{"empty zstd body", "zstd", nil},
		{"plain HTML as br", "br", page},
		{"random bytes as br", "br", titleRandomText(7, 5000)},
		{"gzip body as br", "br", gzipBody},
		{"empty br body", "br", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := titleScanChunks(tc.contentEncoding, tc.body, 100); got != "" {
				t.Errorf("title = %q, want none from a body that does not decode", got)
			}
		})
	}

	// A flipped byte may still decode to something, so only the output
	// rules are checked.
	for name, body := range map[string][]byte{"gzip": corruptGzip, "zstd": corruptZstd} {
		got := titleScanChunks(name, body, 100)
		if len(got) > titleMaxBytes || !utf8.ValidString(got) {
			t.Errorf("title of corrupt %s body = %q, want at most %d bytes of valid UTF-8", name, got, titleMaxBytes)
		}
	}
}

func TestTitleScannerUnsupportedEncodings(t *testing.T) {
	page := []byte("<title>Docs</title>")
	for _, contentEncoding := range []string{"deflate", "compress", "gzip, br", "br, gzip", "identity, gzip", "gzip,", "unknown"} {
		t.Run(contentEncoding, func(t *testing.T) {
			if got := titleScanChunks(contentEncoding, page, 0); got != "" {
				t.Errorf("title of plain body labelled %q = %q, want none", contentEncoding, got)
			}
			if got := titleScanChunks(contentEncoding, titleGzipBytes(t, page), 0); got != "" {
				t.Errorf("title of gzip body labelled %q = %q, want none", contentEncoding, got)
			}
		})
	}
}

func TestTitleScannerReuse(t *testing.T) {
	var s titleScanner
	if got := s.Title(); got != "" {
		t.Errorf("title of zero scanner without writes = %q, want none", got)
	}

	s.reset("")
	s.Write([]byte("<title>First"))
	s.Write([]byte("</title>"))
	if got := s.Title(); got != "First" {
		t.Errorf("title of zero scanner = %q, want %q", got, "First")
	}
	s.Write([]byte("<title>Ignored</title>"))
	if got := s.Title(); got != "First" {
		t.Errorf("second Title after a write = %q, want %q unchanged", got, "First")
	}

	s.reset("gzip")
	s.Write(titleGzipBytes(t, []byte("<title>Second</title>")))
	if got := s.Title(); got != "Second" {
		t.Errorf("title after reset to gzip = %q, want %q", got, "Second")
	}
	if s.body != nil {
		t.Errorf("encoded body still held after Title, want it returned to the pool")
	}

	s.reset("zstd")
	s.Write([]byte("<title>Abandoned"))
	s.reset("")
	if s.body != nil {
		t.Errorf("encoded body still held after reset, want it returned to the pool")
	}
	s.Write([]byte("<title>Third</title>"))
	if got := s.Title(); got != "Third" {
		t.Errorf("title after reset from an abandoned zstd body = %q, want %q", got, "Third")
	}

	s.reset("")
	s.Write([]byte("<title>Open"))
	s.reset("")
	s.Write([]byte("no title</title>"))
	if got := s.Title(); got != "" {
		t.Errorf("title after reset inside a title = %q, want none", got)
	}
}

func TestTitleScannerIdentityAllocations(t *testing.T) {
	page := titleTestPage("Install and configure | Docs", 10<<10)
	noTitle := titleTestPage("", 10<<10)
	var s titleScanner
	for name, body := range map[string][]byte{"title": page, "no title": noTitle} {
		allocs := testing.AllocsPerRun(100, func() {
			s.reset("")
			for rest := body; len(rest) > 0; {
				n := min(4096, len(rest))
				s.Write(rest[:n])
				rest = rest[n:]
			}
		})
		if allocs != 0 {
			t.Errorf("reset and writes of a page with %s allocated %.1f times per run, want 0", name, allocs)
		}
	}
}

// TestTitleScannerOverHTTP scans bodies as a client receives them from a
// loopback server that flushes small chunks.
func TestTitleScannerOverHTTP(t *testing.T) {
	page := titleTestPage("Over the wire &#8211; Docs", 30<<10)
	const want = "Over the wire – Docs"
	bodies := map[string][]byte{
		"":     page,
		"gzip": titleGzipBytes(t, page),
		"zstd": titleZstdStreamBytes(t, page),
	}
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		contentEncoding := r.URL.Query().Get("encoding")
		body := bodies[contentEncoding]
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if contentEncoding != "" {
			w.Header().Set("Content-Encoding", contentEncoding)
		}
		flusher := w.(http.Flusher)
		for len(body) > 0 {
			n := min(333, len(body))
			if _, err := w.Write(body[:n]); err != nil {
				return
			}
			flusher.Flush()
			body = body[n:]
		}
	}))
	defer server.Close()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()

	for contentEncoding := range bodies {
		t.Run(fmt.Sprintf("%q", contentEncoding), func(t *testing.T) {
			response, err := client.Get(server.URL + "/?encoding=" + contentEncoding)
			if err != nil {
				t.Fatalf("GET failed: %v", err)
			}
			defer response.Body.Close()

			var s titleScanner
			s.reset(response.Header.Get("Content-Encoding"))
			buffer := make([]byte, 1000)
			for {
				n, err := response.Body.Read(buffer)
				s.Write(buffer[:n])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("reading body failed: %v", err)
				}
			}
			if got := s.Title(); got != want {
				t.Errorf("title = %q, want %q", got, want)
			}
		})
	}
}

// titleReference computes the title of raw <title> content directly from
// html.UnescapeString, as a check on the streaming decoder.
func titleReference(raw string) string {
	decoded := html.UnescapeString(raw)
	var collapsed []byte
	space := false
	for i := 0; i < len(decoded); i++ {
		c := decoded[i]
		if titleIsSpace(c) {
			space = len(collapsed) > 0
			continue
		}
		if space {
			collapsed = append(collapsed, ' ')
			space = false
		}
		if c == 0 {
			collapsed = append(collapsed, "\uFFFD"...)
			continue
		}
		collapsed = append(collapsed, c)
	}

	var out []byte
	for _, r := range string(collapsed) {
		if len(out)+utf8.RuneLen(r) > titleMaxBytes {
			break
		}
		out = utf8.AppendRune(out, r)
	}
	return strings.TrimRight(string(out), " ")
}

// titleHasLongNumericReference reports whether raw has a numeric character
// reference too long for the scanner to hold back whole.
func titleHasLongNumericReference(raw []byte) bool {
	for i := 0; i+1 < len(raw); i++ {
		if raw[i] != '&' || raw[i+1] != '#' {
			continue
		}
		n := 0
		for j := i + 2; j < len(raw) && titleIsEntityByte(raw[j]) && raw[j] != ';' && raw[j] != '#'; j++ {
			n++
		}
		if n >= titleEntityLimit-3 {
			return true
		}
	}
	return false
}

func FuzzTitleScanner(f *testing.F) {
	for _, tc := range titleCases {
		f.Add([]byte(tc.body), []byte{3, 1, 7})
	}
	f.Add(titleTestPage("A &amp; B", 2000), []byte{255, 0, 17})
	f.Add([]byte("<title>&#0000000000000000065;"), []byte{0})

	var gzipBuffer bytes.Buffer
	gzipWriter := gzip.NewWriter(&gzipBuffer)
	zstdEncoder, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		f.Fatalf("creating zstd encoder failed: %v", err)
	}

	f.Fuzz(func(t *testing.T, body []byte, sizes []byte) {
		checkOutput := func(what, got string) {
			if len(got) > titleMaxBytes {
				t.Errorf("%s: title has %d bytes, want at most %d", what, len(got), titleMaxBytes)
			}
			if !utf8.ValidString(got) {
				t.Errorf("%s: title %q is not valid UTF-8", what, got)
			}
			if strings.Trim(got, " \t\n\f\r") != got {
				t.Errorf("%s: title %q has leading or trailing whitespace", what, got)
			}
			if strings.Contains(got, "  ") || strings.ContainsAny(got, "\t\n\f\r\x00") {
				t.Errorf("%s: title %q has uncollapsed whitespace or NUL", what, got)
			}
		}

		// Identity body: one write against writes sized by sizes.
		want := titleScanChunks("", body, 0)
		checkOutput("one write", want)
		var s titleScanner
		rest := body
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(sizes) > 0 {
				n = min(int(sizes[i%len(sizes)])+1, len(rest))
			}
			s.Write(rest[:n])
			rest = rest[n:]
		}
		if got := s.Title(); got != want {
			t.Errorf("title in writes sized by %v = %q, one write = %q", sizes, got, want)
		}

		// Encoded bodies that fit the limit decode to the same title.
		gzipBuffer.Reset()
		gzipWriter.Reset(&gzipBuffer)
		_, _ = gzipWriter.Write(body)
		_ = gzipWriter.Close()
		encoded := map[string][]byte{
			"gzip": gzipBuffer.Bytes(),
			"zstd": zstdEncoder.EncodeAll(body, nil),
		}
		for contentEncoding, data := range encoded {
			if len(data) > titleScanLimit {
				continue
			}
			if got := titleScanChunks(contentEncoding, data, 1+len(sizes)); got != want {
				t.Errorf("title of %s body = %q, identity = %q", contentEncoding, got, want)
			}
		}

		// Arbitrary bytes labelled as encoded must not break the scanner.
		for _, contentEncoding := range []string{"gzip", "zstd"} {
			checkOutput(contentEncoding+" garbage", titleScanChunks(contentEncoding, body, 0))
		}

		// Title text must match html.UnescapeString applied to the whole text.
		raw := bytes.ReplaceAll(body, []byte("<"), []byte("{"))
		if len(raw) < titleScanLimit-len("<title></title>") && !titleHasLongNumericReference(raw) {
			got := titleScanChunks("", []byte("<title>"+string(raw)+"</title>"), 1+len(sizes))
			if want := titleReference(string(raw)); got != want {
				t.Errorf("title of text %q = %q, reference = %q", raw, got, want)
			}
		}
	})
}

func TestTitleCacheKey(t *testing.T) {
	c := newTitleCache()
	request := func(host, target string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.Host = host
		return r
	}
	etag := http.Header{"Etag": {`"v1"`}}

	base := c.key(request("docs.example.com", "/a?x=1"), etag)
	if base == 0 {
		t.Fatal("key with an ETag is 0, want a key")
	}
	same := map[string]http.Header{
		"same ETag":                     etag,
		"Vary: Accept-Encoding":         {"Etag": {`"v1"`}, "Vary": {"Accept-Encoding"}},
		"encode's gzip suffix":          {"Etag": {`"v1-gzip"`}, "Content-Encoding": {"gzip"}},
		"encode's zstd suffix":          {"Etag": {`"v1-zstd"`}, "Content-Encoding": {"zstd"}},
		"Last-Modified besides an ETag": {"Etag": {`"v1"`}, "Last-Modified": {"Tue, 01 Dec 2026 09:12:44 GMT"}},
	}
	for variant, header := range same {
		if key := c.key(request("docs.example.com", "/a?x=1"), header); key != base {
			t.Errorf("%s gave key %x, want the key %x of the plain ETag", variant, key, base)
		}
	}

	others := map[string]uint64{
		"host":                       c.key(request("api.example.com", "/a?x=1"), etag),
		"path":                       c.key(request("docs.example.com", "/b?x=1"), etag),
		"query":                      c.key(request("docs.example.com", "/a?x=2"), etag),
		"etag":                       c.key(request("docs.example.com", "/a?x=1"), http.Header{"Etag": {`"v2"`}}),
		"suffix of another encoding": c.key(request("docs.example.com", "/a?x=1"), http.Header{"Etag": {`"v1-gzip"`}, "Content-Encoding": {"br"}}),
	}
	for part, key := range others {
		if key == base {
			t.Errorf("another %s gave the same key", part)
		}
		if key == 0 {
			t.Errorf("key with another %s is 0", part)
		}
	}

	none := map[string]http.Header{
		"no validator":          {},
		"only Last-Modified":    {"Last-Modified": {"Tue, 01 Dec 2026 09:12:44 GMT"}},
		"Vary: Accept-Language": {"Etag": {`"v1"`}, "Vary": {"Accept-Encoding, Accept-Language"}},
		"Vary: *":               {"Etag": {`"v1"`}, "Vary": {"*"}},
		"Vary on a second line": {"Etag": {`"v1"`}, "Vary": {"Accept-Encoding", "Cookie"}},
	}
	for variant, header := range none {
		if key := c.key(request("docs.example.com", "/a"), header); key != 0 {
			t.Errorf("key with %s = %x, want 0", variant, key)
		}
	}
}

func TestUnencodedETag(t *testing.T) {
	tests := []struct {
		etag, coding, want string
	}{
		{`"abc-gzip"`, "gzip", `"abc"`},
		{`"abc-br"`, " br ", `"abc"`},
		{`"abc-gzip"`, "", `"abc-gzip"`},
		{`"abc-gzip"`, "zstd", `"abc-gzip"`},
		{`W/"abc-gzip"`, "gzip", `W/"abc-gzip"`},
		{`"abc"`, "gzip", `"abc"`},
		{`"-gzip"`, "gzip", `""`},
	}
	for _, tt := range tests {
		if got := unencodedETag(tt.etag, tt.coding); got != tt.want {
			t.Errorf("unencodedETag(%s, %q) = %s, want %s", tt.etag, tt.coding, got, tt.want)
		}
	}
}

func TestTitleCacheBound(t *testing.T) {
	c := newTitleCache()
	c.put(0, pageTitle{text: "never"})
	if _, ok := c.get(0); ok {
		t.Error("key 0 was cached")
	}
	for key := uint64(1); key <= titleCacheSize; key++ {
		c.put(key, pageTitle{text: "title"})
	}
	if _, ok := c.get(1); !ok {
		t.Error("the first title is gone before the cache was full")
	}
	c.put(titleCacheSize+1, pageTitle{text: "last"})
	if _, ok := c.get(1); ok {
		t.Error("the first title is still cached after the cache overflowed")
	}
	if title, ok := c.get(titleCacheSize + 1); !ok || title.text != "last" {
		t.Errorf("get(last) = %+v, %v; want last, true", title, ok)
	}
	if n := len(c.titles); n != 1 {
		t.Errorf("%d titles cached after the overflow, want 1", n)
	}
}
