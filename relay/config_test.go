package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
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
	so.setDefaults()
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
