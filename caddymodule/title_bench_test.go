package caddymodule

import (
	"bytes"
	"testing"
)

// BenchmarkTitleScanner measures one response: reset, the body in 4 KB
// writes, and Title. Encoded bodies are decoded in Title. Throughput is
// given in bytes of HTML, before encoding.
func BenchmarkTitleScanner(b *testing.B) {
	page := titleTestPage("Install &amp; configure | Docs", 10<<10)
	noTitle := titleTestPage("", 10<<10)
	benchmarks := []struct {
		name            string
		contentEncoding string
		html            []byte
		body            []byte
	}{
		{"identity", "", page, page},
		{"identity-no-title", "", noTitle, noTitle},
		{"gzip", "gzip", page, titleGzipBytes(b, page)},
		{"gzip-no-title", "gzip", noTitle, titleGzipBytes(b, noTitle)},
		{"zstd", "zstd", page, titleZstdStreamBytes(b, page)},
		{"zstd-no-title", "zstd", noTitle, titleZstdStreamBytes(b, noTitle)},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			var s titleScanner
			wantTitle := bytes.Contains(bm.html, []byte("<title>Install"))
			b.SetBytes(int64(len(bm.html)))
			b.ReportAllocs()
			for b.Loop() {
				s.reset(bm.contentEncoding)
				for rest := bm.body; len(rest) > 0; {
					n := min(4096, len(rest))
					s.Write(rest[:n])
					rest = rest[n:]
				}
				if found := s.Title() != ""; found != wantTitle {
					b.Fatalf("title found = %v in %s body, want %v", found, bm.name, wantTitle)
				}
			}
		})
	}
}
