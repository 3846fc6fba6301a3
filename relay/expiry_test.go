package relay

import (
	"context"
	"testing"
	"time"

	"github.com/sserelay/sserelay/relay/auth"
)

// waitFor polls cond until it holds; the deadline is a hang guard only.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestExpiries: one timer expires every session at its time, in any order
// of adding, and a removed session never expires.
func TestExpiries(t *testing.T) {
	var e expiries
	mk := func(id string) *session { return newSession(nil, id, "u", "app", []string{"u"}, nil) }
	early, late, removed, past, never := mk("c-early"), mk("c-late"), mk("c-removed"), mk("c-past"), mk("c-never")
	now := time.Now()
	e.add(late, now.Add(60*time.Millisecond))
	e.add(removed, now.Add(90*time.Millisecond))
	e.add(early, now.Add(30*time.Millisecond))
	e.add(past, now.Add(-time.Second)) // expired already: fires at once
	e.remove(removed)
	e.remove(never)               // never added: nothing to do
	e.remove(&session{expIdx: 0}) // index 0 but not in the queue: nothing to do

	waitFor(t, "the three expiries", func() bool {
		return early.expired.Load() && late.expired.Load() && past.expired.Load()
	})
	for _, s := range []*session{early, late, past} {
		if !s.kicked.Load() {
			t.Errorf("%s expired without a signal", s.connID)
		}
		e.remove(s) // what end does after the expiry fired: nothing to do
	}
	time.Sleep(time.Until(now.Add(150 * time.Millisecond)))
	if removed.expired.Load() || removed.kicked.Load() {
		t.Error("a removed session expired")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.q) != 0 || e.armed != 0 {
		t.Errorf("after all expiries: %d queued, timer armed for %d", len(e.q), e.armed)
	}
}

// TestExpiriesRemoveKeepsOrder: removing from the middle of the queue
// keeps the others' indexes and times right.
func TestExpiriesRemoveKeepsOrder(t *testing.T) {
	var e expiries
	base := time.Now().Add(time.Hour)
	var all []*session
	for i := range 50 {
		s := newSession(nil, "c", "u", "app", []string{"u"}, nil)
		// Times out of order: 0, 37, 74 (mod 50)...
		e.add(s, base.Add(time.Duration(i*37%50)*time.Second))
		all = append(all, s)
	}
	for i, s := range all {
		if i%3 == 0 {
			e.remove(s)
		}
	}
	e.mu.Lock()
	for i, x := range e.q {
		if int(x.s.expIdx) != i {
			t.Fatalf("entry %d has index %d", i, x.s.expIdx)
		}
		if p := (i - 1) / 2; i > 0 && e.q[p].at > x.at {
			t.Fatalf("entry %d (at %d) before its parent %d (at %d)", i, x.at, p, e.q[p].at)
		}
	}
	if want := 50 - 17; len(e.q) != want {
		t.Fatalf("%d queued, want %d", len(e.q), want)
	}
	e.mu.Unlock()
	for _, s := range all {
		e.remove(s)
	}
	if e.q != nil || e.armed != 0 {
		t.Fatalf("after removing all: %d queued, timer armed for %d", len(e.q), e.armed)
	}
}

// TestTokenLeewayStream: a token accepted within the verifier's leeway
// (its exp just passed) opens a stream that lives until exp + leeway, not
// one told at once that its token expired, which would reconnect in a loop.
func TestTokenLeewayStream(t *testing.T) {
	t.Parallel()
	const leeway = 3 * time.Second
	v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: testSecret, Leeway: leeway})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withConfig(func(c *Config) { c.Verifier, c.TokenLeeway = v, leeway }))
	exp := time.Now().Add(-time.Second).Truncate(time.Second) // 1 to 2 s ago
	s := e.open("app_id=demo", bearer(token(t, "alice", claimExpires(exp))))
	s.Connected(t)
	seq := e.publish("sse.demo.alice", "within the leeway")
	ev := s.MustNext(t)
	if ev.Event == EventTokenExpired || evID(ev) != seq {
		t.Fatalf("got %+v, want event %d: the stream ended before exp + leeway", ev, seq)
	}
	if ev := s.MustNext(t); ev.Event != EventTokenExpired {
		t.Fatalf("got %+v, want %s", ev, EventTokenExpired)
	}
	if late := time.Since(exp.Add(leeway)); late < 0 {
		t.Errorf("token-expired %v before exp + leeway", -late)
	}
}
