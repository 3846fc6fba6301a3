package relay

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sserelay/sserelay/relay/auth"
)

func TestPublishReachesStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pub := token(t, "backend", claimPublish("demo:*"))
	s := e.open("app_id=demo", bearer(token(t, "alice")))
	s.Connected(t)
	topic := e.open("app_id=demo&topic=orders", bearer(token(t, "alice")))
	topic.Connected(t)

	seq := wantSeq(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","event":"greet","data":"hello\nworld"}`))
	s.ExpectNext(t, seq, "greet", "hello\nworld")
	m := e.stored(t, seq)
	if m.Subject != "sse.demo.alice" || string(m.Data) != "hello\nworld" || m.Header.Get(HeaderEvent) != "greet" ||
		m.Header.Get(HeaderConnectionID) != "" || m.Header.Get(HeaderMsgID) != "" {
		t.Fatalf("stored %s %q %v", m.Subject, m.Data, m.Header)
	}
	seq2 := wantSeq(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","topic":"orders.eu","data":"t"}`))
	if seq2 != seq+1 {
		t.Fatalf("second publish seq %d, want %d", seq2, seq+1)
	}
	s.ExpectNext(t, seq2, "", "t")
	topic.ExpectNext(t, seq2, "", "t")
	if m := e.stored(t, seq2); m.Subject != "sse.demo.alice.orders.eu" || m.Header.Get(HeaderEvent) != "" {
		t.Fatalf("stored %s %v", m.Subject, m.Header)
	}
	if got := e.metric("sserelay_published_total"); got != 2 {
		t.Fatalf("sserelay_published_total %v, want 2", got)
	}
	// Content-Type with parameters is fine, and so is none at all.
	r := do(t, http.MethodPost, e.url+"/v1/publish", http.Header{"Authorization": {"Bearer " + pub}, "Content-Type": {"application/json; charset=utf-8"}},
		`{"app_id":"demo","feed":"alice","data":"ct"}`)
	s.ExpectNext(t, wantSeq(t, r), "", "ct")
	r = do(t, http.MethodPost, e.url+"/v1/publish", http.Header{"Authorization": {"Bearer " + pub}}, `{"app_id":"demo","feed":"alice","data":"no ct"}`)
	s.ExpectNext(t, wantSeq(t, r), "", "no ct")
}

func TestPublishDataEncoding(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pub := token(t, "backend", claimPublish("demo:*"))
	s := e.open("app_id=demo", bearer(token(t, "alice")))
	s.Connected(t)
	tests := []struct {
		name, data, want string
	}{
		{"string verbatim", `"plain text"`, "plain text"},
		{"string with escapes", `"caf\u00e9 \"q\" \\ \t tab"`, "café \"q\" \\ \t tab"},
		{"string that looks like JSON", `"{\"a\": 1}"`, `{"a": 1}`},
		{"empty string", `""`, ""},
		{"object compacted", "{ \"a\" : 1,\n \"b\" : [ 1, 2 ], \"c\": {\"d\": \"x y\"} }", `{"a":1,"b":[1,2],"c":{"d":"x y"}}`},
		{"array", `[ 1 , "two" ]`, `[1,"two"]`},
		{"number", ` 42.50 `, `42.50`},
		{"true", `true`, `true`},
		{"null", `null`, `null`},
		{"object key order kept", `{"z":1,"a":2}`, `{"z":1,"a":2}`},
		{"html not escaped", `{"h":"<b>&</b>"}`, `{"h":"<b>&</b>"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq := wantSeq(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","data":`+tt.data+`}`))
			if m := e.stored(t, seq); string(m.Data) != tt.want {
				t.Fatalf("stored data %q, want %q", m.Data, tt.want)
			}
			s.ExpectNext(t, seq, "", tt.want)
		})
	}
}

