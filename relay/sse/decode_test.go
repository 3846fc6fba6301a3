package sse

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"
)

// decodeAll returns every event of stream, read all at once and read one
// byte at a time (which splits CRLF pairs and UTF-8 sequences across
// reads); both must agree.
func decodeAll(t *testing.T, stream string) []Event {
	t.Helper()
	whole := readEvents(t, NewDecoder(strings.NewReader(stream)))
	bytewise := readEvents(t, NewDecoder(iotest.OneByteReader(strings.NewReader(stream))))
	if !reflect.DeepEqual(whole, bytewise) {
		t.Fatalf("stream %q: whole read gives %q, byte by byte %q", stream, whole, bytewise)
	}
	return whole
}

func readEvents(t *testing.T, d *Decoder) []Event {
	t.Helper()
	var evs []Event
	for {
		ev, err := d.Next()
		if err == io.EOF {
			return evs
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		evs = append(evs, ev)
	}
}

// The cases follow the web-platform-tests eventsource/format-* fixtures
// (as behaviour: the streams are ours) and the standard's examples.
func TestDecoder(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []Event
	}{
		{"plain", "data: hello\n\n", []Event{{Data: "hello"}}},
		{"bom", "\uFEFFdata: 1\n\n", []Event{{Data: "1"}}},
		{"double bom loses the first event", "\uFEFF\uFEFFdata: 1\n\ndata: 2\n\n", []Event{{Data: "2"}}},
		{"bom only at the start", "data: 1\n\n\uFEFFdata: 2\n\n", []Event{{Data: "1"}}},
		{"CRLF and lone CR", "data: crlf\r\n\r\ndata: cr\r\rdata: lf\n\n", []Event{{Data: "crlf"}, {Data: "cr"}, {Data: "lf"}}},
		{"newlines", "data:test\r\ndata\ndata:test\r\n\r", []Event{{Data: "test\n\ntest"}}},
		{"LF CR is two line ends", "data: a\n\rdata: b\n\n", []Event{{Data: "a"}, {Data: "b"}}},
		{"one leading space removed", "data:nospace\n\ndata:  two\n\ndata:\ttab\n\n", []Event{{Data: "nospace"}, {Data: " two"}, {Data: "\ttab"}}},
		{"data lines joined", "data: a\ndata: b\ndata\n\n", []Event{{Data: "a\nb\n"}}},
		{"empty data dispatches", "data\n\ndata:\n\n", []Event{{}, {}}},
		{"comments", ": keepalive\n:\n\n: x\ndata: 1\n\n", []Event{{Data: "1"}}},
		{"unknown and mis-cased fields", "Data: x\ndata : y\nfalsefield:msg\n\n", nil},
		{"event type", "event: custom\ndata: 1\n\nevent:\ndata: 2\n\n", []Event{{Type: "custom", Data: "1"}, {Data: "2"}}},
		{"event type does not leak", "event: a\n\ndata: 1\n\n", []Event{{Data: "1"}}},
		{"id persists", "id: 7\ndata: a\n\ndata: inherits\n\n", []Event{{ID: "7", Data: "a"}, {ID: "7", Data: "inherits"}}},
		{"id-only block moves the id", "id: 8\n\ndata: x\n\n", []Event{{ID: "8", Data: "x"}}},
		{"empty id resets", "id: 1\ndata: a\n\nid:\ndata: b\n\nid: 2\n\nid\ndata: c\n\n", []Event{{ID: "1", Data: "a"}, {Data: "b"}, {Data: "c"}}},
		{"id with NUL ignored", "id: 3\ndata: a\n\nid: a\x00b\ndata: b\n\n", []Event{{ID: "3", Data: "a"}, {ID: "3", Data: "b"}}},
		{"last id wins", "id: 1\nid: 2\ndata: a\n\n", []Event{{ID: "2", Data: "a"}}},
		{"NUL in data", "data:\x00\n\n", []Event{{Data: "\x00"}}},
		{"unfinished block discarded", "data: 1\n\nid: 9\ndata: last\n", []Event{{Data: "1"}}},
		{"unterminated line discarded", "data: 1\n\ndata: 2", []Event{{Data: "1"}}},
		{"invalid UTF-8", "data: a\xffb\xe2\x82c\xed\xa0\x80\n\n", []Event{{Data: "a\uFFFDb\uFFFDc\uFFFD\uFFFD\uFFFD"}}},
		{"truncated sequence before line end", "data: \xf0\x9f\x98\n\n", []Event{{Data: "\uFFFD"}}},
		{"U+2028 and NEL are not line ends", "data: a\u2028b\u0085c\n\n", []Event{{Data: "a\u2028b\u0085c"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decodeAll(t, tt.stream); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("events of %q\n got %q\nwant %q", tt.stream, got, tt.want)
			}
		})
	}
}

