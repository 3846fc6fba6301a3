package relay

import (
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"testing"
)

// TestExclusionSkipsSender: an event published with the X-Connection-Id of
// one stream reaches the user's other streams only, whether it comes through
// POST /v1/publish or straight from NATS.
func TestExclusionSkipsSender(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice", claimPublish("demo"))
	s1 := e.open("app_id=demo", bearer(tok))
	id1 := s1.Hello(t).ConnectionID
	s2 := e.open("app_id=demo", bearer(tok))
	id2 := s2.Hello(t).ConnectionID
	if id1 == id2 {
		t.Fatalf("two streams got the same connection id %q", id1)
	}
	viaHTTP := wantSeq(t, e.post(t, tok, `{"app_id":"demo","feed":"alice","data":"mine"}`, "X-Connection-Id", id1))
	viaBody := wantSeq(t, e.post(t, tok, `{"app_id":"demo","feed":"alice","data":"mine too","connection_id":"`+id1+`"}`))
	viaNATS := e.publish("sse.demo.alice.t", "mine via NATS", HeaderConnectionID, id1, HeaderConnectionUser, "alice")
	toS1 := e.publish("sse.demo.alice", "from s2", HeaderConnectionID, id2, HeaderConnectionUser, "alice")
	forAll := e.publish("sse.demo.alice", "everyone")
	s2.ExpectIDs(t, viaHTTP, viaBody, viaNATS, forAll)
	s1.ExpectIDs(t, toS1, forAll)
	// An id nobody has excludes nobody.
	stray := e.publish("sse.demo.alice", "stray", HeaderConnectionID, "nobody-has-this")
	s1.ExpectIDs(t, stray)
	s2.ExpectIDs(t, stray)
}

// TestExclusionSurvivesReconnect: a stream that reconnects with its
// connection_id and a Last-Event-ID gets every event after that id exactly
// once, in order, across the replay and the live handover, except its own.
func TestExclusionSurvivesReconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.ReplayBatch = 7 }))
	tok := token(t, "alice")
	s1 := e.open("app_id=demo", bearer(tok))
	id := s1.Hello(t).ConnectionID
	var want []uint64 // what s1 must get, in order
	pub := func(i int) {
		own := i%3 == 1
		var seq uint64
		switch {
		case own && i%2 == 0:
			// As POST /v1/publish sends it: the publisher's user too.
			seq = e.publish("sse.demo.alice", "own "+strconv.Itoa(i), HeaderConnectionID, id, HeaderConnectionUser, "alice")
		case own:
			// The id alone excludes no one (Config.ExclusionWithoutUser is off).
			seq = e.publish("sse.demo.alice", "own "+strconv.Itoa(i), HeaderConnectionID, id)
			own = false
		default:
			seq = e.publish("sse.demo.alice", "other "+strconv.Itoa(i))
		}
		if i%5 == 0 {
			e.publish("sse.demo.bob", "noise") // another feed between them
		}
		if !own {
			want = append(want, seq)
		}
	}
	pub(0)
	s1.ExpectIDs(t, want...)
	last := want[len(want)-1]
	s1.Close()
	e.waitOpen(0)

	// Offline: the client misses these.
	want = want[:0]
	for i := 1; i < 40; i++ {
		pub(i)
	}
	r := e.open("app_id=demo&connection_id="+id, http.Header{"Authorization": {"Bearer " + tok}, "Last-Event-Id": {strconv.FormatUint(last, 10)}})
	if h := r.Hello(t); h.ConnectionID != id {
		t.Fatalf("reconnect got connection id %q, want %q", h.ConnectionID, id)
	}
	if got := r.Resp.Header.Get("X-Connection-Id"); got != id {
		t.Fatalf("reconnect X-Connection-Id %q, want %q", got, id)
	}
	// Live events during and after the catch-up.
	for i := 40; i < 60; i++ {
		pub(i)
	}
	r.ExpectIDs(t, want...)
	end := e.publish("sse.demo.alice", "end")
	r.ExpectIDs(t, end)

	// A poll with the same connection_id leaves out the same events.
	p := e.poll(t, "app_id=demo&poll=1&connection_id="+id+"&last_event_id="+strconv.FormatUint(last, 10), bearer(tok))
	var got []string
	for _, ev := range p.Events {
		got = append(got, ev.ID)
	}
	var wantIDs []string
	for _, s := range append(want, end) {
		wantIDs = append(wantIDs, strconv.FormatUint(s, 10))
	}
	if len(got) != len(wantIDs) {
		t.Fatalf("poll with connection_id returned %v, want %v", got, wantIDs)
	}
	for i := range got {
		if got[i] != wantIDs[i] {
			t.Fatalf("poll with connection_id returned %v, want %v", got, wantIDs)
		}
	}
}

// TestExclusionSharedProposedID: an id proposed by two open streams of the
// same user is accepted for both, and both are excluded.
func TestExclusionSharedProposedID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	const shared = "shared-tab_id-01"
	a := e.open("app_id=demo&connection_id="+shared, bearer(tok))
	b := e.open("app_id=demo&connection_id="+shared, bearer(tok))
	for _, s := range []*sseStream{a, b} {
		if h := s.Hello(t); h.ConnectionID != shared || s.Resp.Header.Get("X-Connection-Id") != shared {
			t.Fatalf("proposed id not kept: connected %q, header %q", h.ConnectionID, s.Resp.Header.Get("X-Connection-Id"))
		}
	}
	c := e.open("app_id=demo", bearer(tok))
	c.Connected(t)
	own := e.publish("sse.demo.alice", "own", HeaderConnectionID, shared, HeaderConnectionUser, "alice")
	all := e.publish("sse.demo.alice", "all")
	c.ExpectIDs(t, own, all)
	a.ExpectIDs(t, all)
	b.ExpectIDs(t, all)
	// The same on a replay.
	r := e.open("app_id=demo&last_event_id=0&connection_id="+shared, bearer(tok))
	r.Connected(t)
	r.ExpectIDs(t, all)
}

