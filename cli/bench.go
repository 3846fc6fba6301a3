package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/cli/internal/bench"
)

func benchFlags() []cli.Flag {
	return []cli.Flag{
		strFlag("url", "http://127.0.0.1:8080", "relay to measure (ignored with --spawn)"),
		strFlag("nats-url", "nats://127.0.0.1:4222", "NATS server of that relay, for --publisher nats (ignored with --spawn)"),
		boolFlag("spawn", "start \"sserelay serve\" as a child (HTTP and embedded NATS on loopback ports the child binds itself, temporary data dir) and measure it"),
		&cli.StringSliceFlag{Name: "serve-arg", EnvVars: env("serve-arg"), Usage: "extra flag for the spawned relay, e.g. --serve-arg=--queue-events=1024 (repeatable)"},
		intFlag("relay-pid", 0, "pid of the relay at --url, to report its RSS and CPU (set by --spawn)"),
		strFlag("jwt-secret", "", "HS256 secret the relay verifies tokens with (random with --spawn when empty)"),
		strFlag("app", "bench", "app id"),
		strFlag("subject-prefix", "sse", "the relay's subject prefix"),
		strFlag("mode", "per-user", "per-user (one user and feed per stream), broadcast (every stream on one shared feed), or soak (per-user streams with random reconnects and the hostile clients of issue 11 beside them, for --duration at --rate)"),
		floatFlag("reconnect-rate", 5, "soak: stream reconnects per second, at random streams (each resumes with Last-Event-ID)"),
		strFlag("feed", "", "shared feed of broadcast mode (default _all_<run id>)"),
		intFlag("streams", 1000, "SSE streams to open"),
		floatFlag("connect-rate", 2000, "streams opened per second (0: as fast as --connect-concurrency allows)"),
		intFlag("connect-concurrency", 256, "stream connects in progress at once"),
		durFlag("connect-timeout", 30*time.Second, "time for a stream to get its sserelay.connected event"),
		intFlag("source-addrs", 0, "spread the streams over this many loopback source addresses from 127.0.0.1 (each has its own ephemeral port range; 0: one per 16,384 connections when the relay is on 127.0.0.0/8)"),
		durFlag("idle", 2*time.Second, "wait after connecting, before reading the relay's idle RSS; its CPU over this window is the cost of idle streams and their keepalives (use several keepalive intervals)"),
		intFlag("read-buffer", 4096, "read buffer per stream in bytes"),
		floatFlag("rate", 1000, "events published per second (0: as fast as possible)"),
		durFlag("duration", 10*time.Second, "publish phase length (0 with --events 0: no publish phase, e.g. to measure idle memory)"),
		intFlag("events", 0, "publish exactly this many events instead of for --duration"),
		strFlag("publisher", "nats", "nats (JetStream async publish) or http (POST /v1/publish)"),
		intFlag("publishers", 16, "concurrent HTTP publishers (--publisher http)"),
		intFlag("max-inflight", 256, "JetStream publishes awaiting acknowledgement (--publisher nats)"),
		intFlag("payload-bytes", 0, "pad each event's data to about this many bytes"),
		durFlag("settle", 10*time.Second, "wait this long for deliveries after the last acknowledgement"),
		intFlag("resume-missed", 0, "resume test: one client misses this many events and reconnects with Last-Event-ID"),
		intFlag("resume-storm", 0, "reconnect storm: this many clients, each having missed --storm-missed events, reconnect at once (during the publish phase)"),
		intFlag("storm-missed", 100, "events each storm client missed"),
		boolFlag("storm-shared", "storm clients read one shared feed (a pod's clients returning: --storm-missed events in all) instead of a feed each"),
		boolFlag("json", "print the report as one JSON object"),
		boolFlag("quiet", "no progress lines on stderr"),
		strFlag("cpuprofile", "", "write a CPU profile of the load tool itself to this file"),
	}
}

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:         "bench",
		OnUsageError: usage,
		Usage:        "measure a relay: open SSE streams, publish, check every event arrived once and in order, report throughput, latency, memory and CPU",
		Description: "Drives a running relay (--url, --nats-url, --relay-pid) or, with --spawn, one it starts itself.\n" +
			"Exits with status 1 when any event is missing, duplicated or out of order, or a stream failed.",
		Flags:  benchFlags(),
		Action: runBench,
	}
}

