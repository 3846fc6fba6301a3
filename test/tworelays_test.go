package e2e_test

import (
	"fmt"
	"net/url"
	"strconv"
	"testing"
)

// TestTwoRelaysOneNATS: two relay processes on one outside nats-server. A
// client reads part of its events from relay A, reconnects to relay B with
// Last-Event-ID and gets the rest exactly once, in order.
func TestTwoRelaysOneNATS(t *testing.T) {
	t.Parallel()
	const secret = "two-relays-secret"
	nurl := startNATSServer(t)
	a := startRelay(t, relayOpts{Secret: secret, NATSURL: nurl})
	a.freshStream(t)
	b := startRelay(t, relayOpts{Secret: secret, NATSURL: nurl})
	if got, want := b.lastSeqAtStart(t), a.lastSeqAtStart(t); got != want {
		t.Fatalf("relay B sees last_seq %d, relay A saw %d: not the same stream?", got, want)
	}
	alice := token(t, secret, "alice", "--app", "app")
	hdr := map[string]string{"Authorization": "Bearer " + alice}
	q := url.Values{"app_id": {"app"}, "connection_id": {"alice-roaming"}}.Encode()

	var want []ev
	pub := func(i int) {
		t.Helper()
		data := fmt.Sprintf("event %d", i)
		seq := publishCLI(t, nurl, "", "--app", "app", "--feed", "alice", "--event", "n", data)
		want = append(want, ev{seq, "n", data})
		// Someone else's event between each: the client must not see it.
		publishCLI(t, nurl, "", "--app", "app", "--feed", "bob", "noise")
	}

	// Both relays share the stream but each needs its own consumer: the
	// same live event must reach a stream on each.
	t.Cleanup(func() {
		for name, r := range map[string]*relayProc{"A": a, "B": b} {
			for _, m := range r.jsonLines("consumer") {
				t.Errorf("relay %s: consumer trouble: %v", name, m["err"])
			}
		}
	})
	hq := url.Values{"app_id": {"app"}, "feed": {"bob"}}.Encode()
	bobTok := token(t, secret, "bob", "--app", "app")
	ha := openStream(t, a.URL+"/v1/events?"+hq, map[string]string{"Authorization": "Bearer " + bobTok})
	hb := openStream(t, b.URL+"/v1/events?"+hq, map[string]string{"Authorization": "Bearer " + bobTok})
	ha.connected(t)
	hb.connected(t)
	hello := publishCLI(t, nurl, "", "--app", "app", "--feed", "bob", "hello both")
	for name, s := range map[string]*sseStream{"A": ha, "B": hb} {
		s.waitRaw(t, "relay "+name+" to deliver a live event", func(raw string) bool { return len(dataEvents(parseSSE(raw))) > 0 })
		if got := dataEvents(s.events()); len(got) != 1 || got[0].ID != strconv.FormatUint(hello, 10) {
			t.Errorf("relay %s: live event %d: got %v", name, hello, got)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	sa := openStream(t, a.URL+"/v1/events?"+q, hdr)
	sa.connected(t)
	for i := 1; i <= 3; i++ {
		pub(i)
	}
	sa.waitID(t, want[2].seq)
	sa.close()
	got := dataEvents(sa.events())
	if fmtSeqs(ids(got)) != fmtSeqs(ids(evSeqs(want[:3]))) {
		t.Fatalf("relay A delivered %v, want %v", ids(got), ids(evSeqs(want[:3])))
	}
	last := got[len(got)-1].ID

	// Meanwhile (no stream open): more events.
	for i := 4; i <= 6; i++ {
		pub(i)
	}
	hdr["Last-Event-ID"] = last
	sb := openStream(t, b.URL+"/v1/events?"+q, hdr)
	sb.connected(t)
	for i := 7; i <= 9; i++ {
		pub(i)
	}
	sb.waitID(t, want[8].seq)
	wantB := connectedFrame(2000, false, 0, "alice-roaming", "alice", "app") + frames(want[3:]...)
	if got := normalize(sb.raw()); got != wantB {
		t.Errorf("relay B after Last-Event-ID %s:\n got %q\nwant %q", last, got, wantB)
	}
	// And relay A still serves live events from the shared stream.
	delete(hdr, "Last-Event-ID")
	sa2 := openStream(t, a.URL+"/v1/events?"+q, hdr)
	sa2.connected(t)
	pub(10)
	sa2.waitID(t, want[9].seq)
	sb.waitID(t, want[9].seq)
}

// evSeqs turns expected events into parsed ones (for ids()).
func evSeqs(evs []ev) []sseEvent {
	var out []sseEvent
	for _, e := range evs {
		out = append(out, sseEvent{ID: strconv.FormatUint(e.seq, 10), HasID: true})
	}
	return out
}
