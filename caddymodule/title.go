package caddymodule

import (
	"bytes"
	"compress/gzip"
	"hash/maphash"
	"html"
	"io"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

const (
	// titleScanLimit is the number of bytes of decoded HTML the scanner reads
	// and, for an encoded body, the number of encoded bytes it keeps.
	titleScanLimit = 64 << 10

	// titleMaxBytes is the maximum length of a title in bytes.
	titleMaxBytes = 1024

	// titleTextLimit is the number of collapsed title bytes kept. The extra
	// utf8.UTFMax bytes let titleClean decide every rune that starts before
	// titleMaxBytes, so the cut does not depend on where collection stopped.
	titleTextLimit = titleMaxBytes + utf8.UTFMax

	// titleEntityLimit is the maximum length of a character reference held
	// back until its end is seen. No named reference is longer than 33 bytes
	// ("&CounterClockwiseContourIntegral;").
	titleEntityLimit = 40

	// titleZstdMaxWindow is the largest zstd window accepted. RFC 9659 caps
	// the window of the zstd content coding at 8 MB.
	titleZstdMaxWindow = 8 << 20

	// titleReadSize is the size of each read from a decoder.
	titleReadSize = 4 << 10

	// titleReplacement is U+FFFD REPLACEMENT CHARACTER in UTF-8.
	titleReplacement = "\uFFFD"

	// titleMaxEmptyReads is the number of (0, nil) reads in a row after which
	// a decoder is treated as stuck.
	titleMaxEmptyReads = 100
)

// titleEncoding is a Content-Encoding the scanner can read.
type titleEncoding uint8

const (
	titleIdentity titleEncoding = iota
	titleGzip
	titleZstd
	titleBrotli
	titleUnsupported
)

// titleState is the tokenizer state between two bytes of HTML.
type titleState uint8

const (
	titleStateData          titleState = iota // text outside any tag
	titleStateTagOpen                         // after '<'
	titleStateEndTagOpen                      // after "</"
	titleStateTagName                         // inside a tag name
	titleStateAttributes                      // inside a tag, outside attribute values
	titleStateBeforeValue                     // after '=' in a tag
	titleStateValueDouble                     // inside a double-quoted attribute value
	titleStateValueSingle                     // inside a single-quoted attribute value
	titleStateValueUnquoted                   // inside an unquoted attribute value
	titleStateMarkup                          // after "<!"
	titleStateMarkupDash                      // after "<!-"
	titleStateComment                         // inside "<!--" ... "-->"
	titleStateCommentBang                     // after "--!" inside a comment
	titleStateBogus                           // inside "<!...>", "<?...>" or "</...>" up to '>'
	titleStateRawText                         // inside the content of <script> or <style>
	titleStateTitle                           // inside the content of <title>
	titleStateDone                            // title complete; the rest is ignored
)

// Values of titleScanner.dashes besides 0 to 2 consecutive dashes.
const (
	titleCommentStart     = 3 // right after "<!--"
	titleCommentStartDash = 4 // right after "<!---"
)

// titleScanner extracts the text of the first <title> element from an HTML
// response body observed in chunks of any size. It reads at most the first
// titleScanLimit bytes of decoded HTML. For an identity body it keeps only
// the title text, a partial end tag and a partial character reference.
// A gzip or zstd body is copied, up to titleScanLimit encoded bytes, and
// decoded when Title is called.
//
// The zero value scans an identity-encoded body. A scanner is not safe for
// concurrent use.
//
// Comments, bogus comments, attribute values and the content of <script>
// and <style> are skipped, following the HTML tokenizer closely enough for
// real pages. Title text is decoded with html.UnescapeString, runs of ASCII
// whitespace become one space, leading and trailing whitespace is removed,
// NUL and invalid UTF-8 bytes become U+FFFD, and the result is cut to at
// most titleMaxBytes bytes on a rune boundary.
//
// NOTE: a <title> inside inline <svg> counts like any other. Browsers ignore
// it for document.title.
type titleScanner struct {
	titleScanState

	// Only the first nameLen, holdLen, entityLen and textLen bytes of
	// these arrays are read, so a reset leaves them as they are.
	name   [6]byte                // lowercase tag name, enough for "script"
	hold   [8]byte                // original bytes of a partial end tag
	entity [titleEntityLimit]byte // a character reference without its end yet
	text   [titleTextLimit]byte   // title text, whitespace already collapsed
}

// titleScanState is the part of a titleScanner that a reset clears.
type titleScanState struct {
	encoding titleEncoding
	state    titleState

	// found is set once a <title> start tag has been read.
	found bool
	// finished is set by Title; later writes are ignored.
	finished bool
	// endTag is set while reading an end tag.
	endTag bool
	// spacePending is set when whitespace followed the last title byte.
	spacePending bool

	nameLen   uint8 // bytes in name, or len(name)+1 once the name is longer
	dashes    uint8 // consecutive '-' in a comment, or a titleCommentStart value
	holdLen   uint8 // bytes of endName matched, kept in hold
	entityLen uint8 // bytes in entity

	seen    int // bytes of decoded HTML scanned
	textLen int // bytes in text

	// endName is the lowercase end tag that closes the current raw text.
	endName string

	body     *titleEncodedBody // encoded bytes, nil until the first write
	title    string            // result of Title
	titleCut bool              // whether Title cut the title to titleMaxBytes
}

// titleEncodedBody holds the start of an encoded body and the buffers
// used to decode it. It is pooled because it is large.
type titleEncodedBody struct {
	data    []byte
	reader  bytes.Reader
	scratch [titleReadSize]byte
}

var titleBodyPool = sync.Pool{
	New: func() any {
		return &titleEncodedBody{data: make([]byte, 0, titleScanLimit)}
	},
}

var titleGzipPool = sync.Pool{
	New: func() any { return new(gzip.Reader) },
}

var titleBrotliPool = sync.Pool{
	New: func() any { return brotli.NewReader(nil) },
}

// titleZstdPool holds *zstd.Decoder values. With a concurrency of 1 a
// decoder starts no goroutines, so the pool may drop one without Close.
//
// NOTE: the decoder allocates history for the window a frame declares, up
// to titleZstdMaxWindow plus 64 KB, although at most titleScanLimit bytes
// are read. Pooled decoders keep that memory until the pool is cleared.
var titleZstdPool = sync.Pool{
	New: func() any {
		decoder, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(titleZstdMaxWindow),
			zstd.WithDecodeBuffersBelow(0),
		)
		if err != nil {
			return nil
		}
		return decoder
	},
}

