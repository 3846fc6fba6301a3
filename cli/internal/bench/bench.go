// Package bench is the load generator of SSE Relay: it opens many SSE
// streams on a running relay, publishes events through NATS JetStream or
// POST /v1/publish, and measures delivery (throughput, end-to-end latency,
// resume catch-up) and the relay process (RSS, CPU) while it checks that
// every stream got every event of its feed exactly once, in order.
//
// It shares the machine with the relay it measures, so the client side is
// lean: one goroutine and one read buffer per stream, a hand-written HTTP/1.1
// reader that parses events in place, and sharded fixed-size histograms.
package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sserelay/sserelay/relay"
	"github.com/sserelay/sserelay/relay/auth"
)

// Mode is how streams map to feeds.
type Mode string

// Modes.
const (
	ModePerUser   Mode = "per-user"  // one user and feed per stream; events round-robin over them
	ModeBroadcast Mode = "broadcast" // every stream reads one shared feed granted by the token
)

// Publisher is the way events enter the relay.
type Publisher string

// Publishers.
const (
	PublisherNATS Publisher = "nats" // JetStream asynchronous publish, several in flight
	PublisherHTTP Publisher = "http" // POST /v1/publish, Publishers concurrent requests
)

// ErrInvalidConfig is wrapped by configuration errors.
var ErrInvalidConfig = errors.New("invalid bench config")

// Config describes a run. Zero values take the documented defaults.
type Config struct {
	// URL is the relay, http://host:port. Required.
	URL string
	// NATSURL is the NATS server the relay reads; required with
	// PublisherNATS (the default).
	NATSURL string
	// Secret is the HS256 secret the relay verifies tokens with. Required.
	Secret []byte
	// App is the app id (default "bench"); SubjectPrefix the relay's
	// subject prefix (default "sse").
	App, SubjectPrefix string

	// Mode maps streams to feeds (default ModePerUser). Feed is the shared
	// feed of ModeBroadcast (default "_all_<run id>", so that runs against one
	// relay do not see each other's events).
	Mode Mode
	Feed string
	// Streams is the number of SSE streams to open (0: none).
	Streams int
	// ConnectRate is the streams opened per second (0: as fast as
	// ConnectConcurrency allows); ConnectConcurrency bounds the connects in
	// progress (default 256); ConnectTimeout bounds one (default 30 s).
	ConnectRate        float64
	ConnectConcurrency int
	ConnectTimeout     time.Duration
	// Idle is the wait after connecting, before the idle RSS is read
	// (default 2 s; negative: none).
	Idle time.Duration
	// ReadBuffer is each stream's read buffer in bytes (default 4096; it
	// grows for longer lines). Resuming clients use 256 KiB.
	ReadBuffer int

	// Rate is the events published per second (0: as fast as possible),
	// during Duration, or until Events are published when Events > 0. With
	// neither there is no publish phase (an idle-memory run).
	Rate     float64
	Duration time.Duration
	Events   int
	// Publisher selects NATS or HTTP (default PublisherNATS). Publishers is
	// the number of concurrent HTTP publishers (default 16); MaxInflight the
	// asynchronous JetStream publishes awaiting acknowledgement (default 256).
	Publisher   Publisher
	Publishers  int
	MaxInflight int
	// PayloadBytes pads each event's data to about this size (default: no
	// padding, about 40 bytes).
	PayloadBytes int
	// Settle bounds the wait for deliveries after the last acknowledgement
	// (default 10 s).
	Settle time.Duration

	// ResumeMissed > 0 adds a resume test: one client disconnects, this many
	// events are published to its feed, and it reconnects with Last-Event-ID.
	ResumeMissed int
	// ResumeStorm > 0 adds a reconnect storm: that many clients, each having
	// missed StormMissed events (default 100), reconnect at once; during the
	// main phase if there is one (a third of the way in), so that the live
	// latency of the other streams meanwhile is measured.
	ResumeStorm int
	StormMissed int
	// StormShared puts the storm's clients on one shared feed (a whole
	// pod's clients coming back after a restart: StormMissed events in all)
	// instead of a feed each (ResumeStorm × StormMissed events in all).
	StormShared bool

	// RelayPID is the relay's process id, for its RSS and CPU (0: unknown).
	RelayPID int
	// Logf receives progress lines (nil: none).
	Logf func(format string, args ...any)
}

