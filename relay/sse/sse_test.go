package sse

import (
	"strconv"
	"strings"
	"testing"
)

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		name  string
		id    uint64
		event string
		data  string
		want  string
	}{
		{"plain", 7, "", "hello", "id: 7\ndata: hello\n\n"},
		{"event name", 12, "order.updated", `{"a":1}`, "id: 12\nevent: order.updated\ndata: {\"a\":1}\n\n"},
		{"id zero", 0, "x", "y", "id: 0\nevent: x\ndata: y\n\n"},
		{"empty data", 3, "", "", "id: 3\ndata:\n\n"},
		{"LF", 1, "", "a\nb", "id: 1\ndata: a\ndata: b\n\n"},
		{"CR", 1, "", "a\rb", "id: 1\ndata: a\ndata: b\n\n"},
		{"CRLF", 1, "", "a\r\nb", "id: 1\ndata: a\ndata: b\n\n"},
		{"LFCR is two breaks", 1, "", "a\n\rb", "id: 1\ndata: a\ndata:\ndata: b\n\n"},
		{"trailing LF", 1, "", "a\n", "id: 1\ndata: a\ndata:\n\n"},
		{"forged field", 1, "", "x\n\nid: 99\ndata: evil", "id: 1\ndata: x\ndata:\ndata: id: 99\ndata: data: evil\n\n"},
		{"leading space kept", 1, "", " two", "id: 1\ndata:  two\n\n"},
		{"NUL and U+2028 pass", 1, "", "a\x00b\u2028c", "id: 1\ndata: a\x00b\u2028c\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(AppendEvent(nil, tt.id, tt.event, []byte(tt.data)))
			if got != tt.want {
				t.Fatalf("AppendEvent = %q, want %q", got, tt.want)
			}
		})
	}
}

// parse decodes stream with the spec decoder: the id, event name and data of
// every dispatched event.
func parse(t *testing.T, stream string) (ids, events, datas []string) {
	t.Helper()
	for _, ev := range decodeAll(t, stream) {
		ids, events, datas = append(ids, ev.ID), append(events, ev.Type), append(datas, ev.Data)
	}
	return ids, events, datas
}

func TestAppendMessage(t *testing.T) {
	got := string(AppendMessage(nil, "sserelay.token-expired", []byte("{}")))
	if want := "event: sserelay.token-expired\ndata: {}\n\n"; got != want {
		t.Fatalf("AppendMessage = %q, want %q", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	payloads := []string{"", "a", "a\nb", "a\rb", "a\r\nb", "\n", "\r\n\r\n", " lead", "x\r", "\rx", "emoji 😀\nnext", "a\x00b"}
	var stream []byte
	for i, p := range payloads {
		stream = AppendEvent(stream, uint64(i+1), "e", []byte(p))
		stream = AppendComment(stream, "keepalive")
	}
	stream = AppendRetry(stream, 1500)
	ids, events, datas := parse(t, string(stream))
	if len(datas) != len(payloads) {
		t.Fatalf("got %d events, want %d", len(datas), len(payloads))
	}
	for i, p := range payloads {
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(p)
		if datas[i] != want || events[i] != "e" || ids[i] != itoa(i+1) {
			t.Errorf("event %d: id %q event %q data %q, want data %q", i, ids[i], events[i], datas[i], want)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func FuzzAppendEvent(f *testing.F) {
	f.Add("a\r\nb\rc\nd")
	f.Fuzz(func(t *testing.T, data string) {
		out := string(AppendEvent(nil, 5, "", []byte(data)))
		evs := decodeAll(t, out)
		if len(evs) != 1 {
			t.Fatalf("round trip of %q gave %q", data, evs)
		}
		checkEvent(t, evs[0], Event{ID: "5", Data: data})
	})
}

func TestValidEventName(t *testing.T) {
	good := []string{"message", "order.updated", "a b", "ü", strings.Repeat("x", MaxEventNameLen)}
	bad := []string{"", "a\nb", "a\rb", "a\x00", " lead", "trail ", "sserelay.connected", "sserelay.x", strings.Repeat("x", MaxEventNameLen+1)}
	for _, n := range good {
		if !ValidEventName(n) {
			t.Errorf("ValidEventName(%q) = false, want true", n)
		}
	}
	for _, n := range bad {
		if ValidEventName(n) {
			t.Errorf("ValidEventName(%q) = true, want false", n)
		}
	}
	// What NATS publishers may send: anything that cannot forge a field.
	for _, n := range []string{" lead", "trail ", strings.Repeat("x", 1000), "message"} {
		if !SafeEventName(n) {
			t.Errorf("SafeEventName(%q) = false, want true", n)
		}
	}
	for _, n := range []string{"", "a\nb", "a\rb", "a\x00", "sserelay.connected"} {
		if SafeEventName(n) {
			t.Errorf("SafeEventName(%q) = true, want false", n)
		}
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	data := []byte(`{"type":"order.updated","id":12345,"status":"shipped","ts":1732550000000}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		buf = AppendEvent(buf[:0], 123456789, "order.updated", data)
	}
}