// reset prepares the scanner for a new response whose Content-Encoding
// header value is contentEncoding.
func (s *titleScanner) reset(contentEncoding string) {
	s.releaseBody()
	s.titleScanState = titleScanState{encoding: titleParseEncoding(contentEncoding)}
}

// titleParseEncoding maps a Content-Encoding value to the decoder the
// scanner uses. A list of several codings is not supported.
func titleParseEncoding(value string) titleEncoding {
	value = strings.TrimSpace(value)
	switch {
	case value == "", strings.EqualFold(value, "identity"):
		return titleIdentity
	case strings.EqualFold(value, "gzip"), strings.EqualFold(value, "x-gzip"):
		return titleGzip
	case strings.EqualFold(value, "zstd"):
		return titleZstd
	case strings.EqualFold(value, "br"):
		return titleBrotli
	}
	return titleUnsupported
}

// Write observes the next chunk of the body exactly as sent to the client.
// It does not keep p.
func (s *titleScanner) Write(p []byte) {
	if s.finished || len(p) == 0 {
		return
	}
	switch s.encoding {
	case titleIdentity:
		s.observe(p)
	case titleGzip, titleZstd, titleBrotli:
		s.keep(p)
	}
}

// Title returns the text of the first <title> element, or "" if the scanned
// part of the body has none. The first call ends the scan: a title still
// open at that point ends with the text seen so far, as it does when a
// browser reaches the end of the document, except that a final "</title"
// without its '>' still closes it.
func (s *titleScanner) Title() string {
	if s.finished {
		return s.title
	}
	s.finished = true

	if s.body != nil {
		s.decodeBody()
		s.releaseBody()
	}
	if s.state == titleStateTitle {
		// A complete "</title" at the end is taken as the end tag, which
		// is what it is when the scan limit cut the '>' off.
		if int(s.holdLen) == len(s.endName) {
			s.holdLen = 0
		}
		s.flushHold()
		s.flushEntity()
	}
	if s.found {
		s.title, s.titleCut = titleClean(s.text[:s.textLen])
	}
	return s.title
}

// observe scans decoded HTML up to titleScanLimit bytes in total.
func (s *titleScanner) observe(p []byte) {
	if s.state == titleStateDone || s.seen >= titleScanLimit {
		return
	}
	if room := titleScanLimit - s.seen; len(p) > room {
		p = p[:room]
	}
	s.seen += len(p)
	s.scan(p)
}

