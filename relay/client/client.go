// Package client is the Go client of SSE Relay: it reads the event stream
// of GET /v1/events and keeps it going.
//
// A [Client] resumes after every disconnect from the last event id it
// received, so that every event of its feeds arrives exactly once and in
// order. It waits as the relay's retry hint says after a stream ends, backs
// off exponentially with full jitter when connecting fails, renews its token
// before it expires and when the relay refuses it, reconnects a stream that
// stayed silent longer than the watchdog allows (a dead proxy or NAT entry),
// and keeps one connection id across reconnects so that the relay leaves out
// the events this client published itself (send [Client.ConnectionID] as
// the X-Connection-Id header of publishes).
//
// Events are read with [Client.Events] (an iterator) or [Client.Run] (a
// callback). Both run in the caller's goroutine and stop when the context
// ends or the relay says the stream will never work (403, 400, 204).
package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	mrand "math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sserelay/sserelay/relay/connid"
	"github.com/sserelay/sserelay/relay/sse"
)

// Events the relay itself sends; publishers cannot use the prefix.
const (
	EventConnected    = "sserelay.connected"
	EventReset        = "sserelay.reset"
	EventTokenExpired = "sserelay.token-expired"
	reservedPrefix    = "sserelay."
)

// Reasons of a [Reset].
const (
	// ResetHistoryGone: events after the client's id were trimmed from the
	// relay's store before the client came back.
	ResetHistoryGone = "history-gone"
	// ResetUnknownID: the client's id is not from this stream (the store
	// was replaced, or the id belongs to another installation).
	ResetUnknownID = "unknown-id"
)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	// URL is the relay's base URL, such as "https://relay.example.com";
	// the client requests URL + "/v1/events". Required.
	URL string
	// AppID is the app_id of the stream. Required.
	AppID string
	// Feeds are the feeds to read (default: the token's own feed). List
	// the token's subject too to keep it.
	Feeds []string
	// Topics narrow the stream to these topics (default: all).
	Topics []string
	// Token supplies the bearer token. Required.
	Token TokenSource
	// LastEventID is the position to resume from: the id of the last event
	// the application processed (empty: start at the live point).
	LastEventID string
	// ConnectionID is the id the relay uses to leave out this client's own
	// events: 8 to 64 characters of [A-Za-z0-9_-] (default: 128 random bits).
	ConnectionID string
	// HTTPClient sends the requests (default: a client without timeout; a
	// Timeout would end every stream after it).
	HTTPClient *http.Client
	// MinBackoff and MaxBackoff bound the wait after consecutive failures:
	// the n-th failure waits a random time up to min(MaxBackoff,
	// MinBackoff·2ⁿ⁻¹) (defaults 1 s and 30 s). A stream that ended after it
	// opened is reconnected after the relay's retry hint instead.
	MinBackoff, MaxBackoff time.Duration
	// Watchdog reconnects a stream on which nothing arrived for this long,
	// keepalives included (default 45 s, three times the relay's default
	// keepalive; -1 turns it off). Set it above the relay's --keepalive.
	Watchdog time.Duration
	// RenewBefore is how long before the token's exp claim the client gets
	// a new token and reconnects with it (default 1 min, at most a quarter
	// of the token's remaining lifetime; -1: only when the relay says the
	// token expired).
	RenewBefore time.Duration
	// MaxEventBytes bounds one block of the stream (default 1 MiB); a larger one ends the
	// stream with an error, and the client reconnects.
	MaxEventBytes int
	// OnConnect is called for each stream that opened, with the relay's
	// sserelay.connected data.
	OnConnect func(Connected)
	// OnError is called with each error the client recovers from (a failed
	// connection, a lost stream) and the wait before the next attempt.
	OnError func(err error, wait time.Duration)
}

// An Event is one event of the stream.
type Event struct {
	// ID is the last event id after this event: its stream sequence.
	ID string
	// Name is the event name ("" for unnamed events).
	Name string
	// Data is the event data, its lines joined by LF.
	Data string
	// Reset is set on a sserelay.reset event: the client missed events it
	// cannot get any more and must resync its state (reload it, say); the
	// events after the reset follow.
	Reset *Reset
}

// A Reset says why the client must resync.
type Reset struct {
	Reason string `json:"reason"` // ResetHistoryGone or ResetUnknownID
}

// Connected is the data of the sserelay.connected event that opens a stream.
type Connected struct {
	ConnectionID string `json:"connection_id"`
	User         string `json:"user"`
	AppID        string `json:"app_id"`
}

// Errors that end Run for good (wrapped in a *StatusError).
var (
	ErrForbidden  = errors.New("forbidden")   // 403: the token does not grant this stream
	ErrBadRequest = errors.New("bad request") // 400: the request is malformed
	ErrStopped    = errors.New("stopped")     // 204: the relay asked the client to stop
)

// ErrTokenExpired is reported to OnError when the relay ended the stream
// because the token expired; the client gets a new one and resumes.
var ErrTokenExpired = errors.New("token expired")