func (c *Config) setDefaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if c.App == "" {
		c.App = "bench"
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = "sse"
	}
	if c.Mode == "" {
		c.Mode = ModePerUser
	}
	if c.Publisher == "" {
		c.Publisher = PublisherNATS
	}
	def(&c.ConnectConcurrency, 256)
	def(&c.ReadBuffer, 4096)
	def(&c.Publishers, 16)
	def(&c.MaxInflight, 256)
	def(&c.StormMissed, 100)
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.Idle == 0 {
		c.Idle = 2 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 10 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	switch {
	case c.URL == "":
		return fmt.Errorf("%w: the relay URL is required", ErrInvalidConfig)
	case len(c.Secret) == 0:
		return fmt.Errorf("%w: the JWT secret is required", ErrInvalidConfig)
	case c.Mode != ModePerUser && c.Mode != ModeBroadcast:
		return fmt.Errorf("%w: mode %q (want per-user or broadcast)", ErrInvalidConfig, c.Mode)
	case c.Publisher != PublisherNATS && c.Publisher != PublisherHTTP:
		return fmt.Errorf("%w: publisher %q (want nats or http)", ErrInvalidConfig, c.Publisher)
	case c.Publisher == PublisherNATS && c.NATSURL == "":
		return fmt.Errorf("%w: the NATS URL is required to publish through NATS", ErrInvalidConfig)
	case c.Streams < 0 || c.Rate < 0 || c.Events < 0 || c.ResumeMissed < 0 || c.ResumeStorm < 0 || c.StormMissed < 0 || c.ReadBuffer < 512:
		return fmt.Errorf("%w: negative count or rate, or read buffer below 512 bytes", ErrInvalidConfig)
	case (c.Duration > 0 || c.Events > 0) && c.Streams == 0:
		return fmt.Errorf("%w: a publish phase needs streams", ErrInvalidConfig)
	case c.Feed != "" && !relay.ValidToken(c.Feed):
		return fmt.Errorf("%w: feed %q is not a valid subject token", ErrInvalidConfig, c.Feed)
	case !relay.ValidToken(c.App):
		return fmt.Errorf("%w: app %q is not a valid subject token", ErrInvalidConfig, c.App)
	}
	return nil
}

// A feed is one feed the run publishes to, with the sequences acknowledged.
type feed struct {
	name    string
	subject string
	seqs    []uint64 // sorted once a phase's acknowledgements are in
}

type runner struct {
	cfg      Config
	logf     func(string, ...any)
	id       string
	addr     string // host:port
	host     string // Host header
	dialer   net.Dialer
	feeds    []feed
	nc       *nats.Conn
	js       jetstream.JetStream
	pubToken string
	expires  time.Time

	wg    sync.WaitGroup // stream goroutines
	mu    sync.Mutex
	all   []*stream
	live  *hist
	storm atomic.Pointer[hist]
	after []func() // checks to run once every stream has ended
}