// keep copies encoded bytes up to titleScanLimit in total.
func (s *titleScanner) keep(p []byte) {
	if s.body == nil {
		s.body = titleBodyPool.Get().(*titleEncodedBody)
		s.body.data = s.body.data[:0]
	}
	room := titleScanLimit - len(s.body.data)
	if room <= 0 {
		return
	}
	if len(p) > room {
		p = p[:room]
	}
	s.body.data = append(s.body.data, p...)
}

func (s *titleScanner) releaseBody() {
	if s.body == nil {
		return
	}
	s.body.reader.Reset(nil)
	titleBodyPool.Put(s.body)
	s.body = nil
}

// decodeBody decodes the kept encoded bytes and scans the output. A
// truncated or corrupt stream contributes what decoded before the error.
func (s *titleScanner) decodeBody() {
	body := s.body
	body.reader.Reset(body.data)

	switch s.encoding {
	case titleGzip:
		decoder := titleGzipPool.Get().(*gzip.Reader)
		if decoder.Reset(&body.reader) == nil {
			s.scanDecoded(decoder, body.scratch[:])
		}
		titleGzipPool.Put(decoder)

	case titleZstd:
		decoder, _ := titleZstdPool.Get().(*zstd.Decoder)
		if decoder == nil {
			return
		}
		if decoder.Reset(&body.reader) == nil {
			s.scanDecoded(decoder, body.scratch[:])
		}
		// Reset(nil) drops the reference to body.reader before pooling.
		_ = decoder.Reset(nil)
		titleZstdPool.Put(decoder)

	case titleBrotli:
		decoder := titleBrotliPool.Get().(*brotli.Reader)
		if decoder.Reset(&body.reader) == nil {
			s.scanDecoded(decoder, body.scratch[:])
		}
		_ = decoder.Reset(bytes.NewReader(nil))
		titleBrotliPool.Put(decoder)
	}
}

// scanDecoded reads decoded HTML from decoder until the title is complete,
// titleScanLimit bytes are scanned, or the decoder fails.
func (s *titleScanner) scanDecoded(decoder io.Reader, buffer []byte) {
	emptyReads := 0
	for s.state != titleStateDone && s.seen < titleScanLimit {
		n, err := decoder.Read(buffer[:min(len(buffer), titleScanLimit-s.seen)])
		s.observe(buffer[:n])
		if err != nil {
			return
		}
		if n > 0 {
			emptyReads = 0
			continue
		}
		emptyReads++
		if emptyReads >= titleMaxEmptyReads {
			return
		}
	}
}

