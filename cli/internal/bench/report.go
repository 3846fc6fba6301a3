package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Report is the outcome of a run. OK is false, with the reasons in Failures,
// when an event was lost, duplicated, reordered or unexpected, a stream
// failed or dropped, or a resume did not complete.
type Report struct {
	RunID    string          `json:"run_id"`
	Config   reportConfig    `json:"config"`
	Machine  machineReport   `json:"machine"`
	Connect  *connectReport  `json:"connect,omitempty"`
	Idle     *idleReport     `json:"idle,omitempty"`
	Publish  *publishReport  `json:"publish,omitempty"`
	Delivery *deliveryReport `json:"delivery,omitempty"`
	Relay    relayReport     `json:"relay"`
	Resume   *resumeReport   `json:"resume,omitempty"`
	Storm    *stormReport    `json:"storm,omitempty"`
	Checked  checkedReport   `json:"checked"`
	Failures []string        `json:"failures"`
	OK       bool            `json:"ok"`
}

// reportConfig echoes the scenario.
type reportConfig struct {
	URL          string  `json:"url"`
	NATSURL      string  `json:"nats_url,omitempty"`
	Mode         string  `json:"mode"`
	Feed         string  `json:"feed,omitempty"`
	Streams      int     `json:"streams"`
	ConnectRate  float64 `json:"connect_rate"`
	SourceAddrs  int     `json:"source_addrs"`
	Rate         float64 `json:"rate"`
	Duration     string  `json:"duration"`
	Events       int     `json:"events,omitempty"`
	Publisher    string  `json:"publisher"`
	Publishers   int     `json:"publishers,omitempty"`
	MaxInflight  int     `json:"max_inflight,omitempty"`
	PayloadBytes int     `json:"payload_bytes"`
	ResumeMissed int     `json:"resume_missed,omitempty"`
	ResumeStorm  int     `json:"resume_storm,omitempty"`
	StormMissed  int     `json:"storm_missed,omitempty"`
	StormShared  bool    `json:"storm_shared,omitempty"`
}

// machineReport describes where the run happened: the load averages show whether
// other work shared the cores.
type machineReport struct {
	CPUs         int    `json:"cpus"`
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
	OpenFiles    uint64 `json:"bench_open_files_limit"`
}

// connectReport is the opening of the streams.
type connectReport struct {
	Requested int      `json:"requested"`
	Connected int      `json:"connected"`
	Failed    int      `json:"failed"`
	Errors    []string `json:"errors,omitempty"`
	Seconds   float64  `json:"seconds"`
	PerSecond float64  `json:"per_second"`
	Latency   latency  `json:"latency"` // request to sserelay.connected
}

// checkedReport sums what every stream of the run received, checked against
// the acknowledgements of its feed's events: the main streams, the storm's
// and the resume client.
type checkedReport struct {
	Streams int   `json:"streams"`
	Counts  tally `json:"counts"`
}

// idleReport is the streams idling after they connected: what they cost the
// relay when nothing is published but keepalives.
type idleReport struct {
	Streams                int        `json:"streams"` // connected streams
	Seconds                float64    `json:"seconds"`
	CPU                    *cpuWindow `json:"cpu"`
	CPUPerStreamSecondUs   float64    `json:"relay_cpu_per_stream_second_us"` // relay CPU / streams / seconds
	Keepalives             int64      `json:"keepalives"`                     // comment lines the streams received in the window
	KeepalivesPerStreamSec float64    `json:"keepalives_per_stream_second"`
	GoroutinesPerStream    float64    `json:"relay_goroutines_per_stream,omitempty"` // from sserelay_goroutines
}

// publishReport is the main publish phase.
type publishReport struct {
	Via            string   `json:"via"`
	Sent           int64    `json:"sent"`
	Acked          int64    `json:"acked"`
	Errors         int64    `json:"errors"`
	ErrorKinds     []string `json:"error_kinds,omitempty"`
	Seconds        float64  `json:"seconds"` // first send to last acknowledgement
	AckedPerSecond float64  `json:"acked_per_second"`
	AckLatency     latency  `json:"ack_latency"`
}