// Run runs the scenario of cfg and returns its report. An error means the
// run could not be set up; failed checks are in the report (OK false).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("%w: relay URL %q must be http://host:port", ErrInvalidConfig, cfg.URL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr += ":80"
	}
	r := &runner{cfg: cfg, logf: cfg.Logf, id: runID(), addr: addr, host: u.Host, live: newHist(),
		expires: time.Now().Add(24 * time.Hour)}
	r.dialer.Timeout = cfg.ConnectTimeout
	defer r.shutdown()
	if cfg.Mode == ModeBroadcast && cfg.Feed == "" {
		r.cfg.Feed = "_all_" + r.id
	}
	cfg = r.cfg

	rep := &Report{RunID: r.id, Machine: Machine{CPUs: runtime.NumCPU(), LoadAvgStart: loadAvg()}}
	rep.Config = ReportConfig{
		URL: cfg.URL, NATSURL: cfg.NATSURL, Mode: string(cfg.Mode), Streams: cfg.Streams, ConnectRate: cfg.ConnectRate,
		Rate: cfg.Rate, Duration: cfg.Duration.String(), Events: cfg.Events, Publisher: string(cfg.Publisher),
		PayloadBytes: cfg.PayloadBytes, ResumeMissed: cfg.ResumeMissed, ResumeStorm: cfg.ResumeStorm,
	}
	if cfg.Mode == ModeBroadcast {
		rep.Config.Feed = cfg.Feed
	}
	if cfg.Publisher == PublisherHTTP {
		rep.Config.Publishers = cfg.Publishers
	} else {
		rep.Config.MaxInflight = cfg.MaxInflight
	}
	if cfg.ResumeStorm > 0 {
		rep.Config.StormMissed = cfg.StormMissed
		rep.Config.StormShared = cfg.StormShared
	}
	rep.Machine.OpenFiles = openFilesLimit()

	if err := r.checkReady(ctx); err != nil {
		return nil, err
	}
	if cfg.Publisher == PublisherNATS {
		if err := r.natsConnect(); err != nil {
			return nil, err
		}
	} else {
		r.pubToken, err = r.token(r.id+"-pub", nil, []string{cfg.App})
		if err != nil {
			return nil, err
		}
	}
	rl := &rep.Relay
	if pid := cfg.RelayPID; pid > 0 {
		rl.PID = pid
		rl.OpenFilesLimit, _ = procOpenFilesLimit(pid)
		if _, err := procRSS(pid); err != nil {
			return nil, fmt.Errorf("relay pid %d: %w", pid, err)
		}
		runtime.GC()
		time.Sleep(200 * time.Millisecond)
		rl.RSSBaselineKiB, _ = procRSS(pid)
	}

	// Phase 1: open the streams and let them idle.
	var main []*stream
	if cfg.Streams > 0 {
		main = r.mainStreams()
		r.logf("connecting %d streams (%s) at %s/s", len(main), cfg.Mode, rate(cfg.ConnectRate))
		cs := r.connect(ctx, main, cfg.ConnectRate, r.cfg.ReadBuffer)
		rep.Connect = cs
		r.logf("connected %d, failed %d in %.2f s", cs.Connected, cs.Failed, cs.Seconds)
		if cfg.Idle > 0 {
			sleep(ctx, cfg.Idle)
		}
		if m, ok := r.scrape(); ok {
			rl.OpenStreams = int64(m["sserelay_open_streams"])
		}
		if rl.PID > 0 {
			rl.RSSIdleKiB, _ = procRSS(rl.PID)
			rl.ThreadsIdle, _ = procStatus(rl.PID, "Threads")
			if cs.Connected > 0 {
				rl.RSSPerStreamKiB = float64(rl.RSSIdleKiB-rl.RSSBaselineKiB) / float64(cs.Connected)
			}
			r.logf("relay RSS %.1f MiB idle with %d streams (%.1f KiB per stream)", float64(rl.RSSIdleKiB)/1024, cs.Connected, rl.RSSPerStreamKiB)
		}
	}

	// Phase 2: the storm's clients connect, leave, and miss their events.
	var storm *stormRun
	if cfg.ResumeStorm > 0 && ctx.Err() == nil {
		storm, err = r.prepareStorm(ctx)
		if err != nil {
			return nil, err
		}
	}

	// Phase 3: publish while the streams receive (and the storm resumes).
	if (cfg.Duration > 0 || cfg.Events > 0) && ctx.Err() == nil {
		r.mainPhase(ctx, rep, main, storm)
	} else if storm != nil && ctx.Err() == nil {
		r.runStorm(ctx, storm)
	}
	if storm != nil {
		rep.Storm = storm.report
	}

	// Phase 4: one client catches up many events.
	if cfg.ResumeMissed > 0 && ctx.Err() == nil {
		rep.Resume, err = r.resumeMissed(ctx)
		if err != nil {
			return nil, err
		}
	}
	if rl.PID > 0 {
		rl.RSSEndKiB, _ = procRSS(rl.PID)
	}
	rep.Machine.LoadAvgEnd = loadAvg()

	// Close everything, then check what each stream received.
	r.closeAll()
	if d := rep.Delivery; d != nil {
		r.checkMain(d, main)
		if w := rl.PublishCPU; w != nil && w.RelayKnown && d.Counts.Received > 0 {
			rl.CPUPerDeliveryUs = w.RelayCPU * 1e6 / float64(d.Counts.Received)
		}
	}
	for _, f := range r.after {
		f()
	}
	r.verdict(rep, ctx)
	return rep, nil
}

