package relay

// Who may read which stream: token sources, refusals, grants, isolation between users, expiry.

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sserelay/sserelay/relay/auth"
)

func TestEventsTokenSources(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice, bob := token(t, "alice"), token(t, "bob")
	open := func(query string, hdr http.Header) helloData {
		t.Helper()
		s := e.open(query, hdr)
		defer s.Close()
		return s.Hello(t)
	}
	if h := open("app_id=demo", bearer(alice)); h.User != "alice" {
		t.Fatalf("Authorization header: user %q", h.User)
	}
	if h := open("app_id=demo&access_token="+alice, nil); h.User != "alice" {
		t.Fatalf("access_token query: user %q", h.User)
	}
	if h := open("app_id=demo", http.Header{"Cookie": {"sserelay_token=" + alice}}); h.User != "alice" {
		t.Fatalf("sserelay_token cookie: user %q", h.User)
	}
	// Header first, then query, then cookie.
	if h := open("app_id=demo&access_token="+bob, http.Header{"Authorization": {"Bearer " + alice}, "Cookie": {"sserelay_token=" + bob}}); h.User != "alice" {
		t.Fatalf("header must win over query and cookie: user %q", h.User)
	}
	if h := open("app_id=demo&access_token="+alice, http.Header{"Cookie": {"sserelay_token=" + bob}}); h.User != "alice" {
		t.Fatalf("query must win over cookie: user %q", h.User)
	}
}

func TestEventsUnauthorized(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	otherSecret, err := auth.Sign([]byte("another-secret-0123456789abcdef"), auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	expired := token(t, "alice", claimExpires(time.Now().Add(-time.Hour)))
	good := token(t, "alice")
	parts := strings.Split(good, ".")
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory"}`)) + "." + parts[2]
	tests := []struct {
		name  string
		query string
		hdr   http.Header
		want  string
	}{
		{"no token", "app_id=demo", nil, "missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie"},
		{"not bearer", "app_id=demo", http.Header{"Authorization": {"Basic " + good}}, "missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie"},
		{"other secret", "app_id=demo", bearer(otherSecret), "token signature invalid"},
		{"payload swapped", "app_id=demo", bearer(forged), "token signature invalid"},
		{"expired", "app_id=demo", bearer(expired), "token expired"},
		{"alg none", "app_id=demo", bearer(unsignedToken("alice")), "token algorithm not allowed"},
		{"alg none in query", "app_id=demo&access_token=" + unsignedToken("alice"), nil, "token algorithm not allowed"},
		{"expired in cookie", "app_id=demo", http.Header{"Cookie": {"sserelay_token=" + expired}}, "token expired"},
		{"garbage", "app_id=demo", bearer("not-a-jwt"), "token malformed"},
		// Authentication comes before validation: no hint about the input to a stranger.
		{"no token, bad input", "app_id=a.b", nil, "missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, e.getEvents(t, tt.query, tt.hdr), http.StatusUnauthorized, tt.want)
		})
	}
	if got := e.metric("sserelay_streams_rejected_total"); got != float64(len(tests)) {
		t.Fatalf("sserelay_streams_rejected_total %v, want %d", got, len(tests))
	}
	if n := e.relay.OpenStreams(); n != 0 {
		t.Fatalf("%d open streams after refusals", n)
	}
}

