package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sserelay/sserelay/relay/auth"
)

// ---- tokens

// token mints a token for sub, valid for an hour, edited by mods.
func token(t testing.TB, sub string, mods ...func(*auth.Claims)) string {
	t.Helper()
	c := auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}
	for _, m := range mods {
		m(&c)
	}
	s, err := auth.Sign(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Claim edits for token.
func claimApps(apps ...string) func(*auth.Claims) {
	if apps == nil {
		apps = []string{} // an empty list grants no app; nil would grant any
	}
	return func(c *auth.Claims) { c.Apps = apps }
}
func claimFeeds(feeds ...string) func(*auth.Claims) {
	return func(c *auth.Claims) { c.Feeds = feeds }
}
func claimPublish(apps ...string) func(*auth.Claims) {
	return func(c *auth.Claims) { c.Publish = apps }
}
func claimExpires(at time.Time) func(*auth.Claims) {
	return func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(at) }
}

// unsignedToken hand-crafts an alg none token for sub.
func unsignedToken(sub string) string {
	enc := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
}

// ---- publishing through NATS

// publish stores an event through JetStream and returns its sequence.
// hdrs are name, value pairs.
func (e *testEnv) publish(subject, data string, hdrs ...string) uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, msg(subject, data, hdrs...))
	if err != nil {
		e.t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

// msg builds a message; hdrs are name, value pairs.
func msg(subject, data string, hdrs ...string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	for i := 0; i+1 < len(hdrs); i += 2 {
		m.Header.Set(hdrs[i], hdrs[i+1])
	}
	return m
}

// asyncJS returns a JetStream context on nc for async publishing.
func asyncJS(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(512), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publishN publishes n messages made by gen with async JetStream publish,
// a window at a time, and returns their stream sequences in order.
func publishN(t testing.TB, js jetstream.JetStream, n int, gen func(i int) *nats.Msg) []uint64 {
	t.Helper()
	const window = 500
	seqs := make([]uint64, 0, n)
	futs := make([]jetstream.PubAckFuture, 0, window)
	for i := 0; i < n; {
		futs = futs[:0]
		for ; i < n && len(futs) < window; i++ {
			f, err := js.PublishMsgAsync(gen(i))
			if err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case ack := <-f.Ok():
				seqs = append(seqs, ack.Sequence)
			case err := <-f.Err():
				t.Fatalf("publish %s: %v", f.Msg().Subject, err)
			case <-time.After(60 * time.Second):
				t.Fatalf("publish %s: no ack", f.Msg().Subject)
			}
		}
	}
	return seqs
}

// publishFast publishes n messages made by gen with core NATS publishes
// (no ack per message: several times faster than JetStream publishes under
// -race) and returns their stream sequences. Nothing else may publish
// meanwhile: the stream stores one connection's messages in order, so the
// i-th message gets the sequence after the i-1-th; the function checks the
// final sequence and a sample of subjects.
func (e *testEnv) publishFast(t testing.TB, n int, gen func(i int) *nats.Msg) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := e.js.Stream(ctx, "SSE")
	if err != nil {
		t.Fatal(err)
	}
	base := stream.CachedInfo().State.LastSeq
	subjects := map[uint64]string{}
	for i := range n {
		m := gen(i)
		if i%997 == 0 || i == n-1 {
			subjects[base+1+uint64(i)] = m.Subject
		}
		if err := e.pub.PublishMsg(m); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if i%2000 == 1999 { // far below the stream's ingest queue limit
			if err := e.pub.FlushWithContext(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := e.pub.FlushWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	want := base + uint64(n)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		if last := info.State.LastSeq; last == want {
			break
		} else if last > want || ctx.Err() != nil {
			t.Fatalf("stream last sequence %d, want %d", last, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for seq, subj := range subjects {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil || m.Subject != subj {
			t.Fatalf("sequence %d: %v %v, want subject %s", seq, m, err, subj)
		}
	}
	seqs := make([]uint64, n)
	for i := range seqs {
		seqs[i] = base + 1 + uint64(i)
	}
	return seqs
}

// publishRetry publishes with a de-duplication id until JetStream acks it,
// so that a retry after a lost ack does not store the event twice.
func (e *testEnv) publishRetry(subject, data string) uint64 {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ack, err := e.js.PublishMsg(ctx, msg(subject, data, HeaderMsgID, subject+"/"+data))
		cancel()
		if err == nil {
			return ack.Sequence
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("publish %s: %v", subject, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rawHPub publishes through a hand-written NATS protocol connection, so
// that the header block is sent exactly as given (nats.go replaces CR and LF
// in header values with spaces). It returns the stream sequence.
func (e *testEnv) rawHPub(subject, hdrBlock, payload string) uint64 {
	e.t.Helper()
	u, err := url.Parse(e.ns.ClientURL())
	if err != nil {
		e.t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		e.t.Fatalf("raw NATS: %q %v", line, err)
	}
	hdr := "NATS/1.0\r\n" + hdrBlock + "\r\n"
	fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\n"+
		"SUB _EP.ack 1\r\nHPUB %s _EP.ack %d %d\r\n%s%s\r\nPING\r\n", subject, len(hdr), len(hdr)+len(payload), hdr, payload)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			e.t.Fatalf("raw NATS: %v", err)
		}
		switch {
		case strings.HasPrefix(line, "PING"):
			_, _ = io.WriteString(conn, "PONG\r\n")
		case strings.HasPrefix(line, "-ERR"):
			e.t.Fatalf("raw NATS: %s", line)
		case strings.HasPrefix(line, "MSG "):
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[len(f)-1])
			body := make([]byte, n+2)
			if _, err := io.ReadFull(br, body); err != nil {
				e.t.Fatal(err)
			}
			var ack struct {
				Seq   uint64 `json:"seq"`
				Error any    `json:"error"`
			}
			if err := json.Unmarshal(body[:n], &ack); err != nil || ack.Seq == 0 {
				e.t.Fatalf("raw NATS ack %q: %v", body[:n], err)
			}
			return ack.Seq
		}
	}
}

// ---- publishing over HTTP

// post sends POST /v1/publish with body; tok "" sends no Authorization.
// hdrs are extra name, value pairs.
func (e *testEnv) post(t testing.TB, tok, body string, hdrs ...string) httpResult {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdrs); i += 2 {
		h.Set(hdrs[i], hdrs[i+1])
	}
	return do(t, http.MethodPost, e.url+"/v1/publish", h, body)
}

// wantSeq checks a successful publish and returns its sequence.
func wantSeq(t testing.TB, r httpResult) uint64 {
	t.Helper()
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("publish: %d %q %s", r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	var v struct {
		Seq uint64 `json:"seq"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil || v.Seq == 0 {
		t.Fatalf("publish body %s: %v", r.Body, err)
	}
	if got := strings.TrimSuffix(string(r.Body), "\n"); got != `{"seq":`+strconv.FormatUint(v.Seq, 10)+`}` {
		t.Fatalf("publish body %q, want exactly {\"seq\":N}", got)
	}
	return v.Seq
}

// stored reads a stored message back from the stream.
func (e *testEnv) stored(t testing.TB, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, "SSE")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		t.Fatalf("get %d: %v", seq, err)
	}
	return m
}
