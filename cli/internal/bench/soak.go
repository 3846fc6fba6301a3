package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SoakConfig describes a soak run: Streams streams on a feed each, events
// published at Rate for Duration, random reconnects with Last-Event-ID, and
// the hostile clients of issue 11 running beside them. It checks that every
// stream got every event of its feed exactly once, in order, across its
// reconnects, and reports the relay's RSS and goroutines at start and end.
type SoakConfig struct {
	URL, NATSURL string
	Secret       []byte
	App, Prefix  string
	Streams      int
	Rate         float64       // events per second, round-robin over the feeds
	Duration     time.Duration // publishing time
	Reconnects   float64       // stream reconnects per second, at random streams
	RelayPID     int
	Logf         func(format string, args ...any)
}

// SoakReport is the outcome of a soak run.
type SoakReport struct {
	Streams    int           `json:"streams"`
	Duration   time.Duration `json:"duration_ns"`
	Published  int           `json:"published"`
	PubErrors  int           `json:"publish_errors"`
	Received   int64         `json:"received"`
	Reconnects int64         `json:"reconnects"`
	Missing    int           `json:"missing"`
	Duplicates int           `json:"duplicates"`
	OutOfOrder int           `json:"out_of_order"`
	Resets     int64         `json:"resets"`

	RSSStartKiB     int64   `json:"rss_start_kib"`
	RSSEndKiB       int64   `json:"rss_end_kib"`
	GoroutinesStart float64 `json:"goroutines_start"`
	GoroutinesEnd   float64 `json:"goroutines_end"`
	// Abuse counts each hostile client's outcomes (HTTP status, or what
	// the relay did to its connection).
	Abuse map[string]map[string]int64 `json:"abuse"`
	// Limited and Closed are the relay's sserelay_limited_total and
	// sserelay_streams_closed_total by label, at the end.
	Limited          map[string]float64 `json:"limited"`
	Closed           map[string]float64 `json:"closed"`
	ConnRefused      float64            `json:"connections_refused"`
	OpenStreamsAtEnd float64            `json:"open_streams_at_end"`
	Failures         []string           `json:"failures"`
	OK               bool               `json:"ok"`
}

// soakStream is one well-behaved client.
type soakStream struct {
	user  string
	token string
	mu    sync.Mutex
	conn  net.Conn
	last  uint64
	got   []uint64
	reset int64
}