func TestPublishDuplicateID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pub := token(t, "backend", claimPublish("demo:*"))
	s := e.open("app_id=demo", bearer(token(t, "alice")))
	s.Connected(t)
	body := `{"app_id":"demo","feed":"alice","data":"once","id":"order-17"}`
	first := wantSeq(t, e.post(t, pub, body))
	if m := e.stored(t, first); m.Header.Get(HeaderMsgID) != "demo.alice.backend.order-17" {
		t.Fatalf("stored header %v, want Nats-Msg-Id demo.alice.backend.order-17", m.Header)
	}
	if again := wantSeq(t, e.post(t, pub, body)); again != first {
		t.Fatalf("duplicate id got seq %d, want the original %d", again, first)
	}
	// The id alone decides: another payload with the same id is still a duplicate.
	if again := wantSeq(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","data":"changed","id":"order-17"}`)); again != first {
		t.Fatalf("duplicate id with other data got seq %d, want %d", again, first)
	}
	other := wantSeq(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","data":"twice","id":"order-18"}`))
	noID := wantSeq(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","data":"twice"}`))
	noID2 := wantSeq(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","data":"twice"}`))
	if other == first || noID == other || noID2 == noID {
		t.Fatalf("distinct publishes share a seq: %d %d %d %d", first, other, noID, noID2)
	}
	s.ExpectIDs(t, first, other, noID, noID2)
}

func TestPublishConnectionIDHeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pub := token(t, "alice", claimPublish("demo"))
	s1 := e.open("app_id=demo&connection_id=tab-one-0001", bearer(pub))
	s1.Connected(t)
	s2 := e.open("app_id=demo", bearer(pub))
	s2.Connected(t)

	// The header is used when the body has no connection_id.
	seq := wantSeq(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","data":"from tab one"}`, "X-Connection-Id", "tab-one-0001"))
	if m := e.stored(t, seq); m.Header.Get(HeaderConnectionID) != "tab-one-0001" {
		t.Fatalf("stored header %v, want X-Connection-Id tab-one-0001", m.Header)
	}
	// The body wins over the header.
	seq2 := wantSeq(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","data":"body wins","connection_id":"tab-two-0002"}`, "X-Connection-Id", "tab-one-0001"))
	if m := e.stored(t, seq2); m.Header.Get(HeaderConnectionID) != "tab-two-0002" {
		t.Fatalf("stored header %v, want X-Connection-Id tab-two-0002", m.Header)
	}
	s2.ExpectIDs(t, seq, seq2)
	s1.ExpectIDs(t, seq2) // seq was its own
	// A header that is not a valid connection id is refused like the field.
	wantError(t, e.post(t, pub, `{"app_id":"demo","feed":"alice","data":"x"}`, "X-Connection-Id", "short"),
		http.StatusBadRequest, "connection_id must be 8 to 64 characters of [A-Za-z0-9_-]")
}

func TestPublishBadRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The token may publish nowhere: validation comes before authorization.
	tok := token(t, "backend")
	tokMsg := func(kind, v string) string {
		return "invalid subject token: " + kind + " " + strconv.Quote(v) + " must be 1 to 128 characters without '.', '*', '>', whitespace or control characters"
	}
	topicMsg := func(v string) string {
		return "invalid subject token: topic " + strconv.Quote(v) + " must be tokens of 1 to 128 characters joined by '.', without '*', '>', whitespace or control characters"
	}
	const eventMsg = `event must be 1 to 128 characters without CR, LF, NUL or surrounding spaces, and must not start with "sserelay."`
	const connMsg = "connection_id must be 8 to 64 characters of [A-Za-z0-9_-]"
	const idMsg = "id must be 1 to 128 characters without whitespace or control characters"
	// decodeMsg is what encoding/json says about a body that is not a
	// publish object; its wording belongs to the standard library.
	decodeMsg := func(body string) string {
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		var p PublishRequest
		err := dec.Decode(&p)
		if err == nil {
			t.Fatalf("body %s decodes", body)
		}
		return "body must be one JSON object of the publish fields: " + err.Error()
	}
	js := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	body := func(fields string) string { return `{"app_id":"demo","feed":"alice","data":"x"` + fields + `}` }
	tests := []struct {
		name, body, want string
	}{
		{"empty body", ``, decodeMsg(``)},
		{"truncated", `{"app_id":"demo"`, decodeMsg(`{"app_id":"demo"`)},
		{"not JSON", `app_id=demo`, decodeMsg(`app_id=demo`)},
		{"array", `[]`, decodeMsg(`[]`)},
		{"string", `"x"`, decodeMsg(`"x"`)},
		{"unknown field", body(`,"extra":1`), decodeMsg(body(`,"extra":1`))},
		{"misspelled field", `{"appid":"demo","feed":"alice","data":"x"}`, decodeMsg(`{"appid":"demo","feed":"alice","data":"x"}`)},
		{"wrong type", `{"app_id":7,"feed":"alice","data":"x"}`, decodeMsg(`{"app_id":7,"feed":"alice","data":"x"}`)},
		{"two objects", body(``) + body(``), "body must be one JSON object"},
		{"trailing garbage", body(``) + ` x`, "body must be one JSON object"},
		{"no app_id", `{"feed":"alice","data":"x"}`, tokMsg("app_id", "")},
		{"no feed", `{"app_id":"demo","data":"x"}`, tokMsg("feed", "")},
		{"no data", `{"app_id":"demo","feed":"alice"}`, "data is required"},
		{"event reserved", body(`,"event":"sserelay.x"`), eventMsg},
		{"event reserved connected", body(`,"event":"sserelay.connected"`), eventMsg},
		{"event LF", body(`,"event":"a\nb"`), eventMsg},
		{"event CR", body(`,"event":"a\rb"`), eventMsg},
		{"event NUL", body(`,"event":"a\u0000b"`), eventMsg},
		{"event leading space", body(`,"event":" a"`), eventMsg},
		{"event trailing space", body(`,"event":"a "`), eventMsg},
		{"event too long", body(`,"event":"` + strings.Repeat("e", 129) + `"`), eventMsg},
		{"connection_id short", body(`,"connection_id":"abc"`), connMsg},
		{"connection_id long", body(`,"connection_id":"` + strings.Repeat("c", 65) + `"`), connMsg},
		{"connection_id dot", body(`,"connection_id":"abcd.efgh"`), connMsg},
		{"id space", body(`,"id":"a b"`), idMsg},
		{"id control", body(`,"id":"a\u0001b"`), idMsg},
		{"id too long", body(`,"id":"` + strings.Repeat("i", 129) + `"`), idMsg},
		{"topic double dot", body(`,"topic":"a..b"`), topicMsg("a..b")},
	}
	for _, bad := range []string{"a.b", "a*", "*", ">", "a>", "a b", "a\tb", "a\x01b", "a\nb"} {
		tests = append(tests,
			struct{ name, body, want string }{"app_id " + strconv.Quote(bad), `{"app_id":` + js(bad) + `,"feed":"alice","data":"x"}`, tokMsg("app_id", bad)},
			struct{ name, body, want string }{"feed " + strconv.Quote(bad), `{"app_id":"demo","feed":` + js(bad) + `,"data":"x"}`, tokMsg("feed", bad)},
		)
		if bad != "a.b" {
			tests = append(tests, struct{ name, body, want string }{"topic " + strconv.Quote(bad), body(`,"topic":` + js(bad)), topicMsg(bad)})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, e.post(t, tok, tt.body), http.StatusBadRequest, tt.want)
		})
	}
	wantError(t, do(t, http.MethodPost, e.url+"/v1/publish", http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"text/plain"}}, body(``)),
		http.StatusUnsupportedMediaType, "content type must be application/json")
	if got := e.metric("sserelay_published_total"); got != 0 {
		t.Fatalf("sserelay_published_total %v after refusals", got)
	}
	if got := e.metric("sserelay_cursor"); got != 0 {
		t.Fatalf("refused publishes reached the stream: cursor %v", got)
	}
}

