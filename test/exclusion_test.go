package e2e_test

import (
	"net/url"
	"strconv"
	"testing"
)

// TestSenderExclusion: an event published with a connection's id reaches
// the user's other connections only, and stays excluded when that
// connection resumes from before it with the same connection_id.
func TestSenderExclusion(t *testing.T) {
	t.Parallel()
	const secret = "exclusion-secret"
	r := startRelay(t, relayOpts{Secret: secret})
	base := r.freshStream(t)
	alice := token(t, secret, "alice", "--app", "app", "--publish", "app")
	open := func(conn string, lastID string) *sseStream {
		q := url.Values{"app_id": {"app"}, "connection_id": {conn}}
		hdr := map[string]string{"Authorization": "Bearer " + alice}
		if lastID != "" {
			hdr["Last-Event-ID"] = lastID
		}
		s := openStream(t, r.URL+"/v1/events?"+q.Encode(), hdr)
		s.connected(t)
		return s
	}
	pub := func(data string, hdr map[string]string) ev {
		t.Helper()
		seq := publishHTTP(t, r.URL, alice, map[string]any{"app_id": "app", "feed": "alice", "event": "note", "data": data}, hdr)
		return ev{seq, "note", data}
	}
	c1 := open("conn-one-0001", "")
	c2 := open("conn-two-0002", "")

	e1 := pub("before", nil)
	e2 := pub("from conn one", map[string]string{"X-Connection-Id": "conn-one-0001"})
	e3 := pub("after", nil)
	if e1.seq != base+1 || e2.seq != base+2 || e3.seq != base+3 {
		t.Errorf("sequences %d %d %d, want %d..%d", e1.seq, e2.seq, e3.seq, base+1, base+3)
	}
	c1.waitID(t, e3.seq)
	c2.waitID(t, e3.seq)
	if got, want := normalize(c2.raw()), connectedFrame(2000, true, base, "conn-two-0002", "alice", "app")+frames(e1, e2, e3); got != want {
		t.Errorf("connection 2:\n got %q\nwant %q", got, want)
	}
	if got, want := normalize(c1.raw()), connectedFrame(2000, true, base, "conn-one-0001", "alice", "app")+frames(e1, e3); got != want {
		t.Errorf("connection 1 (the sender):\n got %q\nwant %q", got, want)
	}

	// Connection 1 comes back as EventSource would: same URL (same
	// connection_id), Last-Event-ID from before e1. The replay skips e2;
	// e4 comes live.
	c1.close()
	c1b := open("conn-one-0001", strconv.FormatUint(base, 10))
	e4 := pub("live after resume", nil)
	c1b.waitID(t, e4.seq)
	if got, want := normalize(c1b.raw()), connectedFrame(2000, false, 0, "conn-one-0001", "alice", "app")+frames(e1, e3, e4); got != want {
		t.Errorf("connection 1 resumed from %d:\n got %q\nwant %q", base, got, want)
	}
	// Resuming right after e1 (the excluded event is the first one to
	// replay) must not start at it either.
	c1b.close()
	c1c := open("conn-one-0001", strconv.FormatUint(e1.seq, 10))
	e5 := pub("live after second resume", nil)
	c1c.waitID(t, e5.seq)
	if got, want := normalize(c1c.raw()), connectedFrame(2000, false, 0, "conn-one-0001", "alice", "app")+frames(e3, e4, e5); got != want {
		t.Errorf("connection 1 resumed from %d:\n got %q\nwant %q", e1.seq, got, want)
	}
	// Another connection resuming from before gets e2.
	c3 := open("conn-three-003", strconv.FormatUint(base, 10))
	c3.waitID(t, e5.seq)
	if got, want := normalize(c3.raw()), connectedFrame(2000, false, 0, "conn-three-003", "alice", "app")+frames(e1, e2, e3, e4, e5); got != want {
		t.Errorf("another connection resumed from %d:\n got %q\nwant %q", base, got, want)
	}
}
