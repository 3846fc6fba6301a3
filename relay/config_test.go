package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sserelay/sserelay/relay/auth"
)

var configTestSecret = []byte("config-test-secret-0123456789abcdef")

// configTestServer runs an in-process JetStream server (no listener) with
// the given JetStream domain and returns a connection to it.
func configTestServer(t *testing.T, domain string) *nats.Conn {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		JetStream: true, JetStreamDomain: domain, StoreDir: t.TempDir(), DontListen: true, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func configTestVerifier(t *testing.T) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: configTestSecret})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDefaultConfigIsWhatZeroBecomes(t *testing.T) {
	nc := configTestServer(t, "")
	c := Config{Conn: nc, Verifier: configTestVerifier(t)}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Conn, want.Verifier, want.JetStream, want.Logger = c.Conn, c.Verifier, c.JetStream, c.Logger
	if c.JetStream == nil || c.Logger == nil {
		t.Fatalf("JetStream %v, Logger %v: want both set", c.JetStream, c.Logger)
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("zero config became\n%+v\nwant DefaultConfig\n%+v", c, want)
	}
	var so StreamOptions
	if err := so.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if so != DefaultStreamOptions() {
		t.Errorf("zero stream options became %+v, want %+v", so, DefaultStreamOptions())
	}
}

func TestConfigJetStream(t *testing.T) {
	nc := configTestServer(t, "")
	other := configTestServer(t, "")
	v := configTestVerifier(t)
	def, _ := jetstream.New(nc)
	dom, _ := jetstream.NewWithDomain(nc, "hub")
	pfx, _ := jetstream.NewWithAPIPrefix(nc, "$JS.acct.API")
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantPfx string
		wantErr bool
	}{
		{"conn only", Config{Conn: nc}, "$JS.API.", false},
		{"conn and domain", Config{Conn: nc, JetStreamDomain: "hub"}, "$JS.hub.API.", false},
		{"jetstream", Config{JetStream: def}, "$JS.API.", false},
		{"jetstream with domain", Config{JetStream: dom}, "$JS.hub.API.", false},
		{"jetstream with domain, same domain field", Config{JetStream: dom, JetStreamDomain: "hub"}, "$JS.hub.API.", false},
		{"jetstream with prefix", Config{JetStream: pfx, Conn: nc}, "$JS.acct.API.", false},
		{"neither", Config{}, "", true},
		{"conn of another server", Config{JetStream: def, Conn: other}, "", true},
		{"domain field disagrees", Config{JetStream: dom, JetStreamDomain: "leaf"}, "", true},
		{"domain field without jetstream domain", Config{JetStream: def, JetStreamDomain: "hub"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.Verifier = v
			err := c.setDefaults()
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("err %v, want ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Conn != nc || c.JetStream.Conn() != nc {
				t.Error("Conn is not the JetStream context's connection")
			}
			if got := apiPrefix(c.JetStream); got != tc.wantPfx {
				t.Errorf("API prefix %q, want %q", got, tc.wantPfx)
			}
		})
	}
}