// mainPhase publishes the plan, waits for the deliveries, and measures.
func (r *runner) mainPhase(ctx context.Context, rep *Report, main []*stream, storm *stormRun) {
	cfg := r.cfg
	feeds := make([]int, 0, len(main))
	seen := make(map[int]bool)
	for _, s := range main {
		if !seen[s.feed] {
			seen[s.feed] = true
			feeds = append(feeds, s.feed)
		}
	}
	p := plan{feeds: feeds, rate: cfg.Rate, duration: cfg.Duration, events: cfg.Events}
	m0, mok0 := r.scrape()
	c0 := sampleCPU(cfg.RelayPID)
	var stormDone chan struct{}
	if storm != nil {
		storm.report.DuringMain = true
		stormDone = make(chan struct{})
		delay := cfg.Duration / 3
		if cfg.Events > 0 && cfg.Rate > 0 {
			delay = time.Duration(float64(cfg.Events) / cfg.Rate / 3 * float64(time.Second))
		}
		go func() {
			defer close(stormDone)
			sleep(ctx, delay)
			r.runStorm(ctx, storm)
		}()
	}
	r.logf("publishing to %d feeds via %s at %s/s", len(feeds), cfg.Publisher, rate(cfg.Rate))
	res := r.publish(ctx, p)
	r.applyAcks(res)
	pr := &PublishReport{Via: string(cfg.Publisher), Sent: res.sent.Load(), Acked: res.acked.Load(), Errors: int64(res.errors),
		ErrorKinds: res.errorKinds(), AckLatency: res.ackLat.summary()}
	if pr.Acked > 0 {
		pr.Seconds = res.end.Sub(res.start).Seconds()
		pr.AckedPerSecond = float64(pr.Acked) / pr.Seconds
	}
	rep.Publish = pr
	r.logf("published %d, acked %d, errors %d: %.0f/s", pr.Sent, pr.Acked, pr.Errors, pr.AckedPerSecond)

	// Wait until every connected stream has every event of its feed.
	var expected int64
	for _, s := range main {
		if s.connected {
			expected += int64(len(r.feeds[s.feed].seqs))
		}
	}
	d := &DeliveryReport{}
	deadline := time.Now().Add(cfg.Settle)
	for {
		var got int64
		for _, s := range main {
			got += s.n.Load()
		}
		if got >= expected {
			d.Settled = true
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.logf("settle: %d of %d deliveries after %s", got, expected, cfg.Settle)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var last int64
	for _, s := range main {
		last = max(last, s.last.Load())
	}
	c1 := sampleCPU(cfg.RelayPID)
	if d.Settled && last > 0 {
		// The window ends with the last delivery, not with the polling above.
		c1.at = time.Unix(0, last)
	}
	if storm != nil {
		<-stormDone
	}
	m1, mok1 := r.scrape()
	d.Latency = r.live.summary()
	if last > 0 {
		d.Seconds = time.Unix(0, last).Sub(res.start).Seconds()
	}
	if mok0 && mok1 {
		d.RelayCounts = Metrics{OK: true,
			Delivered: int64(m1["sserelay_events_delivered_total"] - m0["sserelay_events_delivered_total"]),
			Overflows: int64(m1["sserelay_queue_overflows_total"] - m0["sserelay_queue_overflows_total"]),
			Replays:   int64(m1["sserelay_replays_total"] - m0["sserelay_replays_total"]),
			Replayed:  int64(m1["sserelay_events_replayed_total"] - m0["sserelay_events_replayed_total"]),
			Resets:    int64(m1["sserelay_resets_total"] - m0["sserelay_resets_total"]),
		}
	}
	rep.Delivery = d
	w := cpuWindow(c0, c1)
	rl := &rep.Relay
	rl.PublishCPU = &w
	if w.RelayKnown && pr.Acked > 0 {
		rl.CPUPerEventUs = w.RelayCPU * 1e6 / float64(pr.Acked)
	}
	// Deliveries are counted by checkMain; the per-delivery CPU is set there.
}

// checkMain checks the main streams once they have ended.
func (r *runner) checkMain(d *DeliveryReport, main []*stream) {
	drops := make(map[string]int)
	for _, s := range main {
		if !s.connected {
			continue
		}
		d.Streams++
		c := check(s, r.feeds[s.feed].seqs)
		d.Counts.add(c)
		if c.Missing+c.Duplicate+c.OutOfOrder+c.Stale+c.BadID+c.Resets > 0 && len(d.Problems) < 5 {
			d.Problems = append(d.Problems, fmt.Sprintf("user %s (position %d): %s", s.user, s.base, counts(c)))
		}
		if s.err != nil {
			d.Dropped++
			drops[oneLine(s.err.Error())]++
		}
	}
	d.DropErrors = kinds(drops)
	if d.Seconds > 0 {
		d.PerSecond = float64(d.Counts.Received) / d.Seconds
	}
}

func (r *runner) verdict(rep *Report, ctx context.Context) {
	var f []string
	if ctx.Err() != nil {
		f = append(f, "interrupted: "+ctx.Err().Error())
	}
	if c := rep.Connect; c != nil && c.Failed > 0 {
		f = append(f, fmt.Sprintf("%d of %d streams failed to connect", c.Failed, c.Requested))
	}
	pubErrors := int64(0)
	if p := rep.Publish; p != nil {
		pubErrors = p.Errors
		if p.Acked == 0 {
			f = append(f, "no event was acknowledged")
		}
	}
	bad := func(what string, c Counts, errs int64) {
		if c.Missing > 0 {
			f = append(f, fmt.Sprintf("%s: %d events missing", what, c.Missing))
		}
		if c.Duplicate > 0 {
			f = append(f, fmt.Sprintf("%s: %d events duplicated", what, c.Duplicate))
		}
		if c.OutOfOrder > 0 {
			f = append(f, fmt.Sprintf("%s: %d events out of order", what, c.OutOfOrder))
		}
		if c.Unexpected > 0 && errs == 0 {
			f = append(f, fmt.Sprintf("%s: %d events with ids never acknowledged", what, c.Unexpected))
		}
		if c.Stale > 0 || c.BadID > 0 {
			f = append(f, fmt.Sprintf("%s: %d events at or below the stream's position, %d without a usable id", what, c.Stale, c.BadID))
		}
		if c.Resets > 0 {
			f = append(f, fmt.Sprintf("%s: %d sserelay.reset events", what, c.Resets))
		}
	}
	if d := rep.Delivery; d != nil {
		bad("live", d.Counts, pubErrors)
		if d.Dropped > 0 {
			f = append(f, fmt.Sprintf("%d streams dropped during the run", d.Dropped))
		}
	}
	if s := rep.Storm; s != nil {
		bad("resume storm", s.Counts, 0)
		if s.Failed > 0 || s.Completed < s.Clients {
			f = append(f, fmt.Sprintf("resume storm: %d of %d clients caught up", s.Completed, s.Clients))
		}
	}
	if s := rep.Resume; s != nil {
		bad("resume", s.Counts, 0)
		if !s.Completed {
			f = append(f, "resume: the client did not catch up: "+s.Error)
		}
	}
	rep.Failures = f
	if rep.Failures == nil {
		rep.Failures = []string{}
	}
	rep.OK = len(f) == 0
}

// mainStreams builds the streams of the main phase and their feeds.
func (r *runner) mainStreams() []*stream {
	n := r.cfg.Streams
	streams := make([]*stream, n)
	bcast := -1
	if r.cfg.Mode == ModeBroadcast {
		bcast = r.addFeed(r.cfg.Feed)
	}
	for i := range n {
		user := r.id + "-u" + strconv.Itoa(i)
		s := &stream{idx: i, user: user, live: r.live, extra: &r.storm}
		if bcast >= 0 {
			s.feed = bcast
			s.query = "/v1/events?app_id=" + url.QueryEscape(r.cfg.App) + "&feed=" + url.QueryEscape(r.cfg.Feed)
		} else {
			s.feed = r.addFeed(user)
			s.query = "/v1/events?app_id=" + url.QueryEscape(r.cfg.App)
		}
		streams[i] = s
	}
	return streams
}

func (r *runner) addFeed(name string) int {
	r.feeds = append(r.feeds, feed{name: name, subject: relay.Subject(r.cfg.SubjectPrefix, r.cfg.App, name, "")})
	return len(r.feeds) - 1
}

// token mints a token for sub, also granting feeds, and publishing to apps.
func (r *runner) token(sub string, feeds, publish []string) (string, error) {
	return auth.Sign(r.cfg.Secret, auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(r.expires)},
		Feeds:            feeds,
		Publish:          publish,
	})
}

