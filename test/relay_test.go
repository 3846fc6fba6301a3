package e2e_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sserelay/sserelay/test/testkit"
)

// relayOpts configure one `sserelay serve` process.
type relayOpts struct {
	Secret     string   // --jwt-secret (default "e2e-secret")
	Listen     string   // --listen (default 127.0.0.1:0: the address is read from the log)
	NATSListen string   // --nats-listen (default 127.0.0.1:0), embedded NATS only
	NATSURL    string   // --nats-url: an outside NATS server instead of the embedded one
	DataDir    string   // --data-dir (default: a new temp dir)
	TLSCert    string   // --tls-cert (with TLSKey): HTTPS, and URL starts with https://
	TLSKey     string   // --tls-key
	Args       []string // more flags
}

// relayProc is a running relay.
type relayProc struct {
	*proc
	opts relayOpts
	Addr string // HTTP host:port
	URL  string // http://host:port
	NATS string // NATS client URL: the embedded server's, or opts.NATSURL
}

// startRelay runs the built binary with --log-format json --log-level debug
// and waits until /readyz answers 200.
func startRelay(t *testing.T, o relayOpts) *relayProc {
	t.Helper()
	if o.Secret == "" {
		o.Secret = "e2e-secret"
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	args := []string{"serve", "--jwt-secret", o.Secret, "--listen", o.Listen, "--data-dir", o.DataDir,
		"--log-format", "json", "--log-level", "debug", "--no-demo"}
	if o.NATSURL != "" {
		args = append(args, "--nats-url", o.NATSURL)
	} else {
		if o.NATSListen == "" {
			o.NATSListen = "127.0.0.1:0"
		}
		args = append(args, "--nats-listen", o.NATSListen)
	}
	if o.TLSCert != "" {
		args = append(args, "--tls-cert", o.TLSCert, "--tls-key", o.TLSKey)
	}
	args = append(args, o.Args...)
	cmd := exec.Command(relayBin, args...)
	cmd.Env = cleanEnv("GORACE=halt_on_error=0")
	p := startProc(t, "sserelay", cmd)
	r := &relayProc{proc: p, opts: o, NATS: o.NATSURL}
	r.Addr = p.waitJSON(t, "sserelay listening", nil)["addr"].(string)
	r.URL = "http://" + r.Addr
	readyClient := httpClient
	if o.TLSCert != "" {
		r.URL = "https://" + r.Addr
		readyClient = insecureClient
	}
	if o.NATSURL == "" {
		r.NATS, _ = p.waitJSON(t, "embedded NATS started", nil)["client_url"].(string)
	}
	eventually(t, waitLong, "relay /readyz 200", func() bool {
		if p.exited() {
			t.Fatalf("relay exited: %v", p.err)
		}
		resp, err := readyClient.Get(r.URL + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	return r
}

// lastSeqAtStart is the stream's last sequence when this relay started.
// A new stream may start at any sequence (the relay may give each new
// stream an epoch-based first sequence), so tests count from here.
func (r *relayProc) lastSeqAtStart(t *testing.T) uint64 {
	t.Helper()
	return num(r.waitJSON(t, "stream ready", nil)["last_seq"])
}

// freshStream checks that the relay created an empty stream and returns its
// base: the last sequence (first_seq - 1).
func (r *relayProc) freshStream(t *testing.T) uint64 {
	t.Helper()
	m := r.waitJSON(t, "stream ready", nil)
	first, last := num(m["first_seq"]), num(m["last_seq"])
	if first > 0 && first != last+1 {
		t.Fatalf("new data dir: stream first_seq %d, last_seq %d: want an empty stream", first, last)
	}
	return last
}

// startNATSServer runs nats-server with JetStream as a separate process and
// returns its client URL.
func startNATSServer(t *testing.T) string {
	t.Helper()
	bin := natsServer(t)
	port := testkit.FreePort(t)
	p := startProc(t, "nats-server", exec.Command(bin, "-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", strconv.Itoa(port)))
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	eventually(t, waitLong, "nats-server to accept connections", func() bool {
		if p.exited() {
			t.Fatalf("nats-server exited: %v", p.err)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return "nats://" + addr
}

// token mints a token with `sserelay token`.
func token(t *testing.T, secret, sub string, flags ...string) string {
	t.Helper()
	args := append([]string{"token", "--jwt-secret", secret, "--sub", sub}, flags...)
	tok := runCmd(t, "", nil, relayBin, args...)
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("sserelay token printed %q, want a JWT", tok)
	}
	return tok
}

// publishCLI publishes with `sserelay publish` and returns the sequence it
// prints. Without a DATA argument in args, stdin is the data.
func publishCLI(t *testing.T, natsURL, stdin string, args ...string) uint64 {
	t.Helper()
	all := append([]string{"publish", "--nats-url", natsURL}, args...)
	return mustUint(t, runCmd(t, stdin, nil, relayBin, all...))
}

// postPublish sends POST to the publish URL (base + "/v1/publish") and
// returns the response (body read) and its body.
func postPublish(t *testing.T, publishURL, tok string, body any, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, publishURL, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/publish: %v", err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp, rb
}

// publishHTTP publishes over HTTP and returns the sequence; anything but
// 200 {"seq":N} fails the test.
func publishHTTP(t *testing.T, base, tok string, body map[string]any, hdr map[string]string) uint64 {
	t.Helper()
	resp, rb := postPublish(t, base+"/v1/publish", tok, body, hdr)
	var out struct {
		Seq *uint64 `json:"seq"`
	}
	if st := resp.StatusCode; st != http.StatusOK || json.Unmarshal(rb, &out) != nil || out.Seq == nil {
		t.Fatalf("POST /v1/publish %v: %d %s", body, st, rb)
	}
	return *out.Seq
}