// TestExclusionOtherUserCannotBorrowID: user B proposing user A's connection
// id must not make A miss events: exclusion is about one user's own tabs.
func TestExclusionOtherUserCannotBorrowID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := token(t, "alice", claimFeeds("room"))
	bob := token(t, "bob", claimFeeds("room"), claimPublish("demo"))
	a := e.open("app_id=demo&feed=room&feed=alice", bearer(alice))
	idA := a.Hello(t).ConnectionID
	b := e.open("app_id=demo&feed=room&connection_id="+idA, bearer(bob))
	idB := b.Hello(t).ConnectionID
	if got := b.Resp.Header.Get("X-Connection-Id"); got != idB {
		t.Fatalf("B's X-Connection-Id %q, connected says %q", got, idB)
	}
	// B publishes to the shared room as its own tab: B is skipped, A is not.
	seq := wantSeq(t, e.post(t, bob, `{"app_id":"demo","feed":"room","data":"hi from bob"}`, "X-Connection-Id", idB))
	after := e.publish("sse.demo.room", "after")
	b.ExpectIDs(t, after)
	ev := a.MustNext(t)
	if ev.ID != strconv.FormatUint(seq, 10) {
		t.Errorf("BUG: A missed B's event %d because B borrowed A's connection id (got %+v first)", seq, ev)
	} else {
		a.ExpectIDs(t, after)
	}
	// A's own events still skip A, and a resume by A loses nothing of B's.
	e.publish("sse.demo.alice", "A's own", HeaderConnectionID, idA, HeaderConnectionUser, "alice")
	r := e.open("app_id=demo&feed=room&feed=alice&last_event_id=0&connection_id="+idA, bearer(alice))
	r.Connected(t)
	ev = r.MustNext(t)
	if ev.ID != strconv.FormatUint(seq, 10) {
		t.Errorf("BUG: A's resume skipped B's event %d (got %+v first)", seq, ev)
	}
}

var epConnIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

func TestExclusionGeneratedID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	seen := map[string]bool{}
	for range 4 {
		s := e.open("app_id=demo", bearer(tok))
		h := s.Hello(t)
		if !epConnIDPattern.MatchString(h.ConnectionID) {
			t.Fatalf("generated connection id %q is not 22 URL-safe characters", h.ConnectionID)
		}
		if s.Resp.Header.Get("X-Connection-Id") != h.ConnectionID {
			t.Fatalf("X-Connection-Id %q, connected says %q", s.Resp.Header.Get("X-Connection-Id"), h.ConnectionID)
		}
		if seen[h.ConnectionID] {
			t.Fatalf("connection id %q generated twice", h.ConnectionID)
		}
		seen[h.ConnectionID] = true
		s.Close()
	}
	// Polls get one too, and a proposed id is kept.
	r := e.getEvents(t, "app_id=demo&poll=1", bearer(tok))
	if id := r.Header.Get("X-Connection-Id"); !epConnIDPattern.MatchString(id) || seen[id] {
		t.Fatalf("poll connection id %q", id)
	}
	r = e.getEvents(t, "app_id=demo&poll=1&connection_id=my-own-id", bearer(tok))
	if id := r.Header.Get("X-Connection-Id"); id != "my-own-id" {
		t.Fatalf("poll with a proposed id got %q", id)
	}
}

// TestExclusionRequiresUser: by default an X-Connection-Id without
// X-Connection-User excludes no one, live, on a resume and in a poll (a
// backend that copies only the id would let a user who learns another's
// connection id suppress that user's events on a shared feed), and it is
// counted. With ExclusionWithoutUser the id alone excludes, as for raw
// publishers that cannot say the user.
func TestExclusionRequiresUser(t *testing.T) {
	t.Parallel()
	for _, anyUser := range []bool{false, true} {
		t.Run("without-user="+strconv.FormatBool(anyUser), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(func(c *Config) { c.ExclusionWithoutUser = anyUser }))
			tok := token(t, "alice", claimFeeds("room"))
			const id = "alice-tab-0001"
			s := e.open("app_id=demo&feed=room&connection_id="+id, bearer(tok))
			s.Connected(t)
			bare := e.publish("sse.demo.room", "id only", HeaderConnectionID, id)
			e.publish("sse.demo.room", "alice's own", HeaderConnectionID, id, HeaderConnectionUser, "alice")
			bobs := e.publish("sse.demo.room", "bob says alice's id", HeaderConnectionID, id, HeaderConnectionUser, "bob")
			end := e.publish("sse.demo.room", "end")
			want := []uint64{bare, bobs, end}
			if anyUser {
				want = []uint64{bobs, end}
			}
			s.ExpectIDs(t, want...)
			r := e.open("app_id=demo&feed=room&last_event_id=0&connection_id="+id, bearer(tok))
			r.Connected(t)
			r.ExpectIDs(t, want...)
			var polled []uint64
			for _, ev := range e.poll(t, "app_id=demo&feed=room&poll=1&last_event_id=0&connection_id="+id, bearer(tok)).Events {
				n, _ := strconv.ParseUint(ev.ID, 10, 64)
				polled = append(polled, n)
			}
			if !slices.Equal(polled, want) {
				t.Errorf("poll returned %v, want %v", polled, want)
			}
			wantIgnored := 1.0
			if anyUser {
				wantIgnored = 0
			}
			if got := e.metric("sserelay_exclusions_ignored_total"); got != wantIgnored {
				t.Errorf("sserelay_exclusions_ignored_total = %v, want %v", got, wantIgnored)
			}
		})
	}
}
