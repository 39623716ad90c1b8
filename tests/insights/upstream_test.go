package insights

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// The imitation's response to a beacon. The status is not 200, so that a
// test can tell the upstream's response from one that Caddy made up.
const (
	upstreamBeaconStatus = http.StatusAccepted
	upstreamBeaconBody   = `{"ok":true}`
	upstreamBeaconHeader = "X-Upstream-Beacon"
	upstreamBeaconMark   = "recorded"
)

// Paths of the imitation's pages with fixed bodies. Every other GET gets
// defaultPageHTML.
const (
	titledPath   = "/docs/title/"   // + a content coding: identity, gzip, br, zstd
	chunkedPath  = "/docs/chunked/" // + identity or gzip, written in small flushed chunks
	untitledPath = "/docs/untitled"

	// htmlForRSCPrefix starts the paths where the imitation sends a whole
	// HTML page in response to an RSC request, as a misconfigured upstream
	// would.
	htmlForRSCPrefix = "/html-for-rsc/"
)

// Bodies of the imitation's responses, and the titles the handler should
// read from them.
const (
	titledPageHTML   = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="generator" content="GitBook (1a2b3c4)"><link rel="canonical" href="https://docs.example.com/guides/install"><title>A &amp; B</title><meta name="robots" content="index, follow"></head><body><main><h1>A &amp; B</h1><p>Install the package, then configure it.</p></main></body></html>`
	titledPageTitle  = "A & B"
	untitledPageHTML = `<!doctype html><html lang="en"><head><meta charset="utf-8"></head><body><p>No title here.</p></body></html>`
	defaultPageHTML  = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Docs page</title></head><body><p>Docs page</p></body></html>`
	chunkedPageTitle = "Split & Title"
	rscPayload       = "1:\"$Sreact.fragment\"\n0:{\"P\":null,\"b\":\"1a2b3c4\",\"c\":[\"\",\"docs\"],\"q\":\"\"}\n"
)

// How the chunked pages are written: the pause after each flushed piece,
// and the size of each piece of the gzip-encoded page.
const (
	chunkDelay    = 5 * time.Millisecond
	gzipChunkSize = 7
)

// chunkedIdentityHTML is written in these pieces, so that the title's
// start tag, a character reference and the end tag are each split.
var chunkedIdentityHTML = []string{
	`<!doctype html><html lang="en"><head><meta charset="utf-8"><ti`,
	`tle>Split &a`,
	`mp; Ti`,
	`tle</ti`,
	`tle></head><body><p>Streamed in pieces.</p></body></html>`,
}

// upstreamPage is a page of the imitation: its Content-Encoding and the
// pieces of its body as they are written. A page of one piece is sent with
// a Content-Length, and a page of several is flushed after each piece.
type upstreamPage struct {
	encoding string
	chunks   [][]byte
}

// body returns the bytes of the page as sent.
func (p upstreamPage) body() []byte {
	return bytes.Join(p.chunks, nil)
}

// receivedBeacon is a beacon request as the imitation received it.
type receivedBeacon struct {
	path   string
	query  string
	header http.Header
	body   []byte
}

// upstream imitates a GitBook site behind Caddy's reverse_proxy. It serves
// HTML pages, React Server Component payloads to requests with RSC: 1, and
// the insights beacon endpoint, which records each request it receives.
type upstream struct {
	server *httptest.Server
	pages  map[string]upstreamPage // by path; not changed after start

	mu      sync.Mutex
	beacons []receivedBeacon
}

// startUpstream starts the imitation on 127.0.0.1 with a port chosen by
// the system.
func startUpstream() (*upstream, error) {
	pages, err := buildPages()
	if err != nil {
		return nil, err
	}
	u := &upstream{pages: pages}
	u.server = httptest.NewServer(u)
	return u, nil
}