// streamToken mints the token of a stream: its user, and its feed when that
// is a shared one.
func (r *runner) streamToken(s *stream) (string, error) {
	var feeds []string
	if name := r.feeds[s.feed].name; name != s.user {
		feeds = []string{name}
	}
	return r.token(s.user, feeds, nil)
}

// connect opens streams at rate per second, at most ConnectConcurrency at a
// time, and waits until each is connected or failed.
func (r *runner) connect(ctx context.Context, streams []*stream, rate float64, bufSize int) *ConnectReport {
	cr := &ConnectReport{Requested: len(streams)}
	lat := newHist()
	results := make(chan error, len(streams))
	sem := make(chan struct{}, r.cfg.ConnectConcurrency)
	onConnect := func(s *stream, err error) {
		if err == nil {
			lat.record(s.idx, time.Since(s.start).Nanoseconds())
		}
		results <- err
		<-sem
	}
	errs := make(map[string]int)
	start := time.Now()
	launched := 0
launch:
	for i, s := range streams {
		if rate > 0 {
			due := time.Duration(float64(i) / rate * float64(time.Second))
			if wait := due - time.Since(start); wait > time.Millisecond {
				sleep(ctx, wait)
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break launch
		}
		tok, err := r.streamToken(s)
		if err != nil {
			<-sem
			results <- err
			launched++
			continue
		}
		s.token = tok
		s.onConnect = onConnect
		r.launch(ctx, s, bufSize)
		launched++
	}
	for range launched {
		if err := <-results; err != nil {
			cr.Failed++
			errs[oneLine(err.Error())]++
		} else {
			cr.Connected++
		}
	}
	cr.Failed += len(streams) - launched
	cr.Seconds = time.Since(start).Seconds()
	if cr.Seconds > 0 {
		cr.PerSecond = float64(cr.Connected) / cr.Seconds
	}
	cr.Latency = lat.summary()
	cr.Errors = kinds(errs)
	return cr
}

func (r *runner) launch(ctx context.Context, s *stream, bufSize int) {
	r.mu.Lock()
	r.all = append(r.all, s)
	r.mu.Unlock()
	r.wg.Go(func() { s.serve(ctx, &r.dialer, r.addr, r.host, bufSize, r.cfg.ConnectTimeout) })
}

// closeAll closes every stream and waits for their goroutines.
func (r *runner) closeAll() {
	r.mu.Lock()
	all := r.all
	r.all = nil
	r.mu.Unlock()
	for _, s := range all {
		s.close()
	}
	r.wg.Wait()
}

func (r *runner) shutdown() {
	r.closeAll()
	if r.nc != nil {
		r.nc.Close()
	}
}

// applyAcks records the acknowledged sequences of a publish phase in their
// feeds, sorted.
func (r *runner) applyAcks(res *pubResult) {
	touched := make(map[int32]bool)
	for _, a := range res.acks {
		f := &r.feeds[a.feed]
		f.seqs = append(f.seqs, a.seq)
		touched[a.feed] = true
	}
	for fi := range touched {
		slices.Sort(r.feeds[fi].seqs)
	}
	res.acks = nil
}

// checkReady fails early when the relay is not there or not ready.
func (r *runner) checkReady(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.cfg.URL+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("relay %s: %w", r.cfg.URL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("relay %s is not ready: /readyz %s", r.cfg.URL, resp.Status)
	}
	return nil
}

// scrape reads the relay's /metrics: sample name (with labels stripped and
// summed) to value.
func (r *runner) scrape() (map[string]float64, bool) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(r.cfg.URL + "/metrics")
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	m := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			m[name] += f
		}
	}
	return m, sc.Err() == nil
}

func kinds(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k, n := range m {
		out = append(out, fmt.Sprintf("%d× %s", n, k))
	}
	sort.Strings(out)
	if len(out) > 8 {
		out = append(out[:8], fmt.Sprintf("… %d more kinds", len(out)-8))
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func runID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}
