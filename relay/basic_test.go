package relay

import (
	"testing"
)

func TestLiveAndResumeSmoke(t *testing.T) {
	e := newEnv(t)
	tok := token(t, "alice")
	s := e.open("app_id=demo", bearer(tok))
	hello := s.Connected(t)
	if !hello.HasID || hello.ID != "0" {
		t.Fatalf("connected event without Last-Event-ID must carry id: C, got %+v", hello)
	}
	seq1 := e.publish("sse.demo.alice", "one")
	e.publish("sse.demo.bob", "not yours")
	seq3 := e.publish("sse.demo.alice.orders", "three", HeaderEvent, "order")
	s.ExpectIDs(t, seq1, seq3)

	r := e.open("app_id=demo&last_event_id="+"1", bearer(tok))
	if ev := r.Connected(t); ev.HasID {
		t.Fatalf("connected event after Last-Event-ID must carry no id, got %+v", ev)
	}
	ev := r.MustNext(t)
	if ev.ID != "3" || ev.Event != "order" || ev.Data != "three" {
		t.Fatalf("replayed %+v", ev)
	}
}
