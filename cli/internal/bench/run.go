package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/subject"
)

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
	addr     string       // host:port
	host     string       // Host header
	dialers  []net.Dialer // one per source address; stream i uses dialers[i%len]
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
	r, err := newRunner(cfg)
	if err != nil {
		return nil, err
	}
	defer r.shutdown()
	cfg = r.cfg
	rep := &Report{RunID: r.id, Config: cfg.echo(),
		Machine: machineReport{CPUs: runtime.NumCPU(), LoadAvgStart: loadAvg(), OpenFiles: openFilesLimit()}}
	if err := r.setUp(ctx, rep); err != nil {
		return nil, err
	}

	// Phase 1: open the streams and let them idle.
	var main []*stream
	if cfg.Streams > 0 {
		main = r.idlePhase(ctx, rep)
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
	rl := &rep.Relay
	if rl.PID > 0 {
		rl.RSSEndKiB, _ = procRSS(rl.PID)
	}
	rep.Machine.LoadAvgEnd = loadAvg()

	// Close everything, then check what each stream received.
	r.closeAll()
	if rep.Delivery == nil && len(main) > 0 {
		// No publish phase: the streams must still have received nothing
		// and stayed open.
		rep.Delivery = &deliveryReport{Settled: true}
	}
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

// newRunner checks the relay URL and names the run.
func newRunner(cfg Config) (*runner, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("%w: relay URL %q must be http://host:port", errInvalidConfig, cfg.URL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr += ":80"
	}
	r := &runner{cfg: cfg, logf: cfg.Logf, id: runID(), addr: addr, host: u.Host, live: newHist(),
		expires: time.Now().Add(24 * time.Hour)}
	srcs, err := sourceAddrs(u.Hostname(), cfg.SourceAddrs, cfg.connections())
	if err != nil {
		return nil, err
	}
	r.cfg.SourceAddrs = max(1, len(srcs))
	r.dialers = []net.Dialer{{Timeout: cfg.ConnectTimeout}}
	if len(srcs) > 0 {
		r.dialers = make([]net.Dialer, len(srcs))
		for i, a := range srcs {
			r.dialers[i] = net.Dialer{Timeout: cfg.ConnectTimeout, LocalAddr: &net.TCPAddr{IP: a.AsSlice()}}
		}
	}
	if cfg.Mode == modeBroadcast && cfg.Feed == "" {
		r.cfg.Feed = "_all_" + r.id
	}
	return r, nil
}

// setUp checks that the relay is ready, prepares the publisher, and reads
// the relay's baseline RSS.
func (r *runner) setUp(ctx context.Context, rep *Report) error {
	if err := r.checkReady(ctx); err != nil {
		return err
	}
	if r.cfg.Publisher == publisherNATS {
		if err := r.natsConnect(); err != nil {
			return err
		}
	} else {
		var err error
		if r.pubToken, err = r.token(r.id+"-pub", nil, []string{r.cfg.App + auth.AnyFeed}); err != nil {
			return err
		}
	}
	if pid := r.cfg.RelayPID; pid > 0 {
		rl := &rep.Relay
		rl.PID = pid
		rl.OpenFilesLimit, _ = procOpenFilesLimit(pid)
		if _, err := procRSS(pid); err != nil {
			return fmt.Errorf("relay pid %d: %w", pid, err)
		}
		runtime.GC()
		time.Sleep(200 * time.Millisecond)
		rl.RSSBaselineKiB, _ = procRSS(pid)
		rl.RSSAnonBaselineKiB, _ = procStatus(pid, "RssAnon")
	}
	if m, ok := r.scrape(); ok {
		rep.Relay.GoroutinesBase = int64(m["sserelay_goroutines"])
	}
	return r.checkFileLimits(rep)
}

// mainStreams builds the streams of the main phase and their feeds.
func (r *runner) mainStreams() []*stream {
	n := r.cfg.Streams
	streams := make([]*stream, n)
	bcast := -1
	if r.cfg.Mode == modeBroadcast {
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
	r.feeds = append(r.feeds, feed{name: name, subject: subject.Join(r.cfg.SubjectPrefix, r.cfg.App, name, "")})
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

func (r *runner) shutdown() {
	r.closeAll()
	if r.nc != nil {
		r.nc.Close()
	}
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