func TestPublishUnauthorized(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "backend", claimPublish("*:*"))
	body := `{"app_id":"demo","feed":"alice","data":"x"}`
	const missing = "missing token: publishing needs Authorization: Bearer"
	wantError(t, e.post(t, "", body), http.StatusUnauthorized, missing)
	// Not from a URL nor a cookie: a third-party page could publish as the user.
	wantError(t, do(t, http.MethodPost, e.url+"/v1/publish?access_token="+tok, http.Header{"Content-Type": {"application/json"}}, body),
		http.StatusUnauthorized, missing)
	wantError(t, do(t, http.MethodPost, e.url+"/v1/publish", http.Header{"Content-Type": {"application/json"}, "Cookie": {"sserelay_token=" + tok}}, body),
		http.StatusUnauthorized, missing)
	wantError(t, do(t, http.MethodPost, e.url+"/v1/publish", http.Header{"Content-Type": {"application/json"}, "Authorization": {"Basic " + tok}}, body),
		http.StatusUnauthorized, missing)
	wantError(t, e.post(t, unsignedToken("backend"), body), http.StatusUnauthorized, "token algorithm not allowed")
	wantError(t, e.post(t, token(t, "backend", claimPublish("*:*"), claimExpires(time.Now().Add(-time.Minute))), body), http.StatusUnauthorized, "token expired")
	other, err := auth.Sign([]byte("another-secret-0123456789abcdef"), auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "backend"}, Publish: []string{"*:*"}})
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, e.post(t, other, body), http.StatusUnauthorized, "token signature invalid")
	// Authentication comes before validation.
	wantError(t, e.post(t, "", `{`), http.StatusUnauthorized, missing)
	if got := e.metric("sserelay_cursor"); got != 0 {
		t.Fatalf("refused publishes reached the stream: cursor %v", got)
	}
	// The same token in the header works.
	wantSeq(t, e.post(t, tok, body))
}

