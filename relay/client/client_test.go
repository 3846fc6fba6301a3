package client_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sserelay/sserelay/relay"
	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/client"
)

func fastConfig(e *relayEnv, src client.TokenSource) client.Config {
	return client.Config{URL: e.URL, AppID: "app", Token: src, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
}

func publishN(t *testing.T, e *relayEnv, from, to int) []string {
	t.Helper()
	var data []string
	for i := from; i <= to; i++ {
		d := "e" + strconv.Itoa(i)
		e.mustPublish(t, "sse.app.alice", d)
		data = append(data, d)
	}
	return data
}

// TestRestart: the relay stops (drain: a retry hint and a close) and comes
// back on the same port; events published while it was away arrive on
// resume. Every event exactly once, in order, with one connection id on
// every stream, and the client's own events left out on each of them.
func TestRestart(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := runClient(t, fastConfig(e, &tokens{e: e, sub: "alice"}))
	r.waitConnected(t, 1)
	r.expectData(t, publishN(t, e, 1, 3)...)

	e.stop()
	// The drain ended the stream with the hint of the relay's Retry (100 ms)
	// plus up to as much jitter, as a field before the close: the client
	// waits that long, not its own 20 ms backoff.
	if w := r.firstWait(t); w < 100*time.Millisecond || w > 200*time.Millisecond {
		t.Errorf("after the drain the client waits %s, want the relay's hint of 100 to 200 ms", w)
	}
	own := r.c.ConnectionID()
	e.mustPublish(t, "sse.app.alice", "own", "X-Connection-Id", own, "X-Connection-User", "alice") // replayed: still left out
	down := publishN(t, e, 4, 6)
	if err := e.start(); err != nil {
		t.Fatal(err)
	}
	r.expectData(t, down...)
	conns := r.waitConnected(t, 2)
	e.mustPublish(t, "sse.app.alice", "own live", "X-Connection-Id", own, "X-Connection-User", "alice")
	r.expectData(t, publishN(t, e, 7, 8)...)
	for _, c := range conns {
		if c.ConnectionID != own || c.User != "alice" || c.AppID != "app" {
			t.Errorf("stream opened as %+v, want connection id %s", c, own)
		}
	}
	if id := r.c.LastEventID(); id == "" {
		t.Error("no last event id after events")
	}
}

// TestTokenRenewal: tokens that live 2 s while events flow for 5 s. The
// client renews each one before it expires (or, with RenewBefore -1, when
// the relay ends the stream with sserelay.token-expired) and resumes: no
// event lost or doubled.
func TestTokenRenewal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		renew time.Duration
	}{{"before expiry", 0}, {"on token-expired", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			src := &tokens{e: e, sub: "alice", ttl: 2 * time.Second}
			cfg := fastConfig(e, src)
			cfg.RenewBefore = tc.renew
			r := runClient(t, cfg)
			r.waitConnected(t, 1)
			var want []string
			for start := time.Now(); time.Since(start) < 5*time.Second; {
				want = append(want, publishN(t, e, len(want)+1, len(want)+1)...)
				time.Sleep(20 * time.Millisecond)
			}
			r.expectData(t, want...)
			if n := src.calls.Load(); n < 3 {
				t.Errorf("%d tokens fetched in 5 s of 2 s tokens, want at least 3", n)
			}
			expired := 0
			for _, err := range r.errors() {
				var se *client.StatusError
				if errors.As(err, &se) {
					t.Errorf("relay refused a token: %v", err)
				}
				if errors.Is(err, client.ErrTokenExpired) {
					expired++
				}
			}
			if tc.renew == 0 && expired > 0 {
				t.Errorf("%d streams ended by sserelay.token-expired: the client should renew first", expired)
			}
			if tc.renew < 0 && expired == 0 {
				t.Errorf("no stream ended by sserelay.token-expired with renewal off")
			}
		})
	}
}

// TestUnauthorizedRefresh: the relay rotates its signing key while the
// client is away. Its cached token is refused with 401; it gets a new one at
// once and resumes without loss.
func TestUnauthorizedRefresh(t *testing.T) {
	e := newEnv(t, envOptions{})
	src := &tokens{e: e, sub: "alice"} // no expiry: the client has no reason to renew it
	r := runClient(t, fastConfig(e, src))
	r.waitConnected(t, 1)
	r.expectData(t, publishN(t, e, 1, 2)...)
	e.stop()
	e.rotate()
	down := publishN(t, e, 3, 4)
	if err := e.start(); err != nil {
		t.Fatal(err)
	}
	r.expectData(t, down...)
	r.expectData(t, publishN(t, e, 5, 5)...)
	if n := src.calls.Load(); n != 2 {
		t.Errorf("%d tokens fetched, want 2 (the first, and one after the 401)", n)
	}
	var saw401 bool
	for _, err := range r.errors() {
		var se *client.StatusError
		saw401 = saw401 || errors.As(err, &se) && se.StatusCode == 401
	}
	if !saw401 {
		t.Errorf("no 401 reported: %v", r.errors())
	}
}