// TestConfigJetStreamDomainResume runs a relay whose only JetStream context
// is one of a domain, on a server of that domain, and resumes a stream from
// the store: the batch Direct Get the relay sends by hand must go to the
// domain's API prefix for the replayed events to arrive.
func TestConfigJetStreamDomainResume(t *testing.T) {
	nc := configTestServer(t, "hub")
	js, err := jetstream.NewWithDomain(nc, "hub")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := EnsureStream(ctx, js, StreamOptions{MemoryStorage: true}); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, d := range []string{"one", "two", "three"} {
		ack, err := js.Publish(ctx, "sse.app.alice", []byte(d))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	r, err := New(Config{JetStream: js, Verifier: configTestVerifier(t), RingEvents: -1, Keepalive: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer func() {
		r.Drain()
		srv.Close()
		if err := r.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()

	tok, err := auth.Sign(configTestSecret, auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events?app_id=app", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Last-Event-ID", "0")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got []string
	sc := bufio.NewScanner(resp.Body)
	for len(got) < len(seqs) && sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && !strings.HasPrefix(d, "{") {
			got = append(got, d)
		}
	}
	if strings.Join(got, ",") != "one,two,three" {
		t.Fatalf("replayed %q (scan error %v), want one,two,three", got, sc.Err())
	}
}

// TestConfigInvalid: every option refuses the values that mean nothing
// (negative, below a floor, absurd) with ErrInvalidConfig and the field's
// name, at New, instead of panicking or spinning later (Retry -1ms panicked
// in the retry jitter; Keepalive -1ms wrote keepalives in a tight loop).
func TestConfigInvalid(t *testing.T) {
	nc := configTestServer(t, "")
	v := configTestVerifier(t)
	for _, tc := range []struct {
		field string
		set   func(*Config)
	}{
		{"Stream", func(c *Config) { c.Stream = "a b" }},
		{"Stream", func(c *Config) { c.Stream = "a.b" }},
		{"Stream", func(c *Config) { c.Stream = "a*" }},
		{"Stream", func(c *Config) { c.Stream = "a/b" }},
		{"SubjectPrefix", func(c *Config) { c.SubjectPrefix = "sse.>" }},
		{"SubjectPrefix", func(c *Config) { c.SubjectPrefix = "s e" }},
		{"JetStreamDomain", func(c *Config) { c.JetStreamDomain = "a.b" }},
		{"Keepalive", func(c *Config) { c.Keepalive = -time.Millisecond }},
		{"Keepalive", func(c *Config) { c.Keepalive = time.Millisecond }},
		{"Retry", func(c *Config) { c.Retry = -time.Millisecond }},
		{"Retry", func(c *Config) { c.Retry = 2 * time.Hour }},
		{"WriteTimeout", func(c *Config) { c.WriteTimeout = -time.Second }},
		{"WriteTimeout", func(c *Config) { c.WriteTimeout = time.Microsecond }},
		{"QueueEvents", func(c *Config) { c.QueueEvents = -1 }},
		{"QueueBytes", func(c *Config) { c.QueueBytes = -1 }},
		{"ReplayBatch", func(c *Config) { c.ReplayBatch = -1 }},
		{"ReplayBytes", func(c *Config) { c.ReplayBytes = -1 }},
		{"RingEvents", func(c *Config) { c.RingEvents = -2 }},
		{"RingBytes", func(c *Config) { c.RingBytes = -1 }},
		{"MaxReplays", func(c *Config) { c.MaxReplays = -1 }},
		{"MaxStreams", func(c *Config) { c.MaxStreams = -1 }},
		{"MaxFeeds", func(c *Config) { c.MaxFeeds = -1 }},
		{"MaxTopics", func(c *Config) { c.MaxTopics = -1 }},
		{"PollPage", func(c *Config) { c.PollPage = -1 }},
		{"MaxPublishBytes", func(c *Config) { c.MaxPublishBytes = -1 }},
		{"PublishTimeout", func(c *Config) { c.PublishTimeout = -time.Second }},
		{"PublishTimeout", func(c *Config) { c.PublishTimeout = time.Microsecond }},
		{"PublishWindow", func(c *Config) { c.PublishWindow = -1 }},
		{"RequestTimeout", func(c *Config) { c.RequestTimeout = -time.Second }},
		{"RequestTimeout", func(c *Config) { c.RequestTimeout = time.Microsecond }},
		{"AllowedOrigins", func(c *Config) { c.AllowedOrigins = []string{"example.com"} }},
		{"AllowedOrigins", func(c *Config) { c.AllowedOrigins = []string{"https://example.com/app"} }},
		{"AllowedOrigins", func(c *Config) { c.AllowedOrigins = []string{"https://ok.example", ""} }},
		{"AllowedOrigins", func(c *Config) { c.AllowedOrigins = []string{"ftp://example.com"} }},
		{"TokenCache", func(c *Config) { c.TokenCache = -2 }},
		{"AllowedOrigins", func(c *Config) { c.AllowedOrigins = []string{"null"} }},
		{"BodyTimeout", func(c *Config) { c.BodyTimeout = -time.Second }},
		{"BodyTimeout", func(c *Config) { c.BodyTimeout = time.Microsecond }},
		{"MaxConnections", func(c *Config) { c.MaxConnections = -2 }},
		{"PollPageBytes", func(c *Config) { c.PollPageBytes = -1 }},
		{"MaxStreamsPerUser", func(c *Config) { c.MaxStreamsPerUser = -2 }},
		{"MaxReplaysPerUser", func(c *Config) { c.MaxReplaysPerUser = -1 }},
		{"LimiterKeys", func(c *Config) { c.LimiterKeys = -1 }},
		{"UserStreamRate", func(c *Config) { c.UserStreamRate = -2 }},
		{"UserStreamRate", func(c *Config) { c.UserStreamRate = math.NaN() }},
		{"UserStreamBurst", func(c *Config) { c.UserStreamBurst = -1 }},
		{"IPStreamRate", func(c *Config) { c.IPStreamRate = math.Inf(1) }},
		{"IPStreamBurst", func(c *Config) { c.IPStreamBurst = -1 }},
		{"PublishRate", func(c *Config) { c.PublishRate = -0.5 }},
		{"PublishBurst", func(c *Config) { c.PublishBurst = -1 }},
		{"TrustedProxies", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/33"} }},
		{"TrustedProxies", func(c *Config) { c.TrustedProxies = []string{"proxy.example"} }},
	} {
		c := Config{Conn: nc, Verifier: v}
		tc.set(&c)
		_, err := New(c)
		var ce *ConfigError
		switch {
		case !errors.Is(err, ErrInvalidConfig):
			t.Errorf("%s: New: %v, want ErrInvalidConfig", tc.field, err)
		case !errors.As(err, &ce) || ce.Field != tc.field:
			t.Errorf("%s: New: %v, want a ConfigError for %s", tc.field, err, tc.field)
		case !strings.Contains(err.Error(), tc.field):
			t.Errorf("%s: error %q does not name the field", tc.field, err)
		}
		if verr := c.Validate(); !errors.Is(verr, ErrInvalidConfig) {
			t.Errorf("%s: Validate: %v, want ErrInvalidConfig", tc.field, verr)
		}
	}

	// The edges stay valid: off switches, floors, the documented specials.
	for name, set := range map[string]func(*Config){
		"zero values":     func(*Config) {},
		"ring off":        func(c *Config) { c.RingEvents = -1 },
		"token cache off": func(c *Config) { c.TokenCache = -1 },
		"limits off": func(c *Config) {
			c.MaxConnections, c.MaxStreamsPerUser, c.UserStreamRate, c.IPStreamRate, c.PublishRate = -1, -1, -1, -1, -1
		},
		"trusted proxies": func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32"} },
		"floors": func(c *Config) {
			c.Keepalive, c.WriteTimeout, c.PublishTimeout, c.RequestTimeout = MinTimeout, MinTimeout, MinTimeout, MinTimeout
		},
		"retry ceiling":     func(c *Config) { c.Retry = MaxRetry },
		"retry tiny":        func(c *Config) { c.Retry = time.Millisecond },
		"origins":           func(c *Config) { c.AllowedOrigins = []string{"*", "https://a.example", "http://127.0.0.1:8080"} },
		"one of everything": func(c *Config) { c.QueueEvents, c.QueueBytes, c.ReplayBatch, c.MaxReplays, c.PollPage = 1, 1, 1, 1, 1 },
		"domain":            func(c *Config) { c.JetStreamDomain = "hub" },
		"prefix of tokens":  func(c *Config) { c.SubjectPrefix = "acme.sse" },
	} {
		c := Config{Conn: nc, Verifier: v}
		set(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", name, err)
		}
		if _, err := New(c); err != nil {
			t.Errorf("%s: New: %v", name, err)
		}
	}
}

func TestStreamOptionsInvalid(t *testing.T) {
	for _, tc := range []struct {
		field string
		set   func(*StreamOptions)
	}{
		{"Name", func(o *StreamOptions) { o.Name = "a.b" }},
		{"SubjectPrefix", func(o *StreamOptions) { o.SubjectPrefix = "a.*" }},
		{"MaxAge", func(o *StreamOptions) { o.MaxAge = -time.Hour }},
		{"MaxBytes", func(o *StreamOptions) { o.MaxBytes = -2 }},
		{"MaxMsgs", func(o *StreamOptions) { o.MaxMsgs = -2 }},
		{"Duplicates", func(o *StreamOptions) { o.Duplicates = -time.Second }},
		{"Replicas", func(o *StreamOptions) { o.Replicas = -1 }},
		{"Replicas", func(o *StreamOptions) { o.Replicas = 6 }},
	} {
		var o StreamOptions
		tc.set(&o)
		var ce *ConfigError
		if err := o.Validate(); !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate: %v, want a ConfigError for %s", tc.field, err, tc.field)
		}
	}
	for _, o := range []StreamOptions{{}, {MaxBytes: -1, MaxMsgs: -1, Replicas: 5}, {MaxBytes: 1, MaxMsgs: 1, Duplicates: time.Second}} {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	// EnsureStream checks too, before it asks the server anything.
	nc := configTestServer(t, "")
	js, _ := jetstream.New(nc)
	if _, err := EnsureStream(context.Background(), js, StreamOptions{Replicas: 9}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("EnsureStream with 9 replicas: %v, want ErrInvalidConfig", err)
	}
}