// buildPages encodes the titled page in each content coding and splits the
// chunked pages.
func buildPages() (map[string]upstreamPage, error) {
	pages := map[string]upstreamPage{
		untitledPath: {chunks: [][]byte{[]byte(untitledPageHTML)}},
	}
	for _, encoding := range []string{"identity", "gzip", "br", "zstd"} {
		body, err := encode(encoding, []byte(titledPageHTML))
		if err != nil {
			return nil, err
		}
		page := upstreamPage{encoding: encoding, chunks: [][]byte{body}}
		if encoding == "identity" {
			page.encoding = ""
		}
		pages[titledPath+encoding] = page
	}

	var identity upstreamPage
	for _, chunk := range chunkedIdentityHTML {
		identity.chunks = append(identity.chunks, []byte(chunk))
	}
	pages[chunkedPath+"identity"] = identity

	gzipped, err := encode("gzip", []byte(strings.Join(chunkedIdentityHTML, "")))
	if err != nil {
		return nil, err
	}
	compressed := upstreamPage{encoding: "gzip"}
	for len(gzipped) > 0 {
		n := min(gzipChunkSize, len(gzipped))
		compressed.chunks = append(compressed.chunks, gzipped[:n])
		gzipped = gzipped[n:]
	}
	pages[chunkedPath+"gzip"] = compressed
	return pages, nil
}

// encode compresses data in a content coding: identity, gzip, br or zstd.
func encode(encoding string, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	var w io.WriteCloser
	switch encoding {
	case "identity":
		return data, nil
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "br":
		w = brotli.NewWriter(&buf)
	case "zstd":
		encoder, err := zstd.NewWriter(&buf)
		if err != nil {
			return nil, fmt.Errorf("creating a zstd encoder failed: %w", err)
		}
		w = encoder
	default:
		return nil, fmt.Errorf("content coding %q is not one of identity, gzip, br, zstd", encoding)
	}
	if _, err := w.Write(data); err != nil {
		return nil, fmt.Errorf("%s encoding failed: %w", encoding, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("%s encoding failed: %w", encoding, err)
	}
	return buf.Bytes(), nil
}

// address returns the host and port that reverse_proxy dials.
func (u *upstream) address() string {
	return u.server.Listener.Addr().String()
}

func (u *upstream) close() {
	u.server.Close()
}

// takeBeacons returns the beacon requests received since the last call and
// clears the list.
func (u *upstream) takeBeacons() []receivedBeacon {
	u.mu.Lock()
	defer u.mu.Unlock()
	beacons := u.beacons
	u.beacons = nil
	return beacons
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/~gitbook/__evt"):
		u.serveBeacon(w, r)
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	case r.Header.Get("RSC") == "1" && !strings.HasPrefix(r.URL.Path, htmlForRSCPrefix):
		serveRSC(w)
	default:
		page, ok := u.pages[r.URL.Path]
		if !ok {
			page = upstreamPage{chunks: [][]byte{[]byte(defaultPageHTML)}}
		}
		servePage(w, page)
	}
}

// serveBeacon records the request and responds with upstreamBeaconStatus,
// a JSON body and a marker header.
func (u *upstream) serveBeacon(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body failed: "+err.Error(), http.StatusBadRequest)
		return
	}
	u.mu.Lock()
	u.beacons = append(u.beacons, receivedBeacon{
		path:   r.URL.Path,
		query:  r.URL.RawQuery,
		header: r.Header.Clone(),
		body:   body,
	})
	u.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(upstreamBeaconHeader, upstreamBeaconMark)
	w.WriteHeader(upstreamBeaconStatus)
	_, _ = io.WriteString(w, upstreamBeaconBody)
}

// setSiteHeaders sets some of the headers that GitBook's renderer puts on
// every page and RSC response.
func setSiteHeaders(h http.Header) {
	h.Set("Vary", "rsc, next-router-state-tree, next-router-prefetch, next-router-segment-prefetch, accept-encoding, accept")
	h.Set("X-Gitbook-Route-Type", "static")
	h.Set("X-Content-Type-Options", "nosniff")
}

func serveRSC(w http.ResponseWriter) {
	setSiteHeaders(w.Header())
	w.Header().Set("Content-Type", "text/x-component")
	_, _ = io.WriteString(w, rscPayload)
}

// servePage writes a page in one piece with a Content-Length, or in
// several pieces with a flush and a short pause after each, so that
// reverse_proxy passes them on one by one.
func servePage(w http.ResponseWriter, page upstreamPage) {
	header := w.Header()
	setSiteHeaders(header)
	header.Set("Content-Type", "text/html; charset=utf-8")
	if page.encoding != "" {
		header.Set("Content-Encoding", page.encoding)
	}

	if len(page.chunks) == 1 {
		header.Set("Content-Length", fmt.Sprint(len(page.chunks[0])))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(page.chunks[0])
		return
	}

	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	for _, chunk := range page.chunks {
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		time.Sleep(chunkDelay)
	}
}