// A StatusError is a response the client does not retry.
type StatusError struct {
	StatusCode int
	Message    string // the relay's {"error": ...} text
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("relay: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("relay: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Unwrap returns ErrForbidden, ErrBadRequest or ErrStopped by status.
func (e *StatusError) Unwrap() error {
	switch e.StatusCode {
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusBadRequest:
		return ErrBadRequest
	case http.StatusNoContent:
		return ErrStopped
	}
	return nil
}

// ErrInvalidConfig is wrapped by configuration errors.
var ErrInvalidConfig = errors.New("invalid client config")

// A Client reads one event stream. Its methods may be called from any
// goroutine, but only one Run (or Events loop) at a time.
type Client struct {
	cfg    Config
	url    string // the stream URL without the position
	tokens tokenHolder

	running atomic.Bool
	mu      sync.Mutex
	lastID  string
	retry   time.Duration // the relay's retry hint; 0: none yet
}

// New checks cfg and returns a Client. It connects nothing yet.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" || cfg.AppID == "" || cfg.Token == nil {
		return nil, fmt.Errorf("%w: URL, AppID and Token are required", ErrInvalidConfig)
	}
	base, err := url.Parse(strings.TrimSuffix(cfg.URL, "/") + "/v1/events")
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return nil, fmt.Errorf("%w: URL %q is not an http(s) URL", ErrInvalidConfig, cfg.URL)
	}
	if cfg.ConnectionID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
		cfg.ConnectionID = base64.RawURLEncoding.EncodeToString(b[:])
	} else if !connid.Valid(cfg.ConnectionID) {
		return nil, fmt.Errorf("%w: connection id must be 8 to 64 characters of [A-Za-z0-9_-]", ErrInvalidConfig)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	setDefault(&cfg.MinBackoff, time.Second)
	setDefault(&cfg.MaxBackoff, 30*time.Second)
	setDefault(&cfg.Watchdog, 45*time.Second)
	setDefault(&cfg.RenewBefore, time.Minute)
	setDefault(&cfg.MaxEventBytes, 1<<20)
	if cfg.MinBackoff < 0 || cfg.MaxBackoff < cfg.MinBackoff || cfg.MaxEventBytes < 0 {
		return nil, fmt.Errorf("%w: backoff bounds or event size", ErrInvalidConfig)
	}
	q := base.Query()
	q.Set("app_id", cfg.AppID)
	for _, f := range cfg.Feeds {
		q.Add("feed", f)
	}
	for _, t := range cfg.Topics {
		q.Add("topic", t)
	}
	q.Set("connection_id", cfg.ConnectionID)
	base.RawQuery = q.Encode()
	return &Client{
		cfg:    cfg,
		url:    base.String(),
		tokens: tokenHolder{src: cfg.Token, before: cfg.RenewBefore},
		lastID: cfg.LastEventID,
	}, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// ConnectionID returns the client's connection id, the same on every
// reconnect. Publish with it as X-Connection-Id, and the user as
// X-Connection-User, to skip this client.
func (c *Client) ConnectionID() string { return c.cfg.ConnectionID }

// LastEventID returns the position the client resumes from: the id of the
// last event it received (or of the last reset or connected event).
func (c *Client) LastEventID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastID
}

// errStopIteration ends Run when an Events loop breaks.
var errStopIteration = errors.New("iteration stopped")

// Events returns the stream as an iterator. Each element is an event and a
// nil error, except the last one when the client stops: the zero Event and
// why (ctx's error, or a *StatusError). Breaking out of the loop closes the
// stream.
func (c *Client) Events(ctx context.Context) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		err := c.Run(ctx, func(ev Event) error {
			if !yield(ev, nil) {
				return errStopIteration
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopIteration) {
			yield(Event{}, err)
		}
	}
}