// deliveryReport is what the streams received during the main phase.
type deliveryReport struct {
	Streams     int          `json:"streams"` // streams checked (those connected)
	Counts      tally        `json:"counts"`
	Problems    []string     `json:"problems,omitempty"` // the first streams with missing, duplicate or reordered events
	Dropped     int          `json:"dropped"`            // streams that ended before the run did
	DropErrors  []string     `json:"drop_errors,omitempty"`
	Seconds     float64      `json:"seconds"` // first publish to last delivery
	PerSecond   float64      `json:"per_second"`
	Latency     latency      `json:"latency"` // end to end, from the payload's send time
	Settled     bool         `json:"settled"` // every expected event arrived before --settle ran out
	RelayCounts relayMetrics `json:"relay_metrics"`
}

// relayMetrics are deltas of the relay's own counters over the main phase.
type relayMetrics struct {
	Delivered int64 `json:"delivered"`
	Overflows int64 `json:"queue_overflows"`
	Replays   int64 `json:"replays"`
	Replayed  int64 `json:"replayed"`
	Resets    int64 `json:"resets"`
	OK        bool  `json:"ok"` // /metrics was readable
}

// relayReport is the relay process, when its pid is known.
type relayReport struct {
	PID             int     `json:"pid,omitempty"`
	OpenFilesLimit  string  `json:"open_files_limit,omitempty"`
	OpenStreams     int64   `json:"open_streams_after_connect"` // its sserelay_open_streams gauge
	RSSBaselineKiB  int64   `json:"rss_baseline_kib,omitempty"`
	RSSIdleKiB      int64   `json:"rss_idle_kib,omitempty"`
	RSSEndKiB       int64   `json:"rss_end_kib,omitempty"`
	RSSPerStreamKiB float64 `json:"rss_per_idle_stream_kib,omitempty"`
	// The anonymous part of the RSS (the heap, stacks, the runtime's own),
	// without the executable's pages: those are paged in by the first
	// streams once, not per stream, yet count in RSSPerStreamKiB.
	RSSAnonBaselineKiB  int64      `json:"rss_anon_baseline_kib,omitempty"`
	RSSAnonIdleKiB      int64      `json:"rss_anon_idle_kib,omitempty"`
	RSSAnonPerStreamKiB float64    `json:"rss_anon_per_idle_stream_kib,omitempty"`
	RSSPeakKiB          int64      `json:"rss_peak_kib,omitempty"` // VmHWM when idle: the connects' high-water mark
	ThreadsIdle         int64      `json:"threads_idle,omitempty"`
	GoroutinesBase      int64      `json:"goroutines_baseline,omitempty"` // its sserelay_goroutines gauge
	GoroutinesIdle      int64      `json:"goroutines_idle,omitempty"`
	PublishCPU          *cpuWindow `json:"publish_cpu,omitempty"` // first publish to last delivery
	CPUPerEventUs       float64    `json:"cpu_per_event_us,omitempty"`
	CPUPerDeliveryUs    float64    `json:"cpu_per_delivery_us,omitempty"`
}

// resumeReport is --resume-missed: one client catching up K events.
type resumeReport struct {
	Missed          int        `json:"missed"`
	Acked           int64      `json:"acked"`
	PublishSeconds  float64    `json:"publish_seconds"`
	Completed       bool       `json:"completed"`
	Error           string     `json:"error,omitempty"`
	ConnectMs       float64    `json:"connect_ms"`       // request to sserelay.connected
	CatchUpSeconds  float64    `json:"catch_up_seconds"` // request to the last missed event
	EventsPerSecond float64    `json:"events_per_second"`
	Counts          tally      `json:"counts"`
	CPU             *cpuWindow `json:"cpu,omitempty"`
	CPUPerEventUs   float64    `json:"cpu_per_event_us,omitempty"`
}

// stormReport is --resume-storm: M clients resuming at once.
type stormReport struct {
	Clients         int        `json:"clients"`
	MissedEach      int        `json:"missed_each"`
	Shared          bool       `json:"shared_feed"` // every client reads one feed
	Acked           int64      `json:"acked"`
	Completed       int        `json:"completed"`
	Failed          int        `json:"failed"`
	Errors          []string   `json:"errors,omitempty"`
	DuringMain      bool       `json:"during_main_phase"` // live traffic ran meanwhile
	AllCaughtUpSecs float64    `json:"all_caught_up_seconds"`
	CatchUp         latency    `json:"catch_up"`          // per client, request to its last missed event
	LiveDuring      latency    `json:"live_during_storm"` // latency of the main streams meanwhile
	Counts          tally      `json:"counts"`
	CPU             *cpuWindow `json:"cpu,omitempty"` // reconnect to the last client caught up
	checked         int        // clients whose deliveries were checked
}