// scan runs the tokenizer over p. Every state consumes its input byte,
// except where a comment says the byte is scanned again in the new state.
func (s *titleScanner) scan(p []byte) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch s.state {
		case titleStateData:
			next := bytes.IndexByte(p[i:], '<')
			if next < 0 {
				return
			}
			i += next
			s.state = titleStateTagOpen

		case titleStateTagOpen:
			switch {
			case titleIsLetter(c):
				s.startTagName(c, false)
			case c == '!':
				s.state = titleStateMarkup
			case c == '/':
				s.state = titleStateEndTagOpen
			case c == '?':
				s.state = titleStateBogus
			default:
				// '<' not followed by a tag is text, and c may open a tag.
				s.state = titleStateData
				i--
			}

		case titleStateEndTagOpen:
			switch {
			case titleIsLetter(c):
				s.startTagName(c, true)
			case c == '>':
				s.state = titleStateData
			default:
				s.state = titleStateBogus
			}

		case titleStateTagName:
			for titleIsNameByte(c) && i+1 < len(p) {
				s.addNameByte(c)
				i++
				c = p[i]
			}
			switch {
			case titleIsSpace(c), c == '/':
				s.state = titleStateAttributes
			case c == '>':
				s.endOfTag()
			default:
				s.addNameByte(c)
			}

		case titleStateAttributes:
			for c != '>' && c != '=' {
				if i++; i == len(p) {
					return
				}
				c = p[i]
			}
			switch c {
			case '>':
				s.endOfTag()
			case '=':
				s.state = titleStateBeforeValue
			}

		case titleStateBeforeValue:
			switch {
			case titleIsSpace(c):
			case c == '"':
				s.state = titleStateValueDouble
			case c == '\'':
				s.state = titleStateValueSingle
			case c == '>':
				s.endOfTag()
			default:
				s.state = titleStateValueUnquoted
			}

		case titleStateValueDouble, titleStateValueSingle:
			quote := byte('"')
			if s.state == titleStateValueSingle {
				quote = '\''
			}
			next := bytes.IndexByte(p[i:], quote)
			if next < 0 {
				return
			}
			i += next
			s.state = titleStateAttributes

		case titleStateValueUnquoted:
			switch {
			case titleIsSpace(c):
				s.state = titleStateAttributes
			case c == '>':
				s.endOfTag()
			}

		case titleStateMarkup:
			if c == '-' {
				s.state = titleStateMarkupDash
			} else {
				// "<!" not followed by "--" starts a bogus comment, which
				// c may already close.
				s.state = titleStateBogus
				i--
			}

		case titleStateMarkupDash:
			if c == '-' {
				s.state = titleStateComment
				s.dashes = titleCommentStart
			} else {
				s.state = titleStateBogus
				i--
			}

		case titleStateComment:
			if s.dashes == 0 {
				next := bytes.IndexByte(p[i:], '-')
				if next < 0 {
					return
				}
				i += next
				c = '-'
			}
			s.commentByte(c)

		case titleStateCommentBang:
			switch c {
			case '>':
				s.state = titleStateData
			case '-':
				s.state = titleStateComment
				s.dashes = 1
			default:
				s.state = titleStateComment
				s.dashes = 0
			}

		case titleStateBogus:
			next := bytes.IndexByte(p[i:], '>')
			if next < 0 {
				return
			}
			i += next
			s.state = titleStateData

		case titleStateRawText:
			if s.holdLen == 0 {
				next := bytes.IndexByte(p[i:], '<')
				if next < 0 {
					return
				}
				i += next
				c = '<'
			}
			if s.rawTextByte(c) {
				i--
			}

		case titleStateTitle:
			if n := s.plainRun(p[i:]); n > 0 {
				i += n - 1
				continue
			}
			s.titleByte(c)

		case titleStateDone:
			return
		}
	}
}

func (s *titleScanner) startTagName(c byte, endTag bool) {
	s.state = titleStateTagName
	s.endTag = endTag
	s.nameLen = 0
	s.addNameByte(c)
}

// addNameByte appends c in lowercase to the tag name. A name longer than
// s.name is not one the scanner looks for, so only its length is kept.
func (s *titleScanner) addNameByte(c byte) {
	if int(s.nameLen) < len(s.name) {
		s.name[s.nameLen] = titleLower(c)
		s.nameLen++
		return
	}
	s.nameLen = uint8(len(s.name)) + 1
}

// endOfTag handles the '>' that closes a tag.
func (s *titleScanner) endOfTag() {
	s.state = titleStateData
	if s.endTag || int(s.nameLen) > len(s.name) {
		return
	}
	switch string(s.name[:s.nameLen]) {
	case "title":
		s.state = titleStateTitle
		s.found = true
		s.endName = "</title"
		s.holdLen = 0
	case "script":
		s.state = titleStateRawText
		s.endName = "</script"
		s.holdLen = 0
	case "style":
		s.state = titleStateRawText
		s.endName = "</style"
		s.holdLen = 0
	}
}

func (s *titleScanner) commentByte(c byte) {
	switch c {
	case '-':
		switch s.dashes {
		case titleCommentStart:
			s.dashes = titleCommentStartDash
		case titleCommentStartDash, 1, 2:
			s.dashes = 2
		default:
			s.dashes = 1
		}
	case '>':
		// "-->" closes a comment, and so do "<!-->" and "<!--->".
		if s.dashes >= 2 {
			s.state = titleStateData
		}
		s.dashes = 0
	case '!':
		if s.dashes == 2 {
			s.state = titleStateCommentBang
		}
		s.dashes = 0
	default:
		s.dashes = 0
	}
}

// matchEndName advances the match of s.endName by c and reports whether c
// extends it. hold keeps the original bytes of the partial match.
func (s *titleScanner) matchEndName(c byte) bool {
	if int(s.holdLen) < len(s.endName) && titleLower(c) == s.endName[s.holdLen] {
		s.hold[s.holdLen] = c
		s.holdLen++
		return true
	}
	return false
}