// Run reads the stream and calls fn for each event, in order, until ctx
// ends (it returns ctx's error), the relay refuses the stream for good (a
// *StatusError: 403, 400 or 204) or fn returns an error (which it returns).
// While fn runs, the client reads nothing: the relay queues for it, and the
// watchdog does not count the time.
func (c *Client) Run(ctx context.Context, fn func(Event) error) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("client: Run is already running")
	}
	defer c.running.Store(false)
	failures := 0
	for {
		a := c.attempt(ctx, fn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if a.fatal != nil {
			return a.fatal
		}
		var wait time.Duration
		switch {
		case a.now:
			failures = 0
		case a.opened:
			failures = 0
			wait = c.retryHint()
		default:
			failures++
			wait = c.backoff(failures)
			if a.hinted {
				wait = max(wait, c.retryHint()) // shed or drained: the relay asked for a pause
			}
		}
		if a.err != nil && c.cfg.OnError != nil {
			c.cfg.OnError(a.err, wait)
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

func (c *Client) retryHint() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retry > 0 {
		return c.retry
	}
	return c.cfg.MinBackoff
}

// backoff returns the wait after the n-th consecutive failure: full jitter,
// a random time up to min(MaxBackoff, MinBackoff·2ⁿ⁻¹), so that the clients
// of a relay that went down do not all come back together.
func (c *Client) backoff(n int) time.Duration {
	limit := c.cfg.MaxBackoff
	if n < 32 {
		if d := c.cfg.MinBackoff << (n - 1); d > 0 && d < limit {
			limit = d
		}
	}
	if limit <= 0 {
		return 0
	}
	return time.Duration(mrand.Int64N(int64(limit) + 1))
}

// outcome is how one connection attempt ended.
type outcome struct {
	opened bool  // sserelay.connected arrived: the stream worked
	now    bool  // reconnect at once (new token)
	hinted bool  // the response carried a retry hint
	err    error // what went wrong, for OnError
	fatal  error // stop for good
}

// attempt makes one request and reads its stream until it ends.
func (c *Client) attempt(ctx context.Context, fn func(Event) error) (o outcome) {
	tok, fresh, err := c.tokens.get(ctx)
	if err != nil {
		return outcome{err: fmt.Errorf("token: %w", err)}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var silent, renew atomic.Bool
	var watch *time.Timer
	if c.cfg.Watchdog > 0 {
		// Also covers a relay that accepts the connection but never answers.
		watch = time.AfterFunc(c.cfg.Watchdog, func() { silent.Store(true); cancel() })
		defer watch.Stop()
	}
	if d := time.Until(c.tokens.renewal()); d > 0 {
		t := time.AfterFunc(d, func() { renew.Store(true); cancel() })
		defer t.Stop()
	}
	defer func() {
		// A stream we ended ourselves: say why, and come back at once for a
		// renewal.
		switch {
		case ctx.Err() != nil || o.fatal != nil:
		case renew.Load():
			o.now, o.err = true, nil
		case silent.Load():
			o.err = fmt.Errorf("stream silent for %s: reconnecting", c.cfg.Watchdog)
		}
	}()

	req, err := http.NewRequestWithContext(cctx, http.MethodGet, c.url, nil)
	if err != nil {
		return outcome{fatal: fmt.Errorf("client: %w", err)}
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("Authorization", "Bearer "+tok)
	if id := c.LastEventID(); id != "" {
		req.Header.Set("Last-Event-ID", id)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return outcome{err: fmt.Errorf("connect: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		serr := &StatusError{StatusCode: resp.StatusCode, Message: errorMessage(resp.Body)}
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			c.tokens.invalidate()
			// A token that was cached may just have expired: get a new one
			// and try again at once. A new one refused too: back off.
			return outcome{now: !fresh, err: serr}
		case http.StatusForbidden, http.StatusBadRequest, http.StatusNoContent:
			return outcome{fatal: serr}
		}
		return outcome{err: serr}
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return outcome{err: fmt.Errorf("connect: response is %q, not an event stream", resp.Header.Get("Content-Type"))}
	}

	var body io.Reader = resp.Body
	if watch != nil {
		body = &watchedReader{r: resp.Body, t: watch, d: c.cfg.Watchdog}
	}
	dec := sse.NewDecoder(body)
	dec.Limit(c.cfg.MaxEventBytes)
	defer func() {
		// A retry field counts when it is read, blank line or not: the
		// relay may send one right before it closes.
		if d := dec.Retry(); d > 0 {
			c.mu.Lock()
			c.retry = d
			c.mu.Unlock()
			o.hinted = true
		}
	}()
	for {
		b, err := dec.NextBlock()
		if err != nil {
			if err == io.EOF {
				err = errors.New("stream closed by the relay")
			}
			o.err = fmt.Errorf("stream: %w", err)
			return o
		}
		c.mu.Lock()
		if b.HasID {
			c.lastID = b.Event.ID // committed at the blank line, data or not, as EventSource does
		}
		id := c.lastID
		c.mu.Unlock()
		if !b.Dispatched {
			continue // not an event
		}
		ev := Event{ID: id, Name: b.Event.Type, Data: b.Event.Data}
		switch {
		case ev.Name == EventConnected:
			o.opened = true
			if c.cfg.OnConnect != nil {
				var info Connected
				_ = json.Unmarshal([]byte(ev.Data), &info)
				c.cfg.OnConnect(info)
			}
			continue
		case ev.Name == EventTokenExpired:
			c.tokens.invalidate()
			o.now, o.err = true, fmt.Errorf("stream: %w", ErrTokenExpired)
			return o
		case ev.Name == EventReset:
			ev.Reset = &Reset{}
			_ = json.Unmarshal([]byte(ev.Data), ev.Reset)
		case strings.HasPrefix(ev.Name, reservedPrefix):
			continue // a relay event this client does not know yet
		}
		if watch != nil {
			watch.Stop() // the application's time is not silence
		}
		err = fn(ev)
		if watch != nil {
			watch.Reset(c.cfg.Watchdog)
		}
		if err != nil {
			o.fatal = err
			return o
		}
	}
}

// errorMessage reads the relay's {"error": "..."} body.
func errorMessage(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 4096))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	return strings.TrimSpace(string(b))
}

// watchedReader restarts the watchdog whenever bytes arrive.
type watchedReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (w *watchedReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		w.t.Reset(w.d)
	}
	return n, err
}