func TestPublishForbidden(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := func(app string) string { return `{"app_id":"` + app + `","feed":"alice","data":"x"}` }
	wantError(t, e.post(t, token(t, "alice"), body("demo")), http.StatusForbidden, `token does not grant publishing to app "demo"`)
	wantError(t, e.post(t, token(t, "alice", claimPublish()), body("demo")), http.StatusForbidden, `token does not grant publishing to app "demo"`)
	wantError(t, e.post(t, token(t, "alice", claimPublish("other")), body("demo")), http.StatusForbidden, `token does not grant publishing to app "demo"`)
	wantError(t, e.post(t, token(t, "alice", claimPublish("dem")), body("demo")), http.StatusForbidden, `token does not grant publishing to app "demo"`)
	// The apps claim (for reading) does not grant publishing.
	wantError(t, e.post(t, token(t, "alice", claimApps("demo")), body("demo")), http.StatusForbidden, `token does not grant publishing to app "demo"`)
	if got := e.metric("sserelay_cursor"); got != 0 {
		t.Fatalf("refused publishes reached the stream: cursor %v", got)
	}
	// A listed app, and "*" for every app.
	wantSeq(t, e.post(t, token(t, "alice", claimPublish("other", "demo")), body("demo")))
	star := token(t, "alice", claimPublish("*"))
	for _, app := range []string{"demo", "other", "x-y_z"} {
		wantSeq(t, e.post(t, star, body(app)))
	}
	// The apps claim bounds the whole token: a publish grant, even "*" or
	// "*:*", reaches no app outside it.
	for _, grant := range []string{"*", "*:*", "other", "other:*"} {
		tok := token(t, "alice", claimApps("demo"), claimPublish(grant))
		wantError(t, e.post(t, tok, body("other")), http.StatusForbidden, `token does not grant app "other" (apps claim)`)
	}
	wantSeq(t, e.post(t, token(t, "alice", claimApps("demo"), claimPublish("*")), body("demo")))
	wantSeq(t, e.post(t, token(t, "alice", claimApps("demo", "other"), claimPublish("*:*")), body("other")))
}

func TestPublishTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.MaxPublishBytes = 200 }))
	tok := token(t, "backend", claimPublish("demo:*"))
	mk := func(n int) string {
		b := `{"app_id":"demo","feed":"alice","data":"` + strings.Repeat("x", n) + `"}`
		return b
	}
	fits := mk(200 - len(mk(0)))
	if len(fits) != 200 {
		t.Fatalf("test body of %d bytes", len(fits))
	}
	wantSeq(t, e.post(t, tok, fits))
	wantError(t, e.post(t, tok, mk(201-len(mk(0)))), http.StatusRequestEntityTooLarge, "body larger than 200 bytes")
	wantError(t, e.post(t, tok, mk(100000)), http.StatusRequestEntityTooLarge, "body larger than 200 bytes")
	if got := e.metric("sserelay_published_total"); got != 1 {
		t.Fatalf("sserelay_published_total %v, want 1", got)
	}
}

func TestPublishNATSDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "backend", claimPublish("demo:*"))
	body := `{"app_id":"demo","feed":"alice","data":"x","id":"retry-me"}`
	wantSeq(t, e.post(t, tok, `{"app_id":"demo","feed":"alice","data":"before"}`))
	e.ns.Shutdown() // the harness cleanup calls it again: that is safe
	eventually(t, waitLong, "the relay to see NATS down", func() bool { return !e.nc.IsConnected() })
	wantError(t, e.post(t, tok, body), http.StatusServiceUnavailable, "event store unavailable (NATS not connected): the event was not stored, retry later")
	if got := e.metric("sserelay_publish_errors_total"); got != 1 {
		t.Fatalf("sserelay_publish_errors_total %v, want 1", got)
	}
	wantError(t, do(t, http.MethodGet, e.url+"/readyz", nil, ""), http.StatusServiceUnavailable, "not ready: NATS not connected")
	// Bad input is still a 400, not a 503.
	wantError(t, e.post(t, tok, `{"app_id":"demo","feed":"alice"}`), http.StatusBadRequest, "data is required")
}

