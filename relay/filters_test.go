package relay

// Stream parameters: validation, topic narrowing and overlapping filters.

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestEventsBadRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.MaxFeeds, c.MaxTopics = 2, 3 }))
	tokMsg := func(kind, v string) string {
		return "invalid subject token: " + kind + " " + strconv.Quote(v) + " must be 1 to 128 characters without '.', '*', '>', whitespace or control characters"
	}
	topicMsg := func(v string) string {
		return "invalid subject token: topic " + strconv.Quote(v) + " must be tokens of 1 to 128 characters joined by '.', without '*', '>', whitespace or control characters"
	}
	const idMsg = "last event id must be a decimal stream sequence"
	const pollMsg = "poll must be 1 (a poll) or 0 (a stream), once"
	const connMsg = "connection_id must be 8 to 64 characters of [A-Za-z0-9_-]"
	q := url.QueryEscape
	type tc struct {
		name, query string
		hdr         http.Header
		want        string
	}
	tests := []tc{
		{"no app_id", "", nil, "app_id is required"},
		{"poll true", "app_id=demo&poll=true", nil, pollMsg},
		{"poll 2", "app_id=demo&poll=2", nil, pollMsg},
		{"poll empty", "app_id=demo&poll=", nil, pollMsg},
		{"poll twice", "app_id=demo&poll=1&poll=1", nil, pollMsg},
		{"empty app_id", "app_id=", nil, "app_id is required"},
		{"app_id too long", "app_id=" + strings.Repeat("a", 129), nil, tokMsg("app_id", strings.Repeat("a", 129))},
		{"feed empty", "app_id=demo&feed=", nil, tokMsg("feed", "")},
		{"too many feeds", "app_id=demo&feed=alice&feed=f2&feed=f3", nil, "too many feeds (at most 2)"},
		{"too many topics", "app_id=demo&topic=a&topic=b&topic=c&topic=d", nil, "too many topics (at most 3)"},
		{"topic empty", "app_id=demo&topic=", nil, topicMsg("")},
		{"topic leading dot", "app_id=demo&topic=.a", nil, topicMsg(".a")},
		{"topic trailing dot", "app_id=demo&topic=a.", nil, topicMsg("a.")},
		{"topic double dot", "app_id=demo&topic=a..b", nil, topicMsg("a..b")},
		{"last_event_id abc", "app_id=demo&last_event_id=abc", nil, idMsg},
		{"last_event_id -1", "app_id=demo&last_event_id=-1", nil, idMsg},
		{"last_event_id +1", "app_id=demo&last_event_id=%2B1", nil, idMsg},
		{"last_event_id 21 digits", "app_id=demo&last_event_id=" + strings.Repeat("1", 21), nil, idMsg},
		{"last_event_id above uint64", "app_id=demo&last_event_id=99999999999999999999", nil, idMsg},
		{"last_event_id 1.5", "app_id=demo&last_event_id=1.5", nil, idMsg},
		{"Last-Event-ID header abc", "app_id=demo", http.Header{"Last-Event-Id": {"abc"}}, idMsg},
		{"Last-Event-ID header wins over a good query", "app_id=demo&last_event_id=1", http.Header{"Last-Event-Id": {"x1"}}, idMsg},
		{"connection_id 7 chars", "app_id=demo&connection_id=abcdefg", nil, connMsg},
		{"connection_id 65 chars", "app_id=demo&connection_id=" + strings.Repeat("a", 65), nil, connMsg},
		{"connection_id dot", "app_id=demo&connection_id=abcd.efgh", nil, connMsg},
		{"connection_id space", "app_id=demo&connection_id=" + q("abcd efgh"), nil, connMsg},
		{"connection_id plus", "app_id=demo&connection_id=" + q("abcd+efgh"), nil, connMsg},
		{"connection_id slash", "app_id=demo&connection_id=" + q("abcd/efgh"), nil, connMsg},
		{"connection_id unicode", "app_id=demo&connection_id=" + q("abcdéfgh"), nil, connMsg},
	}
	for _, bad := range []string{"a.b", "a*", "*", ">", "a>", "a b", "a\tb", "a\x01b", "a\x7fb", "a\nb", "a\u00a0b"} {
		tests = append(tests,
			tc{"app_id " + strconv.Quote(bad), "app_id=" + q(bad), nil, tokMsg("app_id", bad)},
			tc{"feed " + strconv.Quote(bad), "app_id=demo&feed=alice&feed=" + q(bad), nil, tokMsg("feed", bad)},
		)
		if bad != "a.b" { // a dotted topic is a topic path
			tests = append(tests, tc{"topic " + strconv.Quote(bad), "app_id=demo&topic=ok&topic=" + q(bad), nil, topicMsg(bad)})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A token that does not grant the app: validation comes before
			// authorization, so these are all 400, never 403.
			h := bearer(token(t, "alice", claimApps("other")))
			for k, v := range tt.hdr {
				h[k] = v
			}
			wantError(t, e.getEvents(t, tt.query, h), http.StatusBadRequest, tt.want)
		})
	}
	// The edges of the valid ranges are accepted.
	for _, query := range []string{
		"app_id=demo&connection_id=abcdefgh",
		"app_id=demo&connection_id=" + strings.Repeat("A-z_9", 12) + "abcd",
		"app_id=demo&last_event_id=18446744073709551615",
		"app_id=demo&last_event_id=",
		"app_id=demo&feed=alice&topic=a.b.c&topic=x&topic=y",
		"app_id=" + strings.Repeat("a", 128),
	} {
		t.Run("ok "+query, func(t *testing.T) {
			s, err := e.tryOpen(query, bearer(token(t, "alice")))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.Connected(t)
		})
	}
}