func TestDecoderRetry(t *testing.T) {
	tests := []struct {
		stream string
		want   time.Duration
	}{
		{"retry: 1500\n\n", 1500 * time.Millisecond},
		{"retry: 03000\n\n", 3 * time.Second},
		{"retry: 1000\nretry: 1000x\n\n", time.Second},
		{"retry\n\n", 0},
		{"retry:\n\n", 0},
		{"retry: -5\n\n", 0},
		{"retry:  5\n\n", 0},
		{"retry: 99999999999999999999\n\n", 0},
		{"retry: 20", 0},                       // an unterminated line is never parsed
		{"retry: 20\n", 20 * time.Millisecond}, // applied at parse time: no blank line needed
	}
	for _, tt := range tests {
		d := NewDecoder(strings.NewReader(tt.stream))
		for {
			if _, err := d.NextBlock(); err != nil {
				break
			}
		}
		if d.Retry() != tt.want {
			t.Errorf("Retry after %q = %v, want %v", tt.stream, d.Retry(), tt.want)
		}
	}
}

func TestDecoderBlocks(t *testing.T) {
	stream := "retry: 2000\n\nid: 5\nevent: sserelay.connected\ndata: {}\n\n: keepalive\n\n\n\nid: 6\n\n"
	d := NewDecoder(strings.NewReader(stream))
	var got []Block
	for {
		b, err := d.NextBlock()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	want := []Block{
		{Fields: []Field{{"retry", "2000"}}, Retry: 2 * time.Second, HasRetry: true},
		{Fields: []Field{{"id", "5"}, {"event", "sserelay.connected"}, {"data", "{}"}}, Dispatched: true,
			Event: Event{ID: "5", Type: "sserelay.connected", Data: "{}"}, HasID: true},
		{Fields: []Field{{"", "keepalive"}}, Event: Event{ID: "5"}},
		{Fields: []Field{{"id", "6"}}, Event: Event{ID: "6"}, HasID: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("blocks\n got %+v\nwant %+v", got, want)
	}
	if !got[2].Fields[0].IsComment() || got[1].Fields[0].IsComment() {
		t.Fatal("IsComment is wrong")
	}
	if n := d.Buffered(); n != 0 {
		t.Fatalf("Buffered at the end = %d, want 0", n)
	}
	if d.LastEventID() != "6" {
		t.Fatalf("LastEventID = %q, want 6", d.LastEventID())
	}
}

// A live stream ends its blank line with CR: the event must be dispatched
// without waiting for the next byte to see whether an LF follows.
func TestDecoderLoneCRDoesNotWait(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	go func() {
		_, _ = pw.Write([]byte("data: 1\r\r"))
		// no more bytes until the reader has seen event 1
	}()
	d := NewDecoder(pr)
	done := make(chan Event, 1)
	go func() {
		ev, _ := d.Next()
		done <- ev
	}()
	select {
	case ev := <-done:
		if ev.Data != "1" {
			t.Fatalf("got %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("event ended by CR was not dispatched")
	}
	go func() { _, _ = pw.Write([]byte("\ndata: 2\n\n")); pw.Close() }()
	if ev, err := d.Next(); err != nil || ev.Data != "2" {
		t.Fatalf("after CR, LF: got %+v, %v; want data 2 (the LF is not a blank line)", ev, err)
	}
}

// errAfter returns its bytes in the given pieces with err between them.
type errAfter struct {
	pieces []string
	err    error
	gave   bool
}

func (r *errAfter) Read(p []byte) (int, error) {
	if len(r.pieces) == 0 {
		return 0, io.EOF
	}
	if r.gave {
		r.gave = false
		return 0, r.err
	}
	r.gave = true
	n := copy(p, r.pieces[0])
	r.pieces = r.pieces[1:]
	return n, nil
}

// A read error such as a deadline leaves the decoder usable: it carries on
// with the rest of the stream, in the middle of a line or block.
func TestDecoderResumesAfterReadError(t *testing.T) {
	timeout := errors.New("deadline")
	r := &errAfter{pieces: []string{"id: 1\nda", "ta: a\n", "\ndata: b\n\n"}, err: timeout}
	d := NewDecoder(r)
	var got []Event
	errs := 0
	for {
		ev, err := d.Next()
		if errors.Is(err, timeout) {
			errs++
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	want := []Event{{ID: "1", Data: "a"}, {ID: "1", Data: "b"}}
	if !reflect.DeepEqual(got, want) || errs != 2 {
		t.Fatalf("got %q after %d errors, want %q after 2", got, errs, want)
	}
}

func TestDecoderLimit(t *testing.T) {
	d := NewDecoder(strings.NewReader("data: 12345\n\n" + "data: " + strings.Repeat("x", 100) + "\n\n"))
	d.Limit(64)
	if ev, err := d.Next(); err != nil || ev.Data != "12345" {
		t.Fatalf("first event: %+v %v", ev, err)
	}
	if _, err := d.Next(); !errors.Is(err, ErrTooLong) {
		t.Fatalf("long block: err %v, want ErrTooLong", err)
	}
	if _, err := d.Next(); !errors.Is(err, ErrTooLong) {
		t.Fatalf("after ErrTooLong: err %v, want ErrTooLong again", err)
	}
	// An unterminated line is bounded too.
	d = NewDecoder(strings.NewReader(strings.Repeat("x", 1000)))
	d.Limit(64)
	if _, err := d.Next(); !errors.Is(err, ErrTooLong) {
		t.Fatalf("long line: err %v, want ErrTooLong", err)
	}
}

// FuzzRoundTrip checks that what the encoder writes, a spec decoder reads
// back exactly: id, event name and data (line ends normalised to LF, as the
// standard makes them), with comments and retry hints in between that
// dispatch nothing and forge nothing.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint64(1), "", []byte("hello"), "order.updated", []byte("a\r\nb"), int64(1500))
	f.Fuzz(func(t *testing.T, id uint64, event1 string, data1 []byte, event2 string, data2 []byte, retry int64) {
		if (event1 != "" && !SafeEventName(event1)) || (event2 != "" && !SafeEventName(event2)) || retry < 0 {
			t.Skip("the encoder's callers never write these")
		}
		var stream []byte
		stream = AppendEvent(stream, id, event1, data1)
		stream = AppendComment(stream, "keepalive")
		stream = AppendRetry(stream, retry)
		stream = AppendMessage(stream, event2, data2)
		if bytes.HasPrefix(stream, bom) {
			t.Skip("a leading BOM is the one thing the encoder cannot keep") // never: it starts with "id: "
		}
		d := NewDecoder(bytes.NewReader(stream))
		evs := readEvents(t, d)
		if len(evs) != 2 {
			t.Fatalf("stream %q gave %d events, want 2: %q", stream, len(evs), evs)
		}
		id1 := strconv.FormatUint(id, 10)
		checkEvent(t, evs[0], Event{ID: id1, Type: event1, Data: string(data1)})
		// The second block has no id field: it inherits the first one's, and
		// an event name starting with a space keeps it ("event:  x").
		checkEvent(t, evs[1], Event{ID: id1, Type: event2, Data: string(data2)})
		if want := time.Duration(retry) * time.Millisecond; retry <= int64(time.Duration(1<<63-1)/time.Millisecond) && d.Retry() != want {
			t.Fatalf("retry %d read back as %v", retry, d.Retry())
		}
	})
}

func checkEvent(t *testing.T, got, want Event) {
	t.Helper()
	want.Data = strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(want.Data)
	if utf8.ValidString(want.Data) && utf8.ValidString(want.Type) {
		if got != want {
			t.Fatalf("read back %q, want %q", got, want)
		}
		return
	}
	// Invalid UTF-8 reaches a client as U+FFFD; the rest must still hold.
	if got.ID != want.ID || !utf8.ValidString(got.Data) || !utf8.ValidString(got.Type) ||
		strings.Count(got.Data, "\n") != strings.Count(want.Data, "\n") {
		t.Fatalf("read back %q, want %q (up to U+FFFD)", got, want)
	}
}

// FuzzDecoder feeds arbitrary bytes: the decoder must not panic, must give
// valid UTF-8, and must read the same events whole and byte by byte.
func FuzzDecoder(f *testing.F) {
	for _, s := range []string{"data: a\r\n\r\n", "\uFEFFid: 1\rdata\r\r", "retry: 10\n\n:c\ndata:\xff\n\n", "data: x\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		for _, ev := range decodeAll(t, string(stream)) {
			if !utf8.ValidString(ev.Data) || !utf8.ValidString(ev.Type) || !utf8.ValidString(ev.ID) {
				t.Fatalf("invalid UTF-8 in %q", ev)
			}
			if strings.ContainsRune(ev.ID, 0) || strings.ContainsAny(ev.Type, "\r\n") || strings.Contains(ev.Data, "\r") {
				t.Fatalf("a field kept a line end or an id a NUL: %q", ev)
			}
		}
	})
}