// Soak runs a soak and returns its report.
func Soak(ctx context.Context, cfg SoakConfig) (*SoakReport, error) {
	if cfg.App == "" {
		cfg.App = "soak"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sse"
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, err
	}
	addr := u.Host
	nc, err := nats.Connect(cfg.NATSURL)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	r := &runner{cfg: Config{URL: cfg.URL, Secret: cfg.Secret}}
	r.expires = time.Now().Add(24 * time.Hour)
	id := runID()
	rep := &SoakReport{Streams: cfg.Streams, Abuse: map[string]map[string]int64{}}

	// The streams.
	streams := make([]*soakStream, cfg.Streams)
	runCtx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	var wg sync.WaitGroup
	var reconnects, received atomic.Int64
	for i := range streams {
		s := &soakStream{user: fmt.Sprintf("soak-%s-%d", id, i)}
		if s.token, err = r.token(s.user, nil, nil); err != nil {
			stopStreams()
			wg.Wait()
			return nil, err
		}
		streams[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(runCtx, addr, cfg.App, &reconnects, &received)
		}()
		if i%100 == 99 {
			time.Sleep(50 * time.Millisecond) // under the per-address burst
		}
	}
	// Wait until each has its position (the connected event's id).
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := 0
		for _, s := range streams {
			s.mu.Lock()
			if s.last > 0 {
				n++
			}
			s.mu.Unlock()
		}
		if n == len(streams) || time.Now().After(deadline) || ctx.Err() != nil {
			logf("soak: %d of %d streams connected", n, len(streams))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	reconnects.Store(0)
	rep.RSSStartKiB, _ = procRSS(cfg.RelayPID)
	m, _ := r.scrape()
	rep.GoroutinesStart = m["sserelay_goroutines"]

	// The hostile clients, beside the run.
	abuseCtx, stopAbuse := context.WithCancel(ctx)
	var abuseWG sync.WaitGroup
	var abuseMu sync.Mutex
	count := func(who, what string) {
		abuseMu.Lock()
		if rep.Abuse[who] == nil {
			rep.Abuse[who] = map[string]int64{}
		}
		rep.Abuse[who][what]++
		abuseMu.Unlock()
	}
	abusers, err := soakAbusers(r, js, cfg, id, addr)
	if err != nil {
		stopAbuse()
		stopStreams()
		wg.Wait()
		return nil, err
	}
	for name, f := range abusers {
		abuseWG.Add(1)
		go func() {
			defer abuseWG.Done()
			f(abuseCtx, func(what string) { count(name, what) })
		}()
	}

	// Random reconnects, until the abuse stops.
	abuseWG.Add(1)
	go func() {
		defer abuseWG.Done()
		if cfg.Reconnects <= 0 {
			return
		}
		t := time.NewTicker(time.Duration(float64(time.Second) / cfg.Reconnects))
		defer t.Stop()
		for {
			select {
			case <-abuseCtx.Done():
				return
			case <-t.C:
				s := streams[rand.IntN(len(streams))]
				s.mu.Lock()
				if s.conn != nil {
					_ = s.conn.Close()
				}
				s.mu.Unlock()
			}
		}
	}()

	// Publishing.
	logf("soak: publishing %.0f events/s for %s, %.1f reconnects/s, %d abusers", cfg.Rate, cfg.Duration, cfg.Reconnects, len(abusers))
	want := make([][]uint64, len(streams))
	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
	next := 0
	progress := time.Now()
publish:
	for time.Since(start) < cfg.Duration {
		select {
		case <-ctx.Done():
			break publish
		case <-tick.C:
		}
		i := next % len(streams)
		next++
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := js.Publish(pctx, cfg.Prefix+"."+cfg.App+"."+streams[i].user, []byte("soak "+strconv.Itoa(next)))
		cancel()
		if err != nil {
			rep.PubErrors++
			continue
		}
		want[i] = append(want[i], ack.Sequence)
		rep.Published++
		if time.Since(progress) > 30*time.Second {
			progress = time.Now()
			rss, _ := procRSS(cfg.RelayPID)
			logf("soak: %s: %d published, %d received, %d reconnects, relay RSS %d MiB", time.Since(start).Round(time.Second), rep.Published, received.Load(), reconnects.Load(), rss/1024)
		}
	}
	tick.Stop()
	rep.Duration = time.Since(start)
	stopAbuse()
	abuseWG.Wait()

	// Settle: every stream reaches the last event of its feed.
	settle := time.Now().Add(60 * time.Second)
	for time.Now().Before(settle) && ctx.Err() == nil {
		behind := 0
		for i, s := range streams {
			if len(want[i]) == 0 {
				continue
			}
			s.mu.Lock()
			if s.last < want[i][len(want[i])-1] {
				behind++
			}
			s.mu.Unlock()
		}
		if behind == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	rep.Reconnects = reconnects.Load()
	rep.Received = received.Load()
	m, _ = r.scrape()
	rep.GoroutinesEnd = m["sserelay_goroutines"] // streams still open: the same load as at start
	rep.RSSEndKiB, _ = procRSS(cfg.RelayPID)
	rep.Limited, rep.Closed = scrapeLabels(cfg.URL, "sserelay_limited_total", "limit"), scrapeLabels(cfg.URL, "sserelay_streams_closed_total", "reason")
	rep.ConnRefused, rep.OpenStreamsAtEnd = m["sserelay_connections_refused_total"], m["sserelay_open_streams"]
	stopStreams()
	wg.Wait()

	for i, s := range streams {
		miss, dup, ooo := compareSeqs(s.got, want[i])
		rep.Missing += miss
		rep.Duplicates += dup
		rep.OutOfOrder += ooo
		rep.Resets += s.reset
	}
	if rep.Missing+rep.Duplicates+rep.OutOfOrder > 0 || rep.Resets > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d missing, %d duplicated, %d out of order, %d resets", rep.Missing, rep.Duplicates, rep.OutOfOrder, rep.Resets))
	}
	if rep.PubErrors > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d publish errors", rep.PubErrors))
	}
	rep.OK = len(rep.Failures) == 0
	return rep, nil
}