// TestForbidden: a token that does not grant the app stops the client for
// good, with a typed error and a single request.
func TestForbidden(t *testing.T) {
	e := newEnv(t, envOptions{})
	var calls int
	src := client.TokenFunc(func(context.Context) (string, error) {
		calls++
		return e.token("alice", time.Hour, func(c *auth.Claims) { c.Apps = []string{"other"} })
	})
	c, err := client.New(fastConfig(e, src))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = c.Run(ctx, func(ev client.Event) error { t.Errorf("event %+v", ev); return nil })
	var se *client.StatusError
	if !errors.Is(err, client.ErrForbidden) || !errors.As(err, &se) || se.StatusCode != 403 || !strings.Contains(se.Message, "app") {
		t.Fatalf("Run = %v, want a 403 StatusError wrapping ErrForbidden", err)
	}
	if calls != 1 {
		t.Errorf("%d tokens fetched, want 1: a 403 is not retried", calls)
	}
}

// TestReset: the client resumes from an id whose successors were trimmed:
// it gets a typed history-gone reset, then the live stream.
func TestReset(t *testing.T) {
	e := newEnv(t, envOptions{stream: relay.StreamOptions{MaxMsgs: 5}})
	first := e.mustPublish(t, "sse.app.alice", "old")
	publishN(t, e, 1, 10) // trims "old" and more
	last := e.mustPublish(t, "sse.app.alice", "e10b")
	e.waitCursor(t, last) // else the reset is at an earlier live point and e10b follows it
	cfg := fastConfig(e, &tokens{e: e, sub: "alice"})
	cfg.LastEventID = strconv.FormatUint(first, 10)
	r := runClient(t, cfg)
	ev := r.next(t)
	if ev.Reset == nil || ev.Reset.Reason != client.ResetHistoryGone || ev.Name != client.EventReset {
		t.Fatalf("first event %+v, want a history-gone reset", ev)
	}
	if n, _ := strconv.ParseUint(ev.ID, 10, 64); n <= first {
		t.Errorf("reset id %s, want the live point past %d", ev.ID, first)
	}
	r.expectData(t, publishN(t, e, 11, 12)...)
}

// TestIterator: Events yields events in order; breaking out of the loop
// ends the stream and Run can be started again from where it stopped.
func TestIterator(t *testing.T) {
	e := newEnv(t, envOptions{})
	connected := make(chan struct{}, 4)
	cfg := fastConfig(e, &tokens{e: e, sub: "alice"})
	cfg.OnConnect = func(client.Connected) { connected <- struct{}{} }
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	published := make(chan error, 1)
	go func() {
		<-connected
		for _, d := range []string{"e1", "e2", "e3"} {
			if _, err := e.publish("sse.app.alice", d); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	defer func() {
		select {
		case err := <-published:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(20 * time.Second):
			t.Error("no stream opened to publish on")
		}
	}()
	var got []string
	for ev, err := range c.Events(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Data)
		if len(got) == 2 {
			break
		}
	}
	for ev, err := range c.Events(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Data)
		break
	}
	if strings.Join(got, ",") != "e1,e2,e3" {
		t.Fatalf("got %v, want e1,e2,e3", got)
	}
	cancel()
	for _, err := range c.Events(ctx) {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("after cancel: %v, want context.Canceled", err)
		}
	}
}

// TestWatchdog: a proxy between client and relay stops forwarding (a hung
// proxy or a dropped NAT entry: no error, no close). The stream goes
// silent although the relay sends keepalives; the watchdog reconnects and
// the events of the silent time arrive on resume.
func TestWatchdog(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *relay.Config) { c.Keepalive = 200 * time.Millisecond }})
	p := newFreezeProxy(t, e.addr)
	cfg := fastConfig(e, &tokens{e: e, sub: "alice"})
	cfg.URL = "http://" + p.ln.Addr().String()
	cfg.Watchdog = time.Second
	r := runClient(t, cfg)
	r.waitConnected(t, 1)
	r.expectData(t, publishN(t, e, 1, 2)...)
	before := p.accepted.Load()
	p.freeze()
	r.expectData(t, publishN(t, e, 3, 5)...)
	if p.accepted.Load() <= before {
		t.Errorf("events arrived without a new connection")
	}
	var silent bool
	for _, err := range r.errors() {
		silent = silent || strings.Contains(err.Error(), "silent")
	}
	if !silent {
		t.Errorf("no watchdog reconnect reported: %v", r.errors())
	}
}