func TestEventsTopicNarrowing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	s := e.open("app_id=demo&topic=orders", bearer(tok))
	s.Connected(t)
	all := e.open("app_id=demo", bearer(tok))
	all.Connected(t)

	var seqs []uint64
	pub := func(subj string) uint64 { seq := e.publish(subj, subj); seqs = append(seqs, seq); return seq }
	a := pub("sse.demo.alice.orders")
	b := pub("sse.demo.alice.orders.eu")
	pub("sse.demo.alice.ordersx")
	pub("sse.demo.alice")
	pub("sse.demo.alice.other.orders")
	pub("sse.demo.bob.orders")
	pub("sse.other.alice.orders")
	c := pub("sse.demo.alice.orders.eu.paris")
	// Events arrive in order: anything that leaked would come before c.
	s.ExpectIDs(t, a, b, c)
	all.ExpectIDs(t, seqs[0], seqs[1], seqs[2], seqs[3], seqs[4], c)

	// The same filter on a resume from the store.
	r := e.open("app_id=demo&topic=orders", http.Header{"Authorization": {"Bearer " + tok}, "Last-Event-Id": {"0"}})
	r.Connected(t)
	r.ExpectIDs(t, a, b, c)
	d := e.publish("sse.demo.alice.orders", "live")
	r.ExpectIDs(t, d)

	// Several topics, one of them a path.
	m := e.open("app_id=demo&topic=ordersx&topic=other.orders&last_event_id=0", bearer(tok))
	m.Connected(t)
	m.ExpectIDs(t, seqs[2], seqs[4])
}

