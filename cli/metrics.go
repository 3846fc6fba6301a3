package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
)

const catMetrics = "Metrics and profiling"

// metricsConfig is the operator's port: /metrics, and pprof when asked, on
// an address of its own that need not face the internet. One port for both
// (not one each) is one containerPort and one NetworkPolicy rule to keep
// private.
type metricsConfig struct {
	Listen     string // empty: none (GET /metrics stays on --listen)
	PProf      bool   // also /debug/pprof/ on Listen
	ListenOnly bool   // no GET /metrics on --listen
}

func metricsFlags(m *metricsConfig) []cli.Flag {
	return []cli.Flag{
		stringVar(&m.Listen, catMetrics, "metrics-listen", "separate address for GET /metrics (and pprof with --metrics-pprof), e.g. 127.0.0.1:9090, so that they need not face the internet; empty: none"),
		boolVar(&m.PProf, catMetrics, "metrics-pprof", "also serve Go's pprof profiles (/debug/pprof/) on --metrics-listen"),
		boolVar(&m.ListenOnly, catMetrics, "metrics-listen-only", "serve GET /metrics on --metrics-listen only, not on --listen"),
	}
}

// check reports flags that need --metrics-listen without it.
func (m metricsConfig) check() error {
	if m.Listen == "" {
		switch {
		case m.PProf:
			return errors.New("--metrics-pprof needs --metrics-listen")
		case m.ListenOnly:
			return errors.New("--metrics-listen-only needs --metrics-listen (or the metrics would be served nowhere)")
		}
	}
	return nil
}

// newRegistry returns the registry of the relay's metrics, with the Go
// runtime, process and build metrics every Prometheus dashboard expects.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	return reg
}

// metricsServer serves the metrics port; nil when there is none.
type metricsServer struct {
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
}

// startMetrics listens on --metrics-listen, if set, and serves reg there.
// It runs before NATS starts: a busy port fails at once, and start-up can
// be watched.
func startMetrics(m metricsConfig, reg *prometheus.Registry, log *slog.Logger) (*metricsServer, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	if m.Listen == "" {
		return &metricsServer{}, nil
	}
	ln, err := net.Listen("tcp", m.Listen)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w (choose another address)", m.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       10 * time.Second,
	}))
	if m.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ms := &metricsServer{srv: srv, done: make(chan struct{})}
	go func() { // ends when close closes the listener
		defer close(ms.done)
		_ = srv.Serve(ln)
	}()
	log.Info("metrics listening", "addr", ln.Addr().String(), "pprof", m.PProf)
	return ms, nil
}

// close stops the metrics port, last, so that the shutdown can be watched.
func (s *metricsServer) close() {
	if s.srv != nil {
		_ = s.srv.Close()
		<-s.done
	}
}