func lat(l latency) string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms  (n=%d)", l.P50Ms, l.P90Ms, l.P99Ms, l.P999Ms, l.MaxMs, l.Count)
}

func countsText(c tally) string {
	s := fmt.Sprintf("expected %d  received %d  missing %d  duplicate %d  out-of-order %d", c.Expected, c.Received, c.Missing, c.Duplicate, c.OutOfOrder)
	if c.Unexpected+c.Stale+c.BadID+c.Resets > 0 {
		s += fmt.Sprintf("  unexpected %d  stale %d  bad-id %d  resets %d", c.Unexpected, c.Stale, c.BadID, c.Resets)
	}
	return s
}

func cpu(w *cpuWindow) string {
	if w == nil {
		return "-"
	}
	s := fmt.Sprintf("%.2f s over %.2f s (%.2f cores)", w.RelayCPU, w.Seconds, w.RelayCores)
	if !w.RelayKnown {
		s = "unknown (no relay pid)"
	}
	if w.Seconds < minCPUWindow {
		s += " [window too short for /proc's 10 ms CPU ticks]"
	}
	return s + fmt.Sprintf("; bench %.2f cores, other processes %.2f cores, of %.1f", w.BenchCores, w.OtherCores, w.MachineCores)
}

// WriteText writes the report as a human-readable table.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, format string, a ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(format, a...)) }
	sec := func(name string) { fmt.Fprintf(tw, "%s\n", name) }
	c := r.Config
	sec("scenario")
	row("run", "%s  mode %s  streams %d  publisher %s", r.RunID, c.Mode, c.Streams, c.Publisher)
	if c.Events > 0 {
		row("publish", "%d events at %s/s", c.Events, rate(c.Rate))
	} else if r.Publish == nil {
		row("publish", "no publish phase")
	} else {
		row("publish", "%s/s for %s", rate(c.Rate), c.Duration)
	}
	row("relay", "%s  NATS %s", c.URL, c.NATSURL)
	row("machine", "%d CPUs, load average %s at start, %s at end", r.Machine.CPUs, r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd)
	if cr := r.Connect; cr != nil {
		sec("connect")
		row("streams", "%d connected, %d failed of %d, in %.2f s (%.0f/s), from %d source addresses", cr.Connected, cr.Failed, cr.Requested, cr.Seconds, cr.PerSecond, c.SourceAddrs)
		row("latency", "%s", lat(cr.Latency))
		for _, e := range cr.Errors {
			row("error", "%s", e)
		}
	}
	if id := r.Idle; id != nil {
		sec("idle")
		note := ""
		if id.Keepalives == 0 {
			note = " [none: make --idle longer than the relay's --keepalive]"
		}
		row("window", "%d streams for %.2f s, %d keepalives received (%.4f per stream per second)%s", id.Streams, id.Seconds, id.Keepalives, id.KeepalivesPerStreamSec, note)
		row("relay CPU", "%s", cpu(id.CPU))
		if id.CPU.RelayKnown {
			note := ""
			if id.CPU.RelayCPU < 10*clockTick.Seconds() {
				note = " [under 10 of /proc's 10 ms CPU ticks: make --idle longer]"
			}
			row("CPU per idle stream", "%.3f µs per stream per second%s", id.CPUPerStreamSecondUs, note)
		}
		if id.GoroutinesPerStream != 0 {
			row("goroutines per idle stream", "%.2f", id.GoroutinesPerStream)
		}
	}
	rl := r.Relay
	if rl.PID > 0 || rl.OpenStreams > 0 {
		sec("relay")
		if rl.PID > 0 {
			row("pid", "%d  open files limit %s  threads %d", rl.PID, rl.OpenFilesLimit, rl.ThreadsIdle)
			row("RSS", "baseline %.1f MiB  idle %.1f MiB  end %.1f MiB", float64(rl.RSSBaselineKiB)/1024, float64(rl.RSSIdleKiB)/1024, float64(rl.RSSEndKiB)/1024)
			if rl.RSSPerStreamKiB > 0 {
				row("RSS per idle stream", "%.1f KiB (anonymous %.1f KiB; peak RSS %.1f MiB)", rl.RSSPerStreamKiB, rl.RSSAnonPerStreamKiB, float64(rl.RSSPeakKiB)/1024)
			}
		}
		row("open streams", "%d (relay gauge after connect)", rl.OpenStreams)
		if rl.GoroutinesIdle > 0 {
			row("goroutines", "baseline %d  idle %d", rl.GoroutinesBase, rl.GoroutinesIdle)
		}
	}
	if p := r.Publish; p != nil {
		sec("publish")
		row("events", "%d sent  %d acked  %d errors  via %s", p.Sent, p.Acked, p.Errors, p.Via)
		row("throughput", "%.0f acked/s over %.2f s", p.AckedPerSecond, p.Seconds)
		row("ack latency", "%s", lat(p.AckLatency))
		for _, e := range p.ErrorKinds {
			row("error", "%s", e)
		}
	}
	if d := r.Delivery; d != nil {
		sec("delivery")
		row("counts", "%s", countsText(d.Counts))
		row("streams", "%d checked, %d dropped, settled %v", d.Streams, d.Dropped, d.Settled)
		for _, e := range d.DropErrors {
			row("drop", "%s", e)
		}
		for _, e := range d.Problems {
			row("problem", "%s", e)
		}
		if r.Publish != nil {
			row("throughput", "%.0f delivered/s over %.2f s", d.PerSecond, d.Seconds)
			row("latency", "%s", lat(d.Latency))
			if d.RelayCounts.OK {
				m := d.RelayCounts
				row("relay metrics", "delivered %d  queue overflows %d  replays %d (%d events)  resets %d", m.Delivered, m.Overflows, m.Replays, m.Replayed, m.Resets)
			}
			row("relay CPU", "%s", cpu(rl.PublishCPU))
			if rl.CPUPerEventUs > 0 {
				row("CPU per event", "%.1f µs per published event, %.2f µs per delivered event", rl.CPUPerEventUs, rl.CPUPerDeliveryUs)
			}
		}
	}
	if s := r.Storm; s != nil {
		sec("resume storm")
		feeds := "a feed each"
		if s.Shared {
			feeds = "one shared feed"
		}
		row("clients", "%d on %s, %d missed each (%d acked); %d caught up, %d failed; live traffic meanwhile: %v", s.Clients, feeds, s.MissedEach, s.Acked, s.Completed, s.Failed, s.DuringMain)
		row("all caught up", "%.3f s", s.AllCaughtUpSecs)
		row("catch-up per client", "%s", lat(s.CatchUp))
		row("live latency meanwhile", "%s", lat(s.LiveDuring))
		row("counts", "%s", countsText(s.Counts))
		if s.CPU != nil && s.CPU.RelayKnown {
			row("relay CPU", "%s", cpu(s.CPU))
		}
		for _, e := range s.Errors {
			row("error", "%s", e)
		}
	}
	if s := r.Resume; s != nil {
		sec("resume")
		row("missed", "%d (%d acked, published in %.2f s)", s.Missed, s.Acked, s.PublishSeconds)
		row("catch-up", "%.3f s, %.0f events/s, connected in %.1f ms, completed %v", s.CatchUpSeconds, s.EventsPerSecond, s.ConnectMs, s.Completed)
		row("counts", "%s", countsText(s.Counts))
		if s.CPU != nil && s.CPU.RelayKnown {
			row("relay CPU", "%s", cpu(s.CPU))
			if s.CPUPerEventUs > 0 {
				row("CPU per event", "%.2f µs per replayed event", s.CPUPerEventUs)
			}
		}
		if s.Error != "" {
			row("error", "%s", s.Error)
		}
	}
	sec("result")
	ch := r.Checked
	row("checked", "%d streams: %d deliveries against %d acknowledged events (missing %d, duplicate %d, out of order %d)",
		ch.Streams, ch.Counts.Received, ch.Counts.Expected, ch.Counts.Missing, ch.Counts.Duplicate, ch.Counts.OutOfOrder)
	if r.OK {
		row("OK", "no event missing, duplicated or out of order")
	}
	for _, f := range r.Failures {
		row("FAIL", "%s", f)
	}
	return tw.Flush()
}

func rate(r float64) string {
	if r <= 0 {
		return "max"
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", r), "0"), ".")
}
