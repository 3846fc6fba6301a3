package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sseStream is a raw HTTP client on GET /v1/events that records the exact
// bytes of the body.
type sseStream struct {
	resp   *http.Response
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	buf []byte
	err error // why reading stopped (io.EOF: a clean end), valid after done
}

// openStream opens a stream and requires 200 text/event-stream.
func openStream(t *testing.T, url string, hdr map[string]string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	s := &sseStream{resp: resp, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		b := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(b)
			s.mu.Lock()
			s.buf = append(s.buf, b[:n]...)
			if err != nil {
				s.err = err
			}
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) close() {
	s.cancel()
	<-s.done
}

// raw returns every byte received so far.
func (s *sseStream) raw() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.buf)
}

func (s *sseStream) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// endErr waits for the body to end and returns why it ended.
func (s *sseStream) endErr(t *testing.T) error {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(waitLong):
		t.Fatalf("stream did not end within %s", waitLong)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// events parses the complete blocks received so far.
func (s *sseStream) events() []sseEvent { return parseSSE(s.raw()) }

// waitID waits until an event with id seq arrived and returns all events.
func (s *sseStream) waitID(t *testing.T, seq uint64) []sseEvent {
	t.Helper()
	id := strconv.FormatUint(seq, 10)
	deadline := time.Now().Add(waitShort)
	for {
		evs := s.events()
		for _, e := range evs {
			if e.HasID && e.ID == id {
				return evs
			}
		}
		if s.ended() {
			t.Fatalf("stream ended (%v) before event %s; it got:\n%s", s.err, id, s.raw())
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %s did not arrive within %s; the stream got:\n%s", id, waitShort, s.raw())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitRaw waits until cond holds on the raw bytes.
func (s *sseStream) waitRaw(t *testing.T, what string, cond func(string) bool) string {
	t.Helper()
	var raw string
	eventually(t, waitShort, what, func() bool {
		raw = s.raw()
		return cond(raw)
	})
	return raw
}

// connected returns the data of the stream's sserelay.connected event.
func (s *sseStream) connected(t *testing.T) map[string]string {
	t.Helper()
	var ev sseEvent
	eventually(t, waitShort, "sserelay.connected", func() bool {
		for _, e := range s.events() {
			if e.Event == "sserelay.connected" {
				ev = e
				return true
			}
		}
		return false
	})
	var m map[string]string
	if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
		t.Fatalf("sserelay.connected data %q: %v", ev.Data, err)
	}
	return m
}

// sseEvent is one dispatched block, as the WHATWG parser sees it (except
// that blocks without data are kept too, marked HasData false).
type sseEvent struct {
	ID      string
	HasID   bool
	Event   string
	Data    string
	HasData bool
	Retry   string
}

// parseSSE parses complete blocks (an unterminated last block is left out,
// as a browser would).
func parseSSE(raw string) []sseEvent {
	var out []sseEvent
	var cur sseEvent
	var data []string
	seen := false
	for {
		i := strings.IndexAny(raw, "\r\n")
		if i < 0 {
			return out // incomplete line
		}
		line := raw[:i]
		if raw[i] == '\r' && i+1 < len(raw) && raw[i+1] == '\n' {
			i++
		}
		raw = raw[i+1:]
		if line == "" {
			if seen {
				cur.Data = strings.Join(data, "\n")
				cur.HasData = data != nil
				out = append(out, cur)
			}
			cur, data, seen = sseEvent{}, nil, false
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		seen = true
		switch field {
		case "id":
			cur.ID, cur.HasID = value, true
		case "event":
			cur.Event = value
		case "data":
			if data == nil {
				data = []string{}
			}
			data = append(data, value)
		case "retry":
			cur.Retry = value
		}
	}
}

// dataEvents keeps the events that carry data and are not the relay's own.
func dataEvents(evs []sseEvent) []sseEvent {
	var out []sseEvent
	for _, e := range evs {
		if e.HasData && !strings.HasPrefix(e.Event, "sserelay.") {
			out = append(out, e)
		}
	}
	return out
}

func ids(evs []sseEvent) []uint64 {
	var out []uint64
	for _, e := range evs {
		n, _ := strconv.ParseUint(e.ID, 10, 64)
		out = append(out, n)
	}
	return out
}

// ev is an expected event.
type ev struct {
	seq   uint64
	event string
	data  string
}

func (e ev) String() string { return fmt.Sprintf("{%d %q %q}", e.seq, e.event, e.data) }

// frame encodes ev as the relay must: id, optional event, one data line per
// line (data given here never contains CR), blank line.
func (e ev) frame() string {
	var b strings.Builder
	b.WriteString("id: " + strconv.FormatUint(e.seq, 10) + "\n")
	if e.event != "" {
		b.WriteString("event: " + e.event + "\n")
	}
	for l := range strings.SplitSeq(e.data, "\n") {
		if l == "" {
			b.WriteString("data:\n")
		} else {
			b.WriteString("data: " + l + "\n")
		}
	}
	b.WriteString("\n")
	return b.String()
}

func frames(evs ...ev) string {
	var b strings.Builder
	for _, e := range evs {
		b.WriteString(e.frame())
	}
	return b.String()
}

var (
	commentLine   = regexp.MustCompile(`(?m)^:[^\n]*\n`)
	connectedData = regexp.MustCompile(`(?m)^(event: sserelay\.connected\ndata: )(.*)$`)
)

// normalize removes comment lines (keepalives: the only lines that start
// with ':' in the relay's output) and rewrites the JSON data of
// sserelay.connected with sorted keys, so that exact-byte comparisons do
// not depend on keepalive timing or on JSON key order.
func normalize(raw string) string {
	raw = commentLine.ReplaceAllString(raw, "")
	return connectedData.ReplaceAllStringFunc(raw, func(s string) string {
		m := connectedData.FindStringSubmatch(s)
		return m[1] + canonJSON(m[2])
	})
}

func canonJSON(s string) string {
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return s
	}
	b, _ := json.Marshal(v) // map keys sorted
	return string(b)
}

// connectedFrame is the canonical first event: retry hint, then
// sserelay.connected (with id c unless the client sent a Last-Event-ID).
func connectedFrame(retryMS int, withID bool, c uint64, connID, user, app string) string {
	s := "retry: " + strconv.Itoa(retryMS) + "\n\n"
	if withID {
		s += "id: " + strconv.FormatUint(c, 10) + "\n"
	}
	b, _ := json.Marshal(map[string]string{"connection_id": connID, "user": user, "app_id": app})
	return s + "event: sserelay.connected\ndata: " + string(b) + "\n\n"
}

// isCleanEnd reports whether a body ended with a proper end of the chunked
// encoding (not a cut connection).
func isCleanEnd(err error) bool { return err == io.EOF }
