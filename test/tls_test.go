package e2e_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sserelay/sserelay/relay/sse/ssetest"
	"github.com/sserelay/sserelay/test/testkit"
)

// insecureClient skips certificate checks: only for waiting on /readyz of
// a relay whose throwaway certificate a test made.
var insecureClient = &http.Client{Timeout: waitShort, Transport: &http.Transport{
	Proxy: nil, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true,
}}

// servedSerial returns the serial of the certificate the server at addr presents.
func servedSerial(addr string) (string, error) {
	d := &net.Dialer{Timeout: waitShort}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// TestTLSHTTP2AndReload: serve --tls-cert/--tls-key speaks HTTP/2 (also
// for event streams), and a renewed certificate on disk is served without a
// restart.
func TestTLSHTTP2AndReload(t *testing.T) {
	t.Parallel()
	const secret = "tls-secret"
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := testkit.WriteSelfSigned(t, certFile, keyFile, "first")
	r := startRelay(t, relayOpts{Secret: secret, TLSCert: certFile, TLSKey: keyFile})
	pool := x509.NewCertPool()
	pool.AddCert(first)
	client := &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}

	resp, err := client.Get(r.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("GET /healthz over TLS: %s, want HTTP/2.0", resp.Proto)
	}
	tok := token(t, secret, "alice", "--app", "app", "--publish", "app")
	req, _ := http.NewRequest(http.MethodGet, r.URL+"/v1/events?app_id=app", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	st, err := ssetest.Open(client, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if st.Response.Proto != "HTTP/2.0" {
		t.Errorf("event stream over TLS: %s, want HTTP/2.0", st.Response.Proto)
	}
	b, err := st.Next(waitShort)
	if err != nil || b.Event.Type != "sserelay.connected" {
		t.Fatalf("first event over HTTP/2: %+v %v", b, err)
	}
	var hello map[string]string
	if json.Unmarshal([]byte(b.Event.Data), &hello) != nil || hello["user"] != "alice" {
		t.Errorf("sserelay.connected data %q", b.Event.Data)
	}

	second := testkit.WriteSelfSigned(t, certFile, keyFile, "second")
	// Make sure the modification time moves even on a coarse clock.
	later := time.Now().Add(2 * time.Second)
	_ = os.Chtimes(certFile, later, later)
	_ = os.Chtimes(keyFile, later, later)
	eventually(t, waitLong, "the renewed certificate to be served", func() bool {
		s, err := servedSerial(r.Addr)
		return err == nil && s == second.SerialNumber.String()
	})
	r.waitJSON(t, "tls certificate reloaded", nil)
	// The stream opened with the first certificate goes on; a publish over
	// a new connection (which must trust the second certificate) reaches it.
	pool.AddCert(second)
	client2 := &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	body := strings.NewReader(`{"app_id":"app","feed":"alice","data":"after the renewal"}`)
	preq, _ := http.NewRequest(http.MethodPost, r.URL+"/v1/publish", body)
	preq.Header.Set("Authorization", "Bearer "+tok)
	preq.Header.Set("Content-Type", "application/json")
	presp, err := client2.Do(preq)
	if err != nil {
		t.Fatal(err)
	}
	presp.Body.Close()
	if presp.StatusCode != 200 || presp.TLS == nil || presp.TLS.PeerCertificates[0].SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("publish after the renewal: %d", presp.StatusCode)
	}
	b, err = st.Next(waitShort)
	if err != nil || b.Event.Data != "after the renewal" {
		t.Fatalf("the stream opened before the renewal: %+v %v", b, err)
	}
}

// TestBrowserTenTabsHTTP2: ten tabs of one origin, each with its own
// EventSource, all open and live at once over HTTPS. Over HTTP/1.1 a
// browser allows 6 connections per origin and the 7th stream would hang;
// over HTTP/2 they share one connection.
func TestBrowserTenTabsHTTP2(t *testing.T) {
	t.Parallel()
	const secret, tabs = "tabs-secret", 10
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	cert := testkit.WriteSelfSigned(t, certFile, keyFile, "tabs")
	// A short retry hint: Chromium sometimes drops all its connections at
	// once (seen when other tests on the machine change network
	// interfaces); the EventSources then come back quickly.
	r := startRelay(t, relayOpts{Secret: secret, TLSCert: certFile, TLSKey: keyFile, Args: []string{"--retry", "200ms"}})
	tok := token(t, secret, "alice", "--app", "app", "--publish", "app")
	// Trust this one certificate (by its key's hash) rather than ignore
	// certificate errors: a connection with an ignored error is not shared
	// as freely, and the tabs' streams then come and go.
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	b := startBrowser(t, "--ignore-certificate-errors-spki-list="+base64.StdEncoding.EncodeToString(spki[:]))
	var pages []*page
	for i := 0; i < tabs; i++ {
		p := b.open(r.URL + "/healthz") // any document of the relay's origin
		p.must(fmt.Sprintf(`window.got = []; window.connected = false;
window.es = new EventSource("/v1/events?app_id=app&access_token=%s");
es.addEventListener("sserelay.connected", () => { window.connected = true; });
es.onmessage = (e) => got.push(e.data); true`, tok), nil)
		pages = append(pages, p)
	}
	eventually(t, waitLong, "all ten EventSources open at once", func() bool {
		for _, p := range pages {
			var open bool
			if p.eval(`window.connected && es.readyState === 1`, &open) != nil || !open {
				return false
			}
		}
		return true
	})
	for i, p := range pages {
		var proto string
		p.must(`performance.getEntriesByType("navigation")[0].nextHopProtocol`, &proto)
		if proto != "h2" {
			t.Errorf("tab %d loaded over %q, want h2", i+1, proto)
		}
	}
	body := strings.NewReader(`{"app_id":"app","feed":"alice","data":"to every tab"}`)
	req, _ := http.NewRequest(http.MethodPost, r.URL+"/v1/publish", body)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := insecureClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for i, p := range pages {
		p.waitTrue(fmt.Sprintf("tab %d to get the event", i+1), `got.length === 1 && got[0] === "to every tab"`)
	}
	if n := len(r.jsonLines("stream opened")); n < tabs {
		t.Errorf("the relay opened %d streams, want at least %d", n, tabs)
	}
}