// TestPublishIDScopedToPublisher: the dedup id of POST /v1/publish counts for
// one publisher in one feed of one app, not for the whole stream: another
// user's (or another app's, or another feed's) publish with the same id is
// stored and delivered, while the same publisher's retry is a duplicate.
func TestPublishIDScopedToPublisher(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := token(t, "alice", claimPublish("app1", "app2"), claimFeeds("team"))
	bob := token(t, "bob", claimPublish("app2"))
	sa := e.open("app_id=app1", bearer(alice))
	sa.Connected(t)
	sb := e.open("app_id=app2", bearer(bob))
	sb.Connected(t)

	first := wantSeq(t, e.post(t, alice, `{"app_id":"app1","feed":"alice","data":"alice's","id":"order-42"}`))
	if again := wantSeq(t, e.post(t, alice, `{"app_id":"app1","feed":"alice","data":"retry","id":"order-42"}`)); again != first {
		t.Fatalf("alice's retry got seq %d, want the original %d", again, first)
	}
	bobs := wantSeq(t, e.post(t, bob, `{"app_id":"app2","feed":"bob","data":"bob's","id":"order-42"}`))
	if bobs == first {
		t.Fatalf("bob's publish in app2 got alice's seq %d", first)
	}
	if m := e.stored(t, bobs); string(m.Data) != "bob's" || m.Subject != "sse.app2.bob" {
		t.Fatalf("bob's event stored as %s %q", m.Subject, m.Data)
	}
	// The same publisher in another app, or in another feed of the same app, is not a retry either.
	otherApp := wantSeq(t, e.post(t, alice, `{"app_id":"app2","feed":"alice","data":"other app","id":"order-42"}`))
	otherFeed := wantSeq(t, e.post(t, alice, `{"app_id":"app1","feed":"team","data":"other feed","id":"order-42"}`))
	if len(map[uint64]bool{first: true, bobs: true, otherApp: true, otherFeed: true}) != 4 {
		t.Fatalf("distinct publishers or feeds share a seq: %d %d %d %d", first, bobs, otherApp, otherFeed)
	}
	sa.ExpectIDs(t, first)
	sb.ExpectIDs(t, bobs)
}

// TestPublishFeedGrant: a publish grant covers the feeds the token may read
// (its sub and its feeds claim) unless it says "<app>:*" (or "*:*") for any
// feed of the app: a browser token with publish demo must not write into
// bob's private feed.
func TestPublishFeedGrant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := func(app, feed string) string { return `{"app_id":"` + app + `","feed":"` + feed + `","data":"x"}` }
	forbidden := func(app, feed string) string {
		return `token does not grant publishing to feed "` + feed + `" of app "` + app + `"`
	}
	browser := token(t, "alice", claimPublish("demo"), claimFeeds("team"))
	wantError(t, e.post(t, browser, body("demo", "bob")), http.StatusForbidden, forbidden("demo", "bob"))
	wantError(t, e.post(t, browser, body("demo", "_all")), http.StatusForbidden, forbidden("demo", "_all"))
	allApps := token(t, "alice", claimPublish("*"))
	wantError(t, e.post(t, allApps, body("other", "bob")), http.StatusForbidden, forbidden("other", "bob"))
	// Any feed of one app is not any feed of another.
	service := token(t, "backend", claimPublish("demo:*"))
	wantError(t, e.post(t, service, body("other", "bob")), http.StatusForbidden, `token does not grant publishing to app "other"`)
	if got := e.metric("sserelay_cursor"); got != 0 {
		t.Fatalf("refused publishes reached the stream: cursor %v", got)
	}

	wantSeq(t, e.post(t, browser, body("demo", "alice")))
	wantSeq(t, e.post(t, browser, body("demo", "team")))
	wantSeq(t, e.post(t, allApps, body("other", "alice")))
	for _, feed := range []string{"bob", "_all", "backend"} {
		wantSeq(t, e.post(t, service, body("demo", feed)))
	}
	everything := token(t, "backend", claimPublish("*:*"))
	wantSeq(t, e.post(t, everything, body("other", "bob")))
}