// TestEventsOverlappingFilterOnce: a topic list whose subjects overlap
// (orders and orders.eu) or a feed listed twice must still deliver every
// event exactly once, live, on a resume and in a poll.
func TestEventsOverlappingFilterOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	ids := func(seqs []uint64) []string {
		var s []string
		for _, q := range seqs {
			s = append(s, strconv.FormatUint(q, 10))
		}
		return s
	}
	all := []uint64{e.publish("sse.demo.alice.orders.eu", "a"), e.publish("sse.demo.alice.orders", "b")}
	for _, query := range []string{
		"app_id=demo&topic=orders&topic=orders.eu",
		"app_id=demo&topic=orders&topic=orders",
		"app_id=demo&feed=alice&feed=alice",
	} {
		t.Run(query, func(t *testing.T) {
			e.waitCursor(all[len(all)-1])
			p := e.poll(t, query+"&poll=1&last_event_id=0", bearer(tok))
			var pollIDs []string
			for _, ev := range p.Events {
				pollIDs = append(pollIDs, ev.ID)
			}
			if want := ids(all); !slices.Equal(pollIDs, want) {
				t.Errorf("poll returned ids %v, want each once: %v", pollIDs, want)
			}
			live := e.open(query, bearer(tok))
			live.Connected(t)
			r := e.open(query+"&last_event_id=0", bearer(tok))
			r.Connected(t)
			c := e.publish("sse.demo.alice.orders.eu", "c")
			d := e.publish("sse.demo.alice.orders", "d")
			all = append(all, c, d)
			live.ExpectIDs(t, c, d)
			var got []string
			for range all {
				got = append(got, r.MustNext(t).ID)
			}
			if want := ids(all); !slices.Equal(got, want) {
				t.Errorf("resume delivered ids %v, want each once: %v", got, want)
			}
			live.Close()
			r.Close()
		})
	}
}

// TestDedupe: the first of each value, in order, and the caller's slice
// unchanged (it is the parsed query's).
func TestDedupe(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{nil, nil},
		{[]string{"a"}, []string{"a"}},
		{[]string{"a", "b", "c"}, []string{"a", "b", "c"}},
		{[]string{"a", "a"}, []string{"a"}},
		{[]string{"a", "b", "a", "c", "b", "d"}, []string{"a", "b", "c", "d"}},
		{[]string{"a", "b", "b", "b"}, []string{"a", "b"}},
		{[]string{"", "x", ""}, []string{"", "x"}},
	} {
		in := slices.Clone(tc.in)
		if got := dedupe(in); !slices.Equal(got, tc.want) {
			t.Errorf("dedupe(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("dedupe(%q) changed its argument to %q", tc.in, in)
		}
	}
}

// TestRepeatedQueryParameters: a single-valued parameter given twice is a
// 400 that names it, not a stream with the first value; topic and feed
// are lists and may repeat.
func TestRepeatedQueryParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice", claimFeeds("_all"))
	for _, c := range []struct{ query, param string }{
		{"app_id=demo&app_id=other", "app_id"},
		{"app_id=demo&app_id=demo", "app_id"},
		{"app_id=demo&connection_id=abcdefgh&connection_id=zzzzzzzz", "connection_id"},
		{"app_id=demo&last_event_id=1&last_event_id=2", "last_event_id"},
		{"app_id=demo&last_event_id=1&last_event_id=", "last_event_id"},
		{"app_id=demo&poll=1&app_id=demo", "app_id"},
	} {
		t.Run(c.query, func(t *testing.T) {
			wantError(t, e.getEvents(t, c.query, bearer(tok)), http.StatusBadRequest, c.param+" must be given once")
		})
	}
	// The token in the query, given twice: the same answer whoever's it is.
	q := "app_id=demo&access_token=" + tok + "&access_token=" + token(t, "bob")
	wantError(t, e.getEvents(t, q, nil), http.StatusBadRequest, "access_token must be given once")
	wantError(t, e.getEvents(t, "app_id=demo&access_token="+tok+"&access_token="+tok, nil), http.StatusBadRequest, "access_token must be given once")

	s := e.open("app_id=demo&feed=alice&feed=_all&topic=a&topic=b&connection_id=abcdefgh", bearer(tok))
	if h := s.Hello(t); h.ConnectionID != "abcdefgh" {
		t.Fatalf("connection id %q, want abcdefgh", h.ConnectionID)
	}
	s.Close()
}
