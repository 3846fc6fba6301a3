package bench

import (
	"context"
	"slices"
	"time"
)

// idlePhase opens the main streams, lets them idle, and reads the relay's
// idle figures: RSS, goroutines, and its CPU over the idle window (nothing
// is published then, so that is what idle streams and their keepalives
// cost).
func (r *runner) idlePhase(ctx context.Context, rep *Report) []*stream {
	cfg, rl := r.cfg, &rep.Relay
	main := r.mainStreams()
	r.logf("connecting %d streams (%s) at %s/s from %d source addresses", len(main), cfg.Mode, rate(cfg.ConnectRate), len(r.dialers))
	cs := r.connect(ctx, main, cfg.ConnectRate, cfg.ReadBuffer)
	rep.Connect = cs
	r.logf("connected %d, failed %d in %.2f s", cs.Connected, cs.Failed, cs.Seconds)
	if cfg.Idle > 0 {
		c0, k0 := sampleCPU(cfg.RelayPID), keepalives(main)
		sleep(ctx, cfg.Idle)
		c1, k1 := sampleCPU(cfg.RelayPID), keepalives(main)
		w := cpuBetween(c0, c1)
		id := &idleReport{Streams: cs.Connected, Seconds: w.Seconds, CPU: &w, Keepalives: k1 - k0}
		if n := float64(cs.Connected) * w.Seconds; n > 0 {
			id.KeepalivesPerStreamSec = float64(id.Keepalives) / n
			if w.RelayKnown {
				id.CPUPerStreamSecondUs = w.RelayCPU * 1e6 / n
			}
		}
		rep.Idle = id
		r.logf("idle %.1f s: relay CPU %.2f s, %.3f µs per stream per second; %.3f keepalives per stream per second",
			w.Seconds, w.RelayCPU, id.CPUPerStreamSecondUs, id.KeepalivesPerStreamSec)
	}
	if m, ok := r.scrape(); ok {
		rl.OpenStreams = int64(m["sserelay_open_streams"])
		rl.GoroutinesIdle = int64(m["sserelay_goroutines"])
		if rep.Idle != nil && cs.Connected > 0 && rl.GoroutinesBase > 0 {
			rep.Idle.GoroutinesPerStream = float64(rl.GoroutinesIdle-rl.GoroutinesBase) / float64(cs.Connected)
		}
	}
	if rl.PID > 0 {
		rl.RSSIdleKiB, _ = procRSS(rl.PID)
		rl.RSSAnonIdleKiB, _ = procStatus(rl.PID, "RssAnon")
		rl.RSSPeakKiB, _ = procStatus(rl.PID, "VmHWM")
		rl.ThreadsIdle, _ = procStatus(rl.PID, "Threads")
		if cs.Connected > 0 {
			rl.RSSPerStreamKiB = float64(rl.RSSIdleKiB-rl.RSSBaselineKiB) / float64(cs.Connected)
			if rl.RSSAnonBaselineKiB > 0 && rl.RSSAnonIdleKiB > 0 {
				rl.RSSAnonPerStreamKiB = float64(rl.RSSAnonIdleKiB-rl.RSSAnonBaselineKiB) / float64(cs.Connected)
			}
		}
		r.logf("relay RSS %.1f MiB idle with %d streams (%.1f KiB per stream, %.1f KiB anonymous; peak %.1f MiB)",
			float64(rl.RSSIdleKiB)/1024, cs.Connected, rl.RSSPerStreamKiB, rl.RSSAnonPerStreamKiB, float64(rl.RSSPeakKiB)/1024)
	}
	return main
}

// keepalives is the comment lines the streams have received so far.
func keepalives(streams []*stream) int64 {
	var n int64
	for _, s := range streams {
		n += s.comments.Load()
	}
	return n
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
	pr := &publishReport{Via: string(cfg.Publisher), Sent: res.sent.Load(), Acked: res.acked.Load(), Errors: int64(res.errors),
		ErrorKinds: res.errorKinds(), AckLatency: res.ackLat.summary()}
	if pr.Acked > 0 {
		pr.Seconds = res.end.Sub(res.start).Seconds()
		pr.AckedPerSecond = float64(pr.Acked) / pr.Seconds
	}
	rep.Publish = pr
	r.logf("published %d, acked %d, errors %d: %.0f/s", pr.Sent, pr.Acked, pr.Errors, pr.AckedPerSecond)

	// Wait until every connected stream has the last acknowledged event of
	// its feed: the relay delivers in order, so it then has all it will get
	// (the check below finds any gap). Counting deliveries would not do: a
	// publish answered with an error may still be stored and delivered, and
	// its deliveries would end the wait while acknowledged events are still
	// on their way, to be reported missing when they were only late.
	var expected int64
	for _, s := range main {
		if s.connected {
			expected += int64(len(r.feeds[s.feed].seqs))
		}
	}
	d := &deliveryReport{}
	deadline := time.Now().Add(cfg.Settle)
	for {
		behind, got := r.behind(main)
		if behind == 0 {
			d.Settled = true
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.logf("settle: %d streams without their last event, %d of %d deliveries after %s", behind, got, expected, cfg.Settle)
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
		d.RelayCounts = relayMetrics{OK: true,
			Delivered: int64(m1["sserelay_events_delivered_total"] - m0["sserelay_events_delivered_total"]),
			Overflows: int64(m1["sserelay_queue_overflows_total"] - m0["sserelay_queue_overflows_total"]),
			Replays:   int64(m1["sserelay_replays_total"] - m0["sserelay_replays_total"]),
			Replayed:  int64(m1["sserelay_events_replayed_total"] - m0["sserelay_events_replayed_total"]),
			Resets:    int64(m1["sserelay_resets_total"] - m0["sserelay_resets_total"]),
		}
	}
	rep.Delivery = d
	w := cpuBetween(c0, c1)
	rl := &rep.Relay
	rl.PublishCPU = &w
	if w.RelayKnown && pr.Acked > 0 {
		rl.CPUPerEventUs = w.RelayCPU * 1e6 / float64(pr.Acked)
	}
	// Deliveries are counted by checkMain; the per-delivery CPU is set there.
}

// behind counts the connected streams that have not received the last
// acknowledged event of their feed yet, and returns the events received.
func (r *runner) behind(streams []*stream) (behind int, got int64) {
	for _, s := range streams {
		got += s.n.Load()
		if seqs := r.feeds[s.feed].seqs; s.connected && len(seqs) > 0 && seqs[len(seqs)-1] > s.base && s.top.Load() < seqs[len(seqs)-1] {
			behind++
		}
	}
	return behind, got
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
