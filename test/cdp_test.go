package e2e_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser is a headless Chromium driven over the DevTools protocol on
// --remote-debugging-pipe (file descriptors 3 and 4, NUL-separated JSON):
// no port, no WebSocket, nothing another process on the machine can reach.
type browser struct {
	t  *testing.T
	w  io.WriteCloser
	mu sync.Mutex
	id int
	// pending calls by id; closed (nil map) once the pipe is gone
	pending map[int]chan cdpReply
	gone    error
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startBrowser starts headless Chromium with extra flags; it is killed at cleanup.
func startBrowser(t *testing.T, extra ...string) *browser {
	t.Helper()
	chromium := tool(t, "SSERELAY_CHROMIUM", "/usr/bin/chromium", "chromium", "chromium-browser")
	toChrome, ours, err := os.Pipe() // chromium reads fd 3
	if err != nil {
		t.Fatal(err)
	}
	theirs, fromChrome, err := os.Pipe() // chromium writes fd 4
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
		"--log-level=3", "--remote-debugging-pipe", "--user-data-dir=" + t.TempDir(), "--window-size=1280,900"}, extra...)
	cmd := exec.Command(chromium, append(args, "about:blank")...)
	cmd.Env = cleanEnv("HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home)
	cmd.ExtraFiles = []*os.File{toChrome, fromChrome}
	startProc(t, "chromium", cmd)
	toChrome.Close()
	fromChrome.Close()
	b := &browser{t: t, w: ours, pending: map[int]chan cdpReply{}}
	done := make(chan struct{})
	go b.read(theirs, done)
	t.Cleanup(func() {
		ours.Close()
		theirs.Close()
		<-done
	})
	return b
}

// read dispatches replies until the pipe closes; events are not used.
func (b *browser) read(r io.Reader, done chan struct{}) {
	defer close(done)
	br := bufio.NewReader(r)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			b.gone = fmt.Errorf("devtools pipe: %w", err)
			for _, ch := range b.pending {
				close(ch)
			}
			b.pending = nil
			b.mu.Unlock()
			return
		}
		var m struct {
			ID int `json:"id"`
			cdpReply
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.pending[m.ID]
		delete(b.pending, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m.cdpReply
		}
	}
}

// call sends one DevTools command (to a page when session is set) and
// returns its result.
func (b *browser) call(session, method string, params any) (json.RawMessage, error) {
	if params == nil {
		params = map[string]any{}
	}
	b.mu.Lock()
	if b.pending == nil {
		b.mu.Unlock()
		return nil, b.gone
	}
	b.id++
	id := b.id
	ch := make(chan cdpReply, 1)
	b.pending[id] = ch
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	buf, _ := json.Marshal(msg)
	_, err := b.w.Write(append(buf, 0))
	b.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, b.gone
		}
		if r.Error != nil {
			return nil, errors.New(method + ": " + r.Error.Message)
		}
		return r.Result, nil
	case <-time.After(waitLong):
		return nil, fmt.Errorf("%s: no reply within %s", method, waitLong)
	}
}

func (b *browser) must(session, method string, params any) json.RawMessage {
	b.t.Helper()
	r, err := b.call(session, method, params)
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

// page is one tab.
type page struct {
	b       *browser
	target  string
	session string
}

// open opens url in a new tab.
func (b *browser) open(url string) *page {
	b.t.Helper()
	var tr struct{ TargetID string }
	_ = json.Unmarshal(b.must("", "Target.createTarget", map[string]any{"url": "about:blank"}), &tr)
	var ar struct{ SessionID string }
	_ = json.Unmarshal(b.must("", "Target.attachToTarget", map[string]any{"targetId": tr.TargetID, "flatten": true}), &ar)
	p := &page{b: b, target: tr.TargetID, session: ar.SessionID}
	b.must(p.session, "Page.enable", nil)
	// Chromium drops every connection when the machine's network
	// interfaces change (other tests here make network namespaces), and a
	// navigation caught by that shows an error page: navigate again.
	for try := 1; ; try++ {
		b.must(p.session, "Page.navigate", map[string]any{"url": url})
		p.waitTrue("the page to load", `location.href !== "about:blank" && document.readyState === "complete"`)
		var href string
		p.must("location.href", &href)
		if !strings.HasPrefix(href, "chrome-error:") {
			return p
		}
		if try == 3 {
			b.t.Fatalf("%s: error page %d times", url, try)
		}
	}
}

// eval evaluates a JavaScript expression (promises are awaited) and
// decodes its JSON value into out (if not nil).
func (p *page) eval(expr string, out any) error {
	raw, err := p.b.call(p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	if e := r.ExceptionDetails; e != nil {
		return fmt.Errorf("%s: %s %s", strings.SplitN(expr, "\n", 2)[0], e.Text, e.Exception.Description)
	}
	if out != nil && len(r.Result.Value) > 0 {
		return json.Unmarshal(r.Result.Value, out)
	}
	return nil
}

func (p *page) must(expr string, out any) {
	p.b.t.Helper()
	if err := p.eval(expr, out); err != nil {
		p.b.t.Fatal(err)
	}
}

// waitTrue polls expr until it evaluates to true (hang guard waitLong).
func (p *page) waitTrue(what, expr string) {
	p.b.t.Helper()
	eventually(p.b.t, waitLong, what, func() bool {
		var ok bool
		return p.eval(expr, &ok) == nil && ok
	})
}

// screenshot returns a PNG of the page.
func (p *page) screenshot() []byte {
	p.b.t.Helper()
	var r struct{ Data string }
	_ = json.Unmarshal(p.b.must(p.session, "Page.captureScreenshot", map[string]any{"format": "png"}), &r)
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		p.b.t.Fatal(err)
	}
	return png
}