// compareSeqs compares what a stream got with its feed's acknowledged
// sequences: missing ones, duplicates, and steps backwards.
func compareSeqs(got, want []uint64) (missing, dup, ooo int) {
	seen := make(map[uint64]int, len(got))
	var prev uint64
	for _, g := range got {
		if g <= prev {
			ooo++
		}
		prev = max(prev, g)
		seen[g]++
	}
	for _, w := range want {
		switch n := seen[w]; {
		case n == 0:
			missing++
		case n > 1:
			dup += n - 1
		}
	}
	return missing, dup, ooo
}

// run keeps the stream open, resuming from its last id after every end.
func (s *soakStream) run(ctx context.Context, addr, app string, reconnects, received *atomic.Int64) {
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			reconnects.Add(1)
			time.Sleep(time.Duration(50+rand.IntN(200)) * time.Millisecond)
		}
		s.once(ctx, addr, app, received)
	}
}

func (s *soakStream) once(ctx context.Context, addr, app string, received *atomic.Int64) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.conn = c
	last := s.last
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	req := "GET /v1/events?app_id=" + app + " HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + s.token + "\r\n"
	if last > 0 {
		req += "Last-Event-ID: " + strconv.FormatUint(last, 10) + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		return
	}
	var id uint64
	var hasID bool
	var event string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if hasID {
				s.mu.Lock()
				switch {
				case event == "":
					s.got = append(s.got, id)
					received.Add(1)
				case event == "sserelay.reset":
					s.reset++
				}
				if id > s.last {
					s.last = id
				}
				s.mu.Unlock()
			}
			id, hasID, event = 0, false, ""
		case strings.HasPrefix(line, "id: "):
			id, _ = strconv.ParseUint(line[4:], 10, 64)
			hasID = true
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		}
	}
}