func runBench(c *cli.Context) error {
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, a ...any) { fmt.Fprintf(c.App.ErrWriter, "bench: "+format+"\n", a...) }
	if c.Bool("quiet") {
		logf = func(string, ...any) {}
	}
	// Before anything opens files, and before a spawned relay inherits it.
	if _, err := bench.RaiseFileLimit(); err != nil {
		fmt.Fprintf(c.App.ErrWriter, "bench: %v\n", err) // even with --quiet: the run may fail for it
	}
	cfg := bench.Config{
		URL: c.String("url"), NATSURL: c.String("nats-url"), RelayPID: c.Int("relay-pid"),
		App: c.String("app"), SubjectPrefix: c.String("subject-prefix"),
		Mode: bench.Mode(c.String("mode")), Feed: c.String("feed"), Streams: c.Int("streams"),
		ConnectRate: c.Float64("connect-rate"), ConnectConcurrency: c.Int("connect-concurrency"), SourceAddrs: c.Int("source-addrs"),
		ConnectTimeout: c.Duration("connect-timeout"), Idle: c.Duration("idle"), ReadBuffer: c.Int("read-buffer"),
		Rate: c.Float64("rate"), Duration: c.Duration("duration"), Events: c.Int("events"),
		Publisher: bench.Publisher(c.String("publisher")), Publishers: c.Int("publishers"), MaxInflight: c.Int("max-inflight"),
		PayloadBytes: c.Int("payload-bytes"), Settle: c.Duration("settle"),
		ResumeMissed: c.Int("resume-missed"), ResumeStorm: c.Int("resume-storm"), StormMissed: c.Int("storm-missed"),
		StormShared: c.Bool("storm-shared"),
		Logf:        logf,
	}
	if cfg.Idle == 0 {
		cfg.Idle = -1 // --idle 0: no wait (the library's zero means its default)
	}
	secret := c.String("jwt-secret")
	var spawned *bench.Spawned
	if c.Bool("spawn") {
		if secret == "" {
			var b [24]byte
			_, _ = rand.Read(b[:])
			secret = hex.EncodeToString(b[:])
		}
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find own executable: %w", err)
		}
		args := c.StringSlice("serve-arg")
		if c.String("mode") == "soak" {
			// The soak's publish flood is there to meet the publish limit.
			args = append([]string{"--publish-rate=100"}, args...)
		}
		spawned, err = bench.Spawn(ctx, bench.SpawnOptions{Exe: exe, Secret: []byte(secret), Args: args, Logf: logf})
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		cfg.URL, cfg.NATSURL, cfg.RelayPID = spawned.URL, spawned.NATSURL, spawned.PID
	} else if secret == "" {
		return errors.New("bench: --jwt-secret is required (or --spawn)")
	}
	cfg.Secret = []byte(secret)

	if p := c.String("cpuprofile"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	if cfg.Mode == "soak" {
		return runSoak(ctx, c, cfg, spawned, logf)
	}
	rep, err := bench.Run(ctx, cfg)
	relayLog := ""
	if spawned != nil {
		logf("stopping the spawned relay")
		relayLog = spawned.Stop()
	}
	if err != nil {
		if relayLog != "" {
			logf("relay log:\n%s", relayLog)
		}
		return fmt.Errorf("bench: %w", err)
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := rep.WriteText(c.App.Writer); err != nil {
		return err
	}
	if !rep.OK {
		if relayLog != "" {
			logf("relay log:\n%s", relayLog)
		}
		return fmt.Errorf("bench failed: %s", strings.Join(rep.Failures, "; "))
	}
	return nil
}

// runSoak runs `bench --mode soak` and prints its report.
func runSoak(ctx context.Context, c *cli.Context, cfg bench.Config, spawned *bench.Spawned, logf func(string, ...any)) error {
	rep, err := bench.Soak(ctx, bench.SoakConfig{
		URL: cfg.URL, NATSURL: cfg.NATSURL, Secret: cfg.Secret, App: cfg.App, Prefix: cfg.SubjectPrefix,
		Streams: cfg.Streams, Rate: cfg.Rate, Duration: cfg.Duration, Reconnects: c.Float64("reconnect-rate"),
		RelayPID: cfg.RelayPID, Logf: logf,
	})
	if spawned != nil {
		logf("stopping the spawned relay")
		spawned.Stop()
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("soak failed: %s", strings.Join(rep.Failures, "; "))
	}
	return nil
}
