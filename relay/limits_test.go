package relay

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKeyedBucketsBounded: the buckets a flood of keys leaves behind stay
// within the bound, a bucket refills at its rate, and one that has refilled
// is forgotten when room is needed.
func TestKeyedBucketsBounded(t *testing.T) {
	k := newKeyedBuckets(10, 2, 320) // 10 per shard
	now := time.Unix(1000, 0)
	for i := 0; i < 100000; i++ {
		k.allow("flood-"+strconv.Itoa(i), now)
	}
	if n := k.keys(); n > 320 {
		t.Fatalf("%d keys kept, bound 320", n)
	}
	for i := 0; i < 2; i++ {
		if ok, _ := k.allow("u", now); !ok {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	ok, wait := k.allow("u", now)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("over the burst: allowed %v, wait %s (want refused, 100ms)", ok, wait)
	}
	if ok, _ := k.allow("u", now.Add(100*time.Millisecond)); !ok {
		t.Fatal("refused after the wait it was told")
	}
	// Later, every bucket has refilled: new keys replace them.
	later := now.Add(time.Hour)
	for i := 0; i < 1000; i++ {
		k.allow("later-"+strconv.Itoa(i), later)
	}
	if n := k.keys(); n > 320 {
		t.Fatalf("%d keys kept, bound 320", n)
	}
	if ok, _ := (*keyedBuckets)(nil).allow("x", now); !ok {
		t.Fatal("no limiter (rate -1) refused")
	}
}

func TestClientAddr(t *testing.T) {
	l := newLimiters(&Config{TrustedProxies: []string{"10.0.0.0/8", "192.0.2.1"}})
	for _, c := range []struct {
		remote, xff, want string
	}{
		{"203.0.113.5:1234", "1.2.3.4", "203.0.113.5"},                     // untrusted peer: its header is ignored
		{"10.1.1.1:80", "198.51.100.7", "198.51.100.7"},                    // trusted proxy
		{"10.1.1.1:80", "6.6.6.6, 198.51.100.7, 10.2.2.2", "198.51.100.7"}, // right-most untrusted
		{"192.0.2.1:80", "bogus, 198.51.100.8", "198.51.100.8"},
		{"10.1.1.1:80", "", "10.1.1.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "", "2001:db8:1:2::/64"}, // IPv6 by /64
		{"[::ffff:203.0.113.9]:1", "", "203.0.113.9"},
	} {
		req := &http.Request{RemoteAddr: c.remote, Header: http.Header{}}
		if c.xff != "" {
			req.Header.Set("X-Forwarded-For", c.xff)
		}
		if got := l.clientAddr(req); got != c.want {
			t.Errorf("remote %s, X-Forwarded-For %q: %s, want %s", c.remote, c.xff, got, c.want)
		}
	}
}

// BenchmarkKeyedBucketsAllow is the hot path: a known key.
func BenchmarkKeyedBucketsAllow(b *testing.B) {
	k := newKeyedBuckets(1e9, 1e9, 100000)
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k.allow("user-42", now)
		}
	})
}

// BenchmarkKeyedBucketsNewKeys is a flood of new addresses against a full
// limiter whose buckets are all busy: evictions included.
func BenchmarkKeyedBucketsNewKeys(b *testing.B) {
	k := newKeyedBuckets(0.001, 1, 100000)
	now := time.Now()
	keys := make([]string, 1<<20)
	for i := range keys {
		keys[i] = "10." + strconv.Itoa(i>>16) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k.allow(keys[i&(len(keys)-1)], now)
	}
	if n := k.keys(); n > 100000 {
		b.Fatalf("%d keys kept, bound 100000", n)
	}
}

