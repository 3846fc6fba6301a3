package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sserelay/sserelay/relay/sse"
	"github.com/sserelay/sserelay/relay/sse/ssetest"
)

// sseStream is a client on GET /v1/events: it records the exact bytes of
// the body and decodes them with the spec decoder (relay/sse via ssetest).
// The embedded Stream also has a cursor (Next, NextBlock) for tests that
// read events one by one.
type sseStream struct {
	*ssetest.Stream
	resp *http.Response
}

// openStream opens a stream and requires 200 text/event-stream.
func openStream(t *testing.T, url string, hdr map[string]string) *sseStream {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	st, err := ssetest.Open(httpClient, req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(st.Close)
	return &sseStream{Stream: st, resp: st.Response}
}

func (s *sseStream) close() { s.Close() }

// raw returns every byte received so far.
func (s *sseStream) raw() string { return s.Raw() }

// endErr waits for the body to end and returns why it ended.
func (s *sseStream) endErr(t *testing.T) error {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(waitLong):
		t.Fatalf("stream did not end within %s", waitLong)
	}
	return s.Err()
}

// events decodes the complete blocks received so far.
func (s *sseStream) events() []sseEvent { return blockEvents(s.Blocks()) }

// waitID waits until an event with id seq arrived and returns all events.
func (s *sseStream) waitID(t *testing.T, seq uint64) []sseEvent {
	t.Helper()
	id := strconv.FormatUint(seq, 10)
	var evs []sseEvent
	_, err := s.WaitRaw(waitShort, func(raw string) bool {
		evs = parseSSE(raw)
		for _, e := range evs {
			if e.HasID && e.ID == id {
				return true
			}
		}
		return false
	})
	switch {
	case errors.Is(err, ssetest.ErrTimeout):
		t.Fatalf("event %s did not arrive within %s; the stream got:\n%s", id, waitShort, s.raw())
	case err != nil:
		t.Fatalf("stream ended (%v) before event %s; it got:\n%s", err, id, s.raw())
	}
	return evs
}

// waitRaw waits until cond holds on the raw bytes.
func (s *sseStream) waitRaw(t *testing.T, what string, cond func(string) bool) string {
	t.Helper()
	raw, err := s.WaitRaw(waitShort, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v; the stream got:\n%s", what, err, raw)
	}
	return raw
}

// connected returns the data of the stream's sserelay.connected event.
func (s *sseStream) connected(t *testing.T) map[string]string {
	t.Helper()
	var ev sseEvent
	s.waitRaw(t, "sserelay.connected", func(raw string) bool {
		for _, e := range parseSSE(raw) {
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

// sseEvent is one block as the spec decoder sees it. Blocks without data
// (which a browser does not dispatch) are kept too, marked HasData false;
// comment-only blocks are left out.
type sseEvent struct {
	ID      string // the block's own id field ("" without one)
	HasID   bool
	Event   string
	Data    string
	HasData bool
	Retry   string // the block's retry field in ms ("" without a valid one)
}

// parseSSE decodes the complete blocks of raw (an unterminated last block
// is left out, as a browser would).
func parseSSE(raw string) []sseEvent {
	var blocks []sse.Block
	d := sse.NewDecoder(strings.NewReader(raw))
	for {
		b, err := d.NextBlock()
		if err != nil {
			return blockEvents(blocks)
		}
		blocks = append(blocks, b)
	}
}

func blockEvents(blocks []sse.Block) []sseEvent {
	var out []sseEvent
	for _, b := range blocks {
		if !slices.ContainsFunc(b.Fields, func(f sse.Field) bool { return !f.IsComment() }) {
			continue
		}
		e := sseEvent{HasID: b.HasID, Event: b.Event.Type, HasData: b.Dispatched}
		if b.HasID {
			e.ID = b.Event.ID
		}
		if b.Dispatched {
			e.Data = b.Event.Data
		}
		if b.HasRetry {
			e.Retry = strconv.FormatInt(b.Retry.Milliseconds(), 10)
		}
		out = append(out, e)
	}
	return out
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

// connectedFrame is the canonical first event: sserelay.connected with the
// retry hint as a field of its block (with id c unless the client sent a
// Last-Event-ID).
func connectedFrame(retryMS int, withID bool, c uint64, connID, user, app string) string {
	s := "retry: " + strconv.Itoa(retryMS) + "\n"
	if withID {
		s += "id: " + strconv.FormatUint(c, 10) + "\n"
	}
	b, _ := json.Marshal(map[string]string{"connection_id": connID, "user": user, "app_id": app})
	return s + "event: sserelay.connected\ndata: " + string(b) + "\n\n"
}

// isCleanEnd reports whether a body ended with a proper end of the chunked
// encoding (not a cut connection).
func isCleanEnd(err error) bool { return err == io.EOF }
