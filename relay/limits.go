package relay

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sserelay/sserelay/relay/sse"
)

// Limits that refuse a request, as labels of sserelay_limited_total and
// comments of the answer to an EventSource that is sent away.
const (
	limitUserStreams = "streams-per-user" // MaxStreamsPerUser streams of the user are open
	limitUserRate    = "user-stream-rate" // UserStreamRate
	limitIPRate      = "ip-stream-rate"   // IPStreamRate
	limitPublishRate = "publish-rate"     // PublishRate
	limitPollReplay  = "poll-replay-busy" // no replay slot for a poll within pollSlotWait
)

var limitNames = []string{limitUserStreams, limitUserRate, limitIPRate, limitPublishRate, limitPollReplay}

// setLimitDefaults fills the fields of the per-user and per-address
// limits and of the connection bounds.
func (c *Config) setLimitDefaults(d Config) {
	setDefault(&c.BodyTimeout, d.BodyTimeout)
	setDefault(&c.PollPageBytes, d.PollPageBytes)
	setDefault(&c.MaxStreamsPerUser, d.MaxStreamsPerUser)
	setDefault(&c.UserStreamRate, d.UserStreamRate)
	setDefault(&c.UserStreamBurst, d.UserStreamBurst)
	setDefault(&c.IPStreamRate, d.IPStreamRate)
	setDefault(&c.IPStreamBurst, d.IPStreamBurst)
	setDefault(&c.PublishRate, d.PublishRate)
	setDefault(&c.PublishBurst, d.PublishBurst)
	setDefault(&c.MaxReplaysPerUser, d.MaxReplaysPerUser)
	setDefault(&c.LimiterKeys, d.LimiterKeys)
}

// checkLimits checks them after defaults; -1 turns a bound off where the
// field says so.
func (c *Config) checkLimits() error {
	const positive = "must be positive"
	rate := "want a positive rate per second, or -1 for no limit"
	switch {
	case c.BodyTimeout < MinTimeout:
		return invalid("BodyTimeout", c.BodyTimeout, fmt.Sprintf("want at least %v", MinTimeout))
	case c.MaxConnections < -1:
		return invalid("MaxConnections", c.MaxConnections, "want a positive count, 0 for the open-files limit less 256, or -1 for no limit")
	case c.PollPageBytes < 1:
		return invalid("PollPageBytes", c.PollPageBytes, positive)
	case c.MaxStreamsPerUser < -1:
		return invalid("MaxStreamsPerUser", c.MaxStreamsPerUser, "want a positive count, or -1 for no limit")
	case c.MaxReplaysPerUser < 1:
		return invalid("MaxReplaysPerUser", c.MaxReplaysPerUser, positive)
	case c.LimiterKeys < 1:
		return invalid("LimiterKeys", c.LimiterKeys, positive)
	case badRate(c.UserStreamRate):
		return invalid("UserStreamRate", c.UserStreamRate, rate)
	case c.UserStreamBurst < 1:
		return invalid("UserStreamBurst", c.UserStreamBurst, positive)
	case badRate(c.IPStreamRate):
		return invalid("IPStreamRate", c.IPStreamRate, rate)
	case c.IPStreamBurst < 1:
		return invalid("IPStreamBurst", c.IPStreamBurst, positive)
	case badRate(c.PublishRate):
		return invalid("PublishRate", c.PublishRate, rate)
	case c.PublishBurst < 1:
		return invalid("PublishBurst", c.PublishBurst, positive)
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		return invalid("TrustedProxies", c.TrustedProxies, err.Error())
	}
	return nil
}

func badRate(r float64) bool {
	return math.IsNaN(r) || math.IsInf(r, 0) || (r < 0 && r != -1)
}

// parsePrefixes parses CIDR prefixes; a plain address is a prefix of its
// whole length.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// limiters are the relay's per-user and per-address limits.
type limiters struct {
	trusted   []netip.Prefix
	userRate  *keyedBuckets // nil: no bound
	ipRate    *keyedBuckets
	pubRate   *keyedBuckets
	replays   *userSlots
	maxStream int // per user; -1: no bound
}

func newLimiters(c *Config) *limiters {
	trusted, _ := parsePrefixes(c.TrustedProxies) // checked by setDefaults
	return &limiters{
		trusted:   trusted,
		userRate:  newKeyedBuckets(c.UserStreamRate, c.UserStreamBurst, c.LimiterKeys),
		ipRate:    newKeyedBuckets(c.IPStreamRate, c.IPStreamBurst, c.LimiterKeys),
		pubRate:   newKeyedBuckets(c.PublishRate, c.PublishBurst, c.LimiterKeys),
		replays:   newUserSlots(c.MaxReplaysPerUser),
		maxStream: c.MaxStreamsPerUser,
	}
}