func TestEventsForbidden(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name, query, tok, want string
	}{
		{"app not in apps", "app_id=demo", token(t, "alice", claimApps("other", "more")), `token does not grant app "demo"`},
		{"empty apps claim", "app_id=demo", token(t, "alice", claimApps()), `token does not grant app "demo"`},
		{"feed not granted", "app_id=demo&feed=team1", token(t, "alice"), `token does not grant feed "team1"`},
		{"other user's feed", "app_id=demo&feed=bob", token(t, "alice", claimFeeds("team1")), `token does not grant feed "bob"`},
		{"one feed of several not granted", "app_id=demo&feed=alice&feed=team1&feed=team2", token(t, "alice", claimFeeds("team1")), `token does not grant feed "team2"`},
		{"feed prefix is not a grant", "app_id=demo&feed=team", token(t, "alice", claimFeeds("team1")), `token does not grant feed "team"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, e.getEvents(t, tt.query, bearer(tt.tok)), http.StatusForbidden, tt.want)
		})
	}
	// The apps claim, when it lists the app, lets the stream open.
	s := e.open("app_id=demo", bearer(token(t, "alice", claimApps("other", "demo"))))
	s.Connected(t)
}

func TestEventsFeedsClaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice", claimFeeds("team1", "_all"))
	both := e.open("app_id=demo&feed=team1&feed=alice", bearer(tok))
	if h := both.Hello(t); h.User != "alice" {
		t.Fatalf("connected %+v", h)
	}
	teamOnly := e.open("app_id=demo&feed=team1", bearer(tok))
	teamOnly.Connected(t)
	own := e.open("app_id=demo", bearer(tok)) // default: the token's own feed only
	own.Connected(t)

	t1 := e.publish("sse.demo.team1", "team")
	al := e.publish("sse.demo.alice.x", "alice")
	e.publish("sse.demo.team2", "other team")
	e.publish("sse.demo._all", "broadcast not asked for")
	t2 := e.publish("sse.demo.team1.chat", "team again")
	al2 := e.publish("sse.demo.alice", "alice again")
	both.ExpectIDs(t, t1, al, t2, al2)
	teamOnly.ExpectIDs(t, t1, t2)
	own.ExpectIDs(t, al, al2)

	// Without the claim the same request is refused.
	wantError(t, e.getEvents(t, "app_id=demo&feed=team1&feed=alice", bearer(token(t, "alice"))),
		http.StatusForbidden, `token does not grant feed "team1"`)
}

func TestEventsUserIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.open("app_id=demo", bearer(token(t, "alice")))
	alice.Connected(t)
	bob := e.open("app_id=demo", bearer(token(t, "bob")))
	if h := bob.Hello(t); h.User != "bob" {
		t.Fatalf("connected %+v", h)
	}
	a1 := e.publish("sse.demo.alice", "secret 1")
	a2 := e.publish("sse.demo.alice.orders", "secret 2")
	e.publish("sse.other.bob", "bob in another app")
	e.publish("sse.demo.bobby", "another user with a longer name")
	b1 := e.publish("sse.demo.bob", "for bob")
	bob.ExpectIDs(t, b1)
	alice.ExpectIDs(t, a1, a2)

	// Resuming from the start gives bob only his own event too.
	r := e.open("app_id=demo&last_event_id=0", bearer(token(t, "bob")))
	r.Connected(t)
	r.ExpectIDs(t, b1)
	// A poll as well.
	p := e.getEvents(t, "app_id=demo&poll=1&last_event_id=0", bearer(token(t, "bob")))
	wantJSON(t, p, `{"events":[{"id":"`+strconv.FormatUint(b1, 10)+`","data":"for bob"}],"last_event_id":"`+strconv.FormatUint(b1, 10)+`"}`)
	// And asking for alice's feed is refused.
	wantError(t, e.getEvents(t, "app_id=demo&feed=alice", bearer(token(t, "bob"))), http.StatusForbidden, `token does not grant feed "alice"`)
}

func TestEventsTokenExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// exp has one-second precision: this token expires 1 to 2 s from now.
	exp := time.Now().Add(2 * time.Second)
	s := e.open("app_id=demo", bearer(token(t, "alice", claimExpires(exp))))
	s.Connected(t)
	seq := e.publish("sse.demo.alice", "before expiry")
	s.ExpectIDs(t, seq)
	ev := s.MustNext(t)
	if ev.Event != EventTokenExpired || ev.HasID || ev.Data != `{"reason":"token expired"}` {
		t.Fatalf("got %+v, want a %s event without id", ev, EventTokenExpired)
	}
	if now := time.Now(); now.Before(exp.Truncate(time.Second)) {
		t.Fatalf("token-expired sent at %v, before exp %v", now, exp.Truncate(time.Second))
	}
	if rest := s.ReadRest(t); rest != "" {
		t.Fatalf("after token-expired the stream sent %q", rest)
	}
	e.waitOpen(0)
	// A token without exp does not expire the stream.
	noExp := e.open("app_id=demo", bearer(token(t, "bob", func(c *auth.Claims) { c.ExpiresAt = nil })))
	noExp.Connected(t)
	seq = e.publish("sse.demo.bob", "still here")
	noExp.ExpectIDs(t, seq)
}