// TestPublishWaitOutlivesBodyTimeout: the body's read deadline
// (BodyTimeout) ends with the body, so an acknowledgement slower than it
// still gets its 200. A deadline left on the connection would fail
// net/http's background read, which cancels the request: a 503.
func TestPublishWaitOutlivesBodyTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withRelayProxy(), withConfig(func(c *Config) {
		c.BodyTimeout, c.PublishTimeout = 200*time.Millisecond, 20*time.Second
	}))
	tok := token(t, "alice", claimPublish("demo"))
	e.proxy.hold() // the acknowledgement waits on its way back
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(700 * time.Millisecond) // past three body timeouts
		e.proxy.release()
	}()
	wantSeq(t, e.post(t, tok, `{"app_id":"demo","feed":"alice","data":"slow ack"}`))
	<-released
}

// TestPublishErrorMayBeStored: a publish answered with an error can still
// have been stored, and is then delivered: here the acknowledgement is held
// on its way back (the publish reached NATS) until the publish times out.
// A retry with the same id returns the stored event's seq and stores
// nothing twice, which is why the error says to retry with the same id.
func TestPublishErrorMayBeStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withRelayProxy(), withConfig(func(c *Config) { c.PublishTimeout = 300 * time.Millisecond }))
	tok := token(t, "alice", claimPublish("demo"))
	s := e.open("app_id=demo", bearer(tok))
	s.Connected(t)
	body := `{"app_id":"demo","feed":"alice","data":"maybe stored","id":"order-7"}`

	e.proxy.hold()
	wantError(t, e.post(t, tok, body), http.StatusServiceUnavailable, "event store unavailable: no acknowledgement in time, the event may be stored: retry with the same id")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, "SSE")
	if err != nil {
		t.Fatal(err)
	}
	seq := st.CachedInfo().State.LastSeq
	if m := e.stored(t, seq); seq == 0 || string(m.Data) != "maybe stored" {
		t.Fatalf("the refused publish was not stored (last seq %d)", seq)
	}
	e.proxy.release()
	s.ExpectIDs(t, seq) // delivered, though its publisher was told it failed

	if again := wantSeq(t, e.post(t, tok, body)); again != seq {
		t.Fatalf("the retry got seq %d, want the stored %d", again, seq)
	}
	after := e.publish("sse.demo.alice", "after")
	s.ExpectIDs(t, after) // and not a second copy before it
}

// TestPublishShutdownEndsPublisher: the asynchronous publisher's goroutine
// (nats.go's, watching the connection) ends with the relay, though the
// connection stays open. Not parallel: other tests' publishers would show.
func TestPublishShutdownEndsPublisher(t *testing.T) {
	e := newEnv(t)
	tok := token(t, "backend", claimPublish("demo:*"))
	wantSeq(t, e.post(t, tok, `{"app_id":"demo","feed":"alice","data":"x"}`))
	const fn = "jetstream.(*jetStream).resetPendingAcksOnReconnect"
	if !strings.Contains(allStacks(), fn) {
		t.Fatalf("no %s goroutine after a publish: the test cannot see the publisher", fn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.relay.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !e.nc.IsConnected() {
		t.Fatal("the relay closed the connection it was given")
	}
	eventually(t, waitLong, "the publisher's goroutine to end", func() bool { return !strings.Contains(allStacks(), fn) })
}

func allStacks() string {
	buf := make([]byte, 1<<22)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestPublishContentType: the media type is case-insensitive (RFC 9110
// 8.3.1) and may carry parameters; another type, or a longer name that
// starts with application/json, is 415.
func TestPublishContentType(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice", claimPublish("demo"))
	body := `{"app_id":"demo","feed":"alice","data":"x"}`
	for _, ct := range []string{"application/json", "Application/JSON", "APPLICATION/JSON; charset=UTF-8",
		"application/json; charset=utf-8", "application/json;charset=utf-8", "application/json ; charset=utf-8"} {
		t.Run(ct, func(t *testing.T) { wantSeq(t, e.post(t, tok, body, "Content-Type", ct)) })
	}
	for _, ct := range []string{"text/plain", "application/jsonx", "application/json+x", "application/json charset=utf-8", "application/jso"} {
		t.Run(ct, func(t *testing.T) {
			wantError(t, e.post(t, tok, body, "Content-Type", ct), http.StatusUnsupportedMediaType, "content type must be application/json")
		})
	}
}

// TestJSONMediaTypeAllocs: the check on every publish allocates nothing,
// whatever the case and parameters.
func TestJSONMediaTypeAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() {
		_ = isJSONMediaType("application/json")
		_ = isJSONMediaType("Application/JSON; charset=utf-8")
	}); n != 0 {
		t.Fatalf("isJSONMediaType: %v allocations, want 0", n)
	}
}