// clientAddr returns the key of the client's address: the peer, or for a
// request from a trusted proxy the right-most address of X-Forwarded-For
// that is not a trusted proxy (the left part is whatever the client wrote).
// An IPv6 address counts by its /64, which one subscriber usually holds whole.
func (l *limiters) clientAddr(req *http.Request) string {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		host = req.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host // not IP (a unix socket, a test): one key
	}
	a = a.Unmap()
	if l.isTrusted(a) {
		hops := req.Header.Values("X-Forwarded-For")
	walk:
		for i := len(hops) - 1; i >= 0; i-- {
			parts := strings.Split(hops[i], ",")
			for j := len(parts) - 1; j >= 0; j-- {
				h, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
				if err != nil {
					break walk // garbage: the last good hop is the client
				}
				a = h.Unmap()
				if !l.isTrusted(a) {
					break walk
				}
			}
		}
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func (l *limiters) isTrusted(a netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// keyedBuckets are token buckets by key (a user, an address). Memory is
// bounded: a bucket that has refilled is the same as none and is forgotten,
// and at most max keys are kept (beyond that an arbitrary one is forgotten,
// which only ever gives its owner a full bucket). Sharded so that the hot
// path takes one uncontended lock and allocates nothing for a known key.
type keyedBuckets struct {
	rate   float64 // tokens per second
	burst  float64
	perCap int // keys per shard
	seed   maphash.Seed
	shards [32]bucketShard
}

type bucketShard struct {
	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was computed
}

func newKeyedBuckets(rate float64, burst, maxKeys int) *keyedBuckets {
	if rate < 0 {
		return nil
	}
	k := &keyedBuckets{rate: rate, burst: float64(burst), perCap: max(maxKeys/32, 1), seed: maphash.MakeSeed()}
	for i := range k.shards {
		k.shards[i].m = make(map[string]*bucket)
	}
	return k
}

// shard returns the shard that holds key's bucket.
func (k *keyedBuckets) shard(key string) *bucketShard {
	return &k.shards[maphash.String(k.seed, key)%uint64(len(k.shards))]
}

// allow takes a token from key's bucket. When it is empty it returns false
// and the wait until a token is there.
func (k *keyedBuckets) allow(key string, now time.Time) (bool, time.Duration) {
	if k == nil {
		return true, 0
	}
	sh := k.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.m[key]
	if b == nil {
		if len(sh.m) >= k.perCap {
			sh.evict(k, now)
		}
		b = &bucket{tokens: k.burst, at: now}
		sh.m[key] = b
	} else {
		b.tokens, b.at = k.refilled(b, now), now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, k.waitFor(b.tokens)
}

// peek answers what allow would, and changes nothing: no token is taken
// and an unknown key gets no bucket.
func (k *keyedBuckets) peek(key string, now time.Time) (bool, time.Duration) {
	if k == nil {
		return true, 0
	}
	sh := k.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.m[key]
	if b == nil {
		return true, 0 // a full bucket
	}
	tokens := k.refilled(b, now)
	if tokens >= 1 {
		return true, 0
	}
	return false, k.waitFor(tokens)
}

// refilled returns the tokens b holds at now.
func (k *keyedBuckets) refilled(b *bucket, now time.Time) float64 {
	return min(k.burst, b.tokens+now.Sub(b.at).Seconds()*k.rate)
}

// waitFor returns the wait until a bucket holding tokens (< 1) has one.
func (k *keyedBuckets) waitFor(tokens float64) time.Duration {
	return time.Duration((1 - tokens) / k.rate * float64(time.Second))
}

// evict forgets the buckets that have refilled, then arbitrary ones until
// an eighth of the shard is free. Called with the shard locked and full, so
// a pass over the shard comes at most once per perCap/8 new keys, even when
// a flood of new addresses keeps every bucket busy.
func (sh *bucketShard) evict(k *keyedBuckets, now time.Time) {
	for key, b := range sh.m {
		if b.tokens+now.Sub(b.at).Seconds()*k.rate >= k.burst {
			delete(sh.m, key)
		}
	}
	keep := k.perCap - max(k.perCap/8, 1)
	for key := range sh.m {
		if len(sh.m) <= keep {
			return
		}
		delete(sh.m, key)
	}
}

// keys returns the number of buckets kept (for tests).
func (k *keyedBuckets) keys() int {
	n := 0
	for i := range k.shards {
		k.shards[i].mu.Lock()
		n += len(k.shards[i].m)
		k.shards[i].mu.Unlock()
	}
	return n
}

// retryAfter returns a Retry-After value in whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(int64(math.Ceil(d.Seconds())), 1), 10)
}

// userSlots bounds the replay slots of each user. A user at the bound waits
// for one of their own slots to free, holding none of the shared ones.
type userSlots struct {
	max      int
	mu       sync.Mutex
	held     map[string]int
	released chan struct{} // closed and replaced at every release
}

func newUserSlots(n int) *userSlots {
	return &userSlots{max: n, held: make(map[string]int), released: make(chan struct{})}
}

// take takes a slot of user, waiting until one is free or wait returns an
// error (its argument is closed when a slot of anyone is released).
func (u *userSlots) take(ctx context.Context, user string, wait func(released <-chan struct{}) error) error {
	for {
		u.mu.Lock()
		if u.held[user] < u.max {
			u.held[user]++
			u.mu.Unlock()
			return nil
		}
		ch := u.released
		u.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := wait(ch); err != nil {
			return err
		}
	}
}

func (u *userSlots) release(user string) {
	u.mu.Lock()
	if u.held[user]--; u.held[user] <= 0 {
		delete(u.held, user)
	}
	close(u.released)
	u.released = make(chan struct{})
	u.mu.Unlock()
}

// refuseLimited answers a stream or poll request over limit. A poll (fetch)
// gets 429 with Retry-After; an EventSource gives up for good on any status
// but 200, so it gets 200, a retry hint no shorter than the wait, and a close.
//
// A HEAD is not counted: it only asks (see serveHead), and a monitor's
// probes must not look like clients being refused.
func (r *Relay) refuseLimited(w http.ResponseWriter, req *http.Request, poll bool, limit string, wait time.Duration) {
	if req.Method != http.MethodHead {
		r.metrics.limited[limit].Inc()
	}
	r.log.Debug("request limited", "limit", limit, "path", req.URL.Path, "remote", req.RemoteAddr, "wait", wait)
	if poll {
		w.Header().Set("Retry-After", retryAfter(wait))
		writeError(w, http.StatusTooManyRequests, "too many requests ("+limit+"): retry later")
		return
	}
	r.sendAwayAfter(w, "limited: "+limit, wait)
}

// sendAwayAfter is sendAway with a retry hint of at least wait (plus as
// much again as jitter), for a client that would be refused again sooner.
func (r *Relay) sendAwayAfter(w http.ResponseWriter, reason string, wait time.Duration) {
	ms := r.retryHint()
	if w := wait.Milliseconds(); w > 0 {
		ms = max(ms, w+rand.Int64N(w+1))
	}
	setStreamHeaders(w, "")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(appendRetry(sse.AppendComment(nil, reason), ms))
}

// pollSlotWait bounds a poll's wait for a replay slot: a poll is one short
// request, and its client polls again anyway.
const pollSlotWait = time.Second

// takeReplaySlot takes one of user's MaxReplaysPerUser slots, then one of
// the MaxReplays shared ones, so that a user whose catch-ups wait for their
// own slots holds none that others could use. Each tick of wake calls
// onWake (a keepalive, or giving up); its error ends the wait.
func (r *Relay) takeReplaySlot(ctx context.Context, user string, wake <-chan time.Time, onWake func() error) error {
	wait := func(released <-chan struct{}) error {
		select {
		case <-released:
			return nil
		case <-ctx.Done():
			return closeClientGone
		case <-r.drainCh:
			return closeDraining
		case <-wake:
			return onWake()
		}
	}
	if err := r.limits.replays.take(ctx, user, wait); err != nil {
		if ctx.Err() != nil {
			return closeClientGone
		}
		return err
	}
	for {
		var err error
		select {
		case r.replaySlots <- struct{}{}:
			return nil
		case <-ctx.Done():
			err = closeClientGone
		case <-r.drainCh:
			err = closeDraining
		case <-wake:
			if err = onWake(); err == nil {
				continue
			}
		}
		r.limits.replays.release(user)
		return err
	}
}

// releaseReplaySlot gives back what takeReplaySlot took.
func (r *Relay) releaseReplaySlot(user string) {
	<-r.replaySlots
	r.limits.replays.release(user)
}