// rawTextByte handles a byte of <script> or <style> content. It reports
// whether c has to be scanned again in the new state.
func (s *titleScanner) rawTextByte(c byte) bool {
	if int(s.holdLen) == len(s.endName) {
		s.holdLen = 0
		if titleIsSpace(c) || c == '/' || c == '>' {
			s.state = titleStateAttributes
			s.endTag = true
		}
		return true
	}
	if s.matchEndName(c) {
		return false
	}
	s.holdLen = 0
	return c == '<'
}

// titleByte handles a byte of <title> content.
func (s *titleScanner) titleByte(c byte) {
	if int(s.holdLen) == len(s.endName) {
		if titleIsSpace(c) || c == '/' || c == '>' {
			s.holdLen = 0
			s.flushEntity()
			s.state = titleStateDone
			return
		}
		s.flushHold()
	}
	if s.matchEndName(c) {
		return
	}
	if s.holdLen > 0 {
		// The partial end tag was text, and c may start a new one.
		s.flushHold()
		if s.matchEndName(c) {
			return
		}
	}
	s.textByte(c)
}

// plainRun copies the title text at the start of p up to the first byte
// that needs titleByte: markup, a character reference, whitespace or NUL.
// It returns how many bytes it took, 0 while part of an end tag or a
// reference is held back.
func (s *titleScanner) plainRun(p []byte) int {
	if s.holdLen > 0 || s.entityLen > 0 {
		return 0
	}
	n := 0
	for n < len(p) && titleIsPlain(p[n]) {
		n++
	}
	if n == 0 {
		return 0
	}
	if s.spacePending {
		s.spacePending = false
		s.appendText(' ')
	}
	room := len(s.text) - s.textLen
	copied := copy(s.text[s.textLen:], p[:min(n, room)])
	s.textLen += copied
	if s.textLen == len(s.text) {
		s.state = titleStateDone
	}
	return n
}

// titleIsPlain reports whether c stands for itself in title text.
func titleIsPlain(c byte) bool {
	return c != '<' && c != '&' && c != 0 && !titleIsSpace(c)
}

// flushHold passes the bytes of a partial end tag on as title text.
func (s *titleScanner) flushHold() {
	length := s.holdLen
	s.holdLen = 0
	for _, c := range s.hold[:length] {
		s.textByte(c)
	}
}

// textByte passes one byte of raw title text through character reference
// decoding. A reference is held back until a byte that cannot continue it
// arrives, so html.UnescapeString decodes it whole.
//
// NOTE: a numeric reference longer than titleEntityLimit bytes (possible
// only with many leading zeros or an overflowing number) is decoded in two
// parts, unlike html.UnescapeString over the whole text.
func (s *titleScanner) textByte(c byte) {
	if s.entityLen > 0 {
		if titleIsEntityByte(c) && int(s.entityLen) < len(s.entity) {
			s.entity[s.entityLen] = c
			s.entityLen++
			if c == ';' {
				s.flushEntity()
			}
			return
		}
		s.flushEntity()
	}
	if c == '&' {
		s.entity[0] = c
		s.entityLen = 1
		return
	}
	s.emitByte(c)
}

func (s *titleScanner) flushEntity() {
	if s.entityLen == 0 {
		return
	}
	decoded := html.UnescapeString(string(s.entity[:s.entityLen]))
	s.entityLen = 0
	for i := 0; i < len(decoded); i++ {
		s.emitByte(decoded[i])
	}
}

// emitByte appends one byte of decoded title text, collapsing whitespace.
func (s *titleScanner) emitByte(c byte) {
	if titleIsSpace(c) {
		s.spacePending = s.textLen > 0
		return
	}
	if s.spacePending {
		s.spacePending = false
		s.appendText(' ')
	}
	if c == 0 {
		for i := 0; i < len(titleReplacement); i++ {
			s.appendText(titleReplacement[i])
		}
		return
	}
	s.appendText(c)
}

func (s *titleScanner) appendText(c byte) {
	if s.textLen >= len(s.text) {
		return
	}
	s.text[s.textLen] = c
	s.textLen++
	if s.textLen == len(s.text) {
		s.state = titleStateDone
	}
}

// titleClean returns text with each invalid UTF-8 byte replaced by U+FFFD,
// cut to at most titleMaxBytes bytes on a rune boundary, without a trailing
// space, and whether it was cut.
func titleClean(text []byte) (string, bool) {
	if len(text) <= titleMaxBytes && utf8.Valid(text) {
		return string(text), false
	}
	out := make([]byte, 0, titleMaxBytes)
	for len(text) > 0 {
		r, size := utf8.DecodeRune(text)
		if r == utf8.RuneError && size == 1 {
			if len(out)+len(titleReplacement) > titleMaxBytes {
				break
			}
			out = append(out, titleReplacement...)
		} else {
			if len(out)+size > titleMaxBytes {
				break
			}
			out = append(out, text[:size]...)
		}
		text = text[size:]
	}
	return strings.TrimRight(string(out), " "), len(text) > 0
}

