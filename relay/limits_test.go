package relay

import (
	"net/http"
	"strconv"
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
