package relay

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/sse"
)

// mapConnected is what serveEvents wrote first before appendConnected:
// the connected event's data by json.Marshal of a map.
func mapConnected(r *Relay, sr *streamRequest, c uint64) []byte {
	hello, _ := json.Marshal(map[string]string{"connection_id": sr.connID, "user": sr.claims.Subject, "app_id": sr.app})
	b := appendRetry(nil, r.cfg.Retry.Milliseconds())
	if sr.hasID {
		return sse.AppendMessage(b, EventConnected, hello)
	}
	return sse.AppendEvent(b, c, EventConnected, hello)
}

// mapResponseHead is the head of a taken-over stream before
// responseHead sized its buffer, followed by first.
func mapResponseHead(h http.Header, first []byte) []byte {
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head)
	head.WriteString("Connection: close\r\n\r\n")
	head.Write(first)
	return head.Bytes()
}

// helloStrings are ids with every kind of character encoding/json treats
// apart: HTML characters, quotes and backslashes, control characters,
// DEL, non-ASCII, invalid UTF-8, U+2028 and U+2029, and strings too long
// for appendConnected's stack buffer.
var helloStrings = []string{
	"", "alice", "tab-0001-ab", "demo", "a.b_c-d~e", "x y",
	"<script>", "a&b", ">", `"`, `a\b`, "\x00", "\t\n\r", "\x1f", "\x7f",
	"café", "☕", "\U0001F600", "\xff", "de\xc3", "\xed\xa0\x80", "\u2028\u2029", "\ufffd", "\ufeff",
	strings.Repeat("u", 300), strings.Repeat("<", 100),
}

// TestConnected: the first bytes of a stream, alone and after the head of
// a taken-over connection, are those of the map-based encoding, whatever
// the ids (FuzzConnected tries more).
func TestConnected(t *testing.T) {
	for _, connID := range []string{"tab-0001-ab", "", "\u2028<&>"} {
		for _, user := range helloStrings {
			for _, app := range helloStrings {
				checkConnected(t, connID, user, app, 42, false)
				checkConnected(t, connID, user, app, 0, true)
			}
		}
	}
}

// FuzzConnected holds appendConnected to the map-based encoding of the
// connected event, which is what json.Marshal writes (keys sorted, its
// escapes). Corpus: helloStrings.
func FuzzConnected(f *testing.F) {
	for i, s := range helloStrings {
		f.Add("tab-0001-ab", s, helloStrings[(i+7)%len(helloStrings)], uint64(i), i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, connID, user, app string, c uint64, hasID bool) {
		checkConnected(t, connID, user, app, c, hasID)
	})
}

func checkConnected(t *testing.T, connID, user, app string, c uint64, hasID bool) {
	t.Helper()
	r := &Relay{cfg: Config{Retry: 2500 * time.Millisecond}}
	sr := &streamRequest{claims: &auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: user}}, app: app, connID: connID, hasID: hasID}
	want := mapConnected(r, sr, c)
	if got := r.appendConnected(nil, sr, c); !bytes.Equal(got, want) {
		t.Fatalf("connID %q user %q app %q: appendConnected\n%q\nwant\n%q", connID, user, app, got, want)
	}
	h := http.Header{}
	setStreamHeaders(headerWriter(h), connID)
	wantHead := mapResponseHead(h, want)
	if got := r.appendConnected(responseHead(h, connectedLen(sr)), sr, c); !bytes.Equal(got, wantHead) {
		t.Fatalf("connID %q user %q app %q: head\n%q\nwant\n%q", connID, user, app, got, wantHead)
	}
}

// TestConnectedAllocs: the connected event of plain ids is written into the
// buffer sized by connectedLen with no allocation, as is the head.
func TestConnectedAllocs(t *testing.T) {
	r := &Relay{cfg: Config{Retry: 2 * time.Second}}
	sr := &streamRequest{claims: &auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "user-123456"}}, app: "demo", connID: "Z3p8dJ1XqH0b5wKc9mN2Aa"}
	buf := make([]byte, 0, connectedLen(sr))
	if n := testing.AllocsPerRun(100, func() { buf = r.appendConnected(buf[:0], sr, 18446744073709551615) }); n != 0 {
		t.Errorf("appendConnected: %v allocations, want 0", n)
	}
	if len(buf) > connectedLen(sr) {
		t.Errorf("connectedLen %d, but %d bytes written", connectedLen(sr), len(buf))
	}
}

// TestStreamHeaders: setStreamHeaders stores what Header.Set would, and an
// Add to one header changes no other (the values share an array).
func TestStreamHeaders(t *testing.T) {
	for _, connID := range []string{"tab-0001-ab", ""} {
		want := http.Header{}
		want.Set("Content-Type", "text/event-stream")
		want.Set("Cache-Control", "no-cache")
		want.Set("X-Accel-Buffering", "no")
		if connID != "" {
			want.Set("X-Connection-Id", connID)
		}
		h := http.Header{}
		setStreamHeaders(headerWriter(h), connID)
		var got, wantB bytes.Buffer
		_ = h.Write(&got)
		_ = want.Write(&wantB)
		if got.String() != wantB.String() || len(h) != len(want) {
			t.Fatalf("headers\n%s\nwant\n%s", got.String(), wantB.String())
		}
		for k := range want {
			h.Add(k, "more")
		}
		for k, v := range want {
			if got := h.Values(k); len(got) != 2 || got[0] != v[0] || got[1] != "more" {
				t.Fatalf("%s %q after an Add to each header, want %q and \"more\"", k, got, v[0])
			}
		}
	}
}

// headerWriter is a ResponseWriter whose Header is h; nothing is written.
type headerWriter http.Header

func (w headerWriter) Header() http.Header       { return http.Header(w) }
func (headerWriter) Write(b []byte) (int, error) { return len(b), nil }
func (headerWriter) WriteHeader(int)             {}

// BenchmarkConnected is the first bytes of a taken-over stream, its head
// and connected event: as serveEvents writes them (append), and as it did
// (map: json.Marshal of a map, and a head buffer that grows).
func BenchmarkConnected(b *testing.B) {
	r := &Relay{cfg: Config{Retry: 2 * time.Second}}
	sr := &streamRequest{claims: &auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "user-123456"}}, app: "demo", connID: "Z3p8dJ1XqH0b5wKc9mN2Aa"}
	h := http.Header{}
	setStreamHeaders(headerWriter(h), sr.connID)
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.appendConnected(responseHead(h, connectedLen(sr)), sr, 1234567)
		}
	})
	b.Run("map", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = mapResponseHead(h, mapConnected(r, sr, 1234567))
		}
	})
}