// titleIsSpace reports whether c is ASCII whitespace as HTML defines it.
func titleIsSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'
}

// titleIsNameByte reports whether c continues a tag name.
func titleIsNameByte(c byte) bool {
	return c != '>' && c != '/' && !titleIsSpace(c)
}

func titleIsLetter(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// titleIsEntityByte reports whether c can continue a character reference.
func titleIsEntityByte(c byte) bool {
	return titleIsLetter(c) || '0' <= c && c <= '9' || c == '#' || c == ';'
}

func titleLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// complete reports whether the scan reached the end of the title, or the
// most title text it keeps, so that the same body always gives the same
// title.
func (s *titleScanner) complete() bool {
	return s.found && s.state == titleStateDone
}

// pageTitle is a page's title as its event gets it, and whether the
// scanner cut it to titleMaxBytes.
type pageTitle struct {
	text string
	cut  bool
}

// titleCacheSize bounds the number of cached titles.
const titleCacheSize = 4096

// titleCache keeps the titles of pages whose responses carry an ETag, so
// that a page served again unchanged is not scanned again. Each handler
// has its own, so a reload starts afresh. A key is a 64-bit hash of the
// host, the path, the query and the ETag. With at most titleCacheSize
// pages, two of them are too unlikely to share a key to matter.
//
// NOTE: a 304 gets a title only when the 200 it revalidates was seen
// since the config was loaded.
type titleCache struct {
	seed   maphash.Seed
	mu     sync.RWMutex
	titles map[uint64]pageTitle
}

func newTitleCache() *titleCache {
	return &titleCache{seed: maphash.MakeSeed(), titles: make(map[uint64]pageTitle)}
}

// key returns the cache key of the response to r with header, or 0 when
// its title cannot be cached. That is when the response has no ETag, or
// varies by request headers other than Accept-Encoding, since one ETag may
// then stand for pages with different titles.
func (c *titleCache) key(r *http.Request, header http.Header) uint64 {
	etag := headerValue(header, "Etag")
	if etag == "" || variesByMore(header) {
		return 0
	}
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(r.Host)
	h.WriteByte(0)
	h.WriteString(r.URL.Path)
	h.WriteByte(0)
	h.WriteString(r.URL.RawQuery)
	h.WriteByte(0)
	h.WriteString(unencodedETag(etag, headerValue(header, "Content-Encoding")))
	return h.Sum64()
}

// unencodedETag removes the "-<coding>" that Caddy's encode handler adds
// inside a strong ETag when it compresses the body, so that a compressed
// 200 and the 304 that revalidates it, which carries the ETag without
// the suffix, share a key.
func unencodedETag(etag, contentEncoding string) string {
	coding := strings.TrimSpace(contentEncoding)
	if coding == "" || strings.HasPrefix(etag, "W/") {
		return etag
	}
	suffix := "-" + coding + `"`
	if strings.HasSuffix(etag, suffix) {
		return strings.TrimSuffix(etag, suffix) + `"`
	}
	return etag
}

// variesByMore reports whether a response's Vary header lists a request
// header other than Accept-Encoding.
func variesByMore(header http.Header) bool {
	for _, line := range header["Vary"] {
		for name := range strings.SplitSeq(line, ",") {
			name = strings.TrimSpace(name)
			if name != "" && !strings.EqualFold(name, "Accept-Encoding") {
				return true
			}
		}
	}
	return false
}

// get returns the title cached under key, if any.
func (c *titleCache) get(key uint64) (pageTitle, bool) {
	if key == 0 {
		return pageTitle{}, false
	}
	c.mu.RLock()
	title, ok := c.titles[key]
	c.mu.RUnlock()
	return title, ok
}

// put caches title under key. The cache is emptied when it is full.
func (c *titleCache) put(key uint64, title pageTitle) {
	if key == 0 {
		return
	}
	c.mu.Lock()
	if len(c.titles) >= titleCacheSize {
		clear(c.titles)
	}
	c.titles[key] = title
	c.mu.Unlock()
}