// scrapeLabels returns the samples of a labelled counter by label value.
func scrapeLabels(base, name, label string) map[string]float64 {
	out := map[string]float64{}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(base + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	pfx := name + "{" + label + "=\""
	for sc.Scan() {
		l := sc.Text()
		if rest, ok := strings.CutPrefix(l, pfx); ok {
			v, n, _ := strings.Cut(rest, "\"} ")
			if f, err := strconv.ParseFloat(n, 64); err == nil && f > 0 {
				out[v] = f
			}
		}
	}
	return out
}

// soakAbusers are the hostile clients of issue 11, each a loop until ctx
// ends that counts its outcomes.
func soakAbusers(r *runner, js jetstream.JetStream, cfg SoakConfig, id, addr string) (map[string]func(ctx context.Context, count func(string)), error) {
	pubTok, err := r.token("abuse-"+id+"-pub", nil, []string{cfg.App})
	if err != nil {
		return nil, err
	}
	junkTok, _ := r.token("abuse-"+id+"-junk", nil, nil)
	bodyTok, _ := r.token("abuse-"+id+"-body", nil, []string{cfg.App})
	hogTok, _ := r.token("abuse-"+id+"-hog", nil, nil)
	pollUser := "abuse-" + id + "-poll"
	pollTok, _ := r.token(pollUser, nil, nil)
	big := strings.Repeat("p", 60<<10)
	for i := 0; i < 50; i++ { // 3 MB of 60 KB events for the polls
		if _, err := js.Publish(context.Background(), cfg.Prefix+"."+cfg.App+"."+pollUser, []byte(big)); err != nil {
			return nil, fmt.Errorf("soak: publish the poll events: %w", err)
		}
	}
	client := &http.Client{Timeout: 30 * time.Second}
	status := func(resp *http.Response, err error) string {
		if err != nil {
			return "error"
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return strconv.Itoa(resp.StatusCode)
	}
	pause := func(ctx context.Context, d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	raw := func(req string) string {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return "dial-error"
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, _ = io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "no-answer"
		}
		resp.Body.Close()
		return strconv.Itoa(resp.StatusCode)
	}
	return map[string]func(context.Context, func(string)){
		// A body announced and never sent.
		"body-never-sent": func(ctx context.Context, count func(string)) {
			var wg sync.WaitGroup // each ends within raw's deadline
			defer wg.Wait()
			for pause(ctx, 100*time.Millisecond) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					count(raw("POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + bodyTok + "\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"))
				}()
			}
		},
		// Connections that send nothing at all.
		"silent-connections": func(ctx context.Context, count func(string)) {
			var wg sync.WaitGroup // each ends within its deadline
			defer wg.Wait()
			for pause(ctx, 200*time.Millisecond) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.DialTimeout("tcp", addr, 10*time.Second)
					if err != nil {
						count("dial-error")
						return
					}
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(60 * time.Second))
					if _, err := c.Read(make([]byte, 1)); err != nil {
						count("closed-by-relay")
					}
				}()
			}
		},
		// A MiB sent after a stream request.
		"junk-after-stream": func(ctx context.Context, count func(string)) {
			junk := make([]byte, 1<<20)
			for pause(ctx, 250*time.Millisecond) {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					count("dial-error")
					continue
				}
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.WriteString(c, "GET /v1/events?app_id="+cfg.App+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+junkTok+"\r\n\r\n")
				go func() { _, _ = c.Write(junk) }()
				if _, err := io.Copy(io.Discard, c); err == nil || !errors.Is(err, net.ErrClosed) {
					count("closed-by-relay")
				}
				c.Close()
			}
		},
		// 16 concurrent polls over 60 KB events.
		"big-polls": func(ctx context.Context, count func(string)) {
			var wg sync.WaitGroup
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for pause(ctx, 10*time.Millisecond) {
						req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL+"/v1/events?app_id="+cfg.App+"&poll=1&last_event_id=0", nil)
						req.Header.Set("Authorization", "Bearer "+pollTok)
						count(status(client.Do(req)))
					}
				}()
			}
			wg.Wait()
		},
		// One user opening more streams than the per-user limit, reading nothing.
		"stream-hog": func(ctx context.Context, count func(string)) {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for i := 0; i < 100 && pause(ctx, 20*time.Millisecond); i++ {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					count("dial-error")
					continue
				}
				_, _ = io.WriteString(c, "GET /v1/events?app_id="+cfg.App+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+hogTok+"\r\n\r\n")
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					count("no-answer")
					c.Close()
					continue
				}
				line, _ := br.ReadString('\n')
				if strings.HasPrefix(line, ": limited") {
					count("sent-away")
					c.Close()
					continue
				}
				_ = resp
				count("held")
				held = append(held, c)
			}
			<-ctx.Done()
		},
		// A token publishing as fast as it can.
		"publish-flood": func(ctx context.Context, count func(string)) {
			var wg sync.WaitGroup
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for pause(ctx, 2*time.Millisecond) {
						req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL+"/v1/publish",
							strings.NewReader(`{"app_id":"`+cfg.App+`","feed":"abuse-`+id+`-pub","data":"flood"}`))
						req.Header.Set("Authorization", "Bearer "+pubTok)
						req.Header.Set("Content-Type", "application/json")
						count(status(client.Do(req)))
					}
				}()
			}
			wg.Wait()
		},
	}, nil
}