// TestHeadPeeksLimits: HEAD /v1/events answers what a GET would get at that
// moment, the limits and draining included: a stream that would be sent
// away is 200 without X-Connection-Id, a poll over its rate 429 with
// Retry-After. And HEAD only looks: it takes no token of the per-user or
// per-address rate and no stream slot, so that probes never starve GETs.
func TestHeadPeeksLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.MaxStreamsPerUser = 1
		c.UserStreamRate, c.UserStreamBurst = 0.001, 2
		c.IPStreamRate, c.IPStreamBurst = 0.001, 5
	}))
	head := func(t *testing.T, query, user string) httpResult {
		t.Helper()
		return do(t, http.MethodHead, e.url+"/v1/events?"+query, bearer(token(t, user)), "")
	}
	opens := func(what string, r httpResult) {
		t.Helper()
		if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "text/event-stream" || r.Header.Get("X-Connection-Id") == "" {
			t.Fatalf("%s: %d %v, want 200 text/event-stream with X-Connection-Id", what, r.Status, r.Header)
		}
	}
	sentAway := func(what string, r httpResult) {
		t.Helper()
		if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "text/event-stream" || r.Header.Get("X-Connection-Id") != "" || len(r.Body) != 0 {
			t.Fatalf("%s: %d %v %q, want 200 text/event-stream without X-Connection-Id or a body", what, r.Status, r.Header, r.Body)
		}
	}

	// The user's burst of 2, used up by polls; HEADs before it take none of it.
	for i := 0; i < 5; i++ {
		opens("HEAD within the burst", head(t, "app_id=demo", "rate"))
	}
	for i := 0; i < 2; i++ { // GETs 1 and 2 of the address
		if r := e.getEvents(t, "app_id=demo&poll=1", bearer(token(t, "rate"))); r.Status != http.StatusOK {
			t.Fatalf("poll %d within the burst: %d %s (HEADs took tokens)", i, r.Status, r.Body)
		}
	}
	sentAway("HEAD over the user's rate", head(t, "app_id=demo", "rate"))
	if r := head(t, "app_id=demo&poll=1", "rate"); r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("HEAD of a poll over the user's rate: %d %v, want 429 with Retry-After", r.Status, r.Header)
	}
	s := e.getEvents(t, "app_id=demo", bearer(token(t, "rate"))) // GET 3
	if s.Status != http.StatusOK || !strings.HasPrefix(string(s.Body), ": limited: user-stream-rate\n") {
		t.Fatalf("GET over the user's rate: %d %q", s.Status, s.Body)
	}
	if got := e.metric(`sserelay_limited_total{limit="user-stream-rate"}`); got != 1 {
		t.Fatalf("sserelay_limited_total{user-stream-rate} %v, want 1: only the GET was refused", got)
	}

	// The user's one stream: a HEAD while it is open says a GET is refused,
	// and a HEAD before does not hold the slot.
	opens("HEAD with no stream open", head(t, "app_id=demo", "spu"))
	st := e.open("app_id=demo", bearer(token(t, "spu"))) // GET 4
	st.Connected(t)
	sentAway("HEAD with the user's streams open", head(t, "app_id=demo", "spu"))

	// The address's burst of 5: 4 GETs so far, and many HEADs that took none.
	opens("HEAD of another user", head(t, "app_id=demo", "other"))
	if r := e.getEvents(t, "app_id=demo&poll=1", bearer(token(t, "other"))); r.Status != http.StatusOK { // GET 5
		t.Fatalf("poll within the address's burst: %d %s (HEADs took tokens)", r.Status, r.Body)
	}
	sentAway("HEAD over the address's rate", head(t, "app_id=demo", "other2"))
	st.Close()
}

// TestHeadWhileDraining: a draining relay sends new streams away, and HEAD
// says so.
func TestHeadWhileDraining(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	hdr := bearer(token(t, "alice"))
	if r := do(t, http.MethodHead, e.url+"/v1/events?app_id=demo", hdr, ""); r.Header.Get("X-Connection-Id") == "" {
		t.Fatalf("HEAD before draining: %d %v, want X-Connection-Id", r.Status, r.Header)
	}
	e.relay.Drain()
	r := do(t, http.MethodHead, e.url+"/v1/events?app_id=demo", hdr, "")
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "text/event-stream" || r.Header.Get("X-Connection-Id") != "" {
		t.Fatalf("HEAD while draining: %d %v, want 200 text/event-stream without X-Connection-Id", r.Status, r.Header)
	}
	if g := e.getEvents(t, "app_id=demo", hdr); g.Header.Get("X-Connection-Id") != "" || !strings.HasPrefix(string(g.Body), ": draining\n") {
		t.Fatalf("GET while draining: %d %v %q", g.Status, g.Header, g.Body)
	}
}
