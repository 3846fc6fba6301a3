package relay

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/connid"
	"github.com/sserelay/sserelay/relay/sse"
	"github.com/sserelay/sserelay/relay/subject"
)

// A streamRequest is a validated GET /v1/events request.
type streamRequest struct {
	claims  *auth.Claims
	app     string
	feeds   []string
	subject [1]string // feeds when the query names none: the token's subject, without a slice of its own
	topics  []string
	hasID   bool
	lastID  uint64
	connID  string
	poll    bool
	expires time.Time
}

// onceParams are the query parameters of a stream request that hold one
// value (poll has a check of its own). Given twice, url.Values.Get would
// take the first silently, and a proxy, a log or another server that takes
// the last would see another request than the relay serves; topic and feed
// are lists.
var onceParams = [...]string{"app_id", auth.QueryParam, "connection_id", "last_event_id"}

// parseStreamRequest authenticates and validates a stream request, whose
// query is q (parsed once by the caller). On failure it returns the status
// and message to send.
func (r *Relay) parseStreamRequest(req *http.Request, q url.Values) (*streamRequest, int, string) {
	// Before the token: which access_token would be the one?
	for _, name := range onceParams {
		if len(q[name]) > 1 {
			return nil, http.StatusBadRequest, name + " must be given once"
		}
	}
	tok, ok := auth.TokenFromRequestQuery(req, q, true)
	if !ok {
		return nil, http.StatusUnauthorized, "missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie"
	}
	claims, err := r.cfg.Verifier.Verify(tok)
	if err != nil {
		return nil, http.StatusUnauthorized, err.Error()
	}
	sr := &streamRequest{claims: claims, app: q.Get("app_id"), poll: q.Get("poll") == "1"}
	if claims.ExpiresAt != nil {
		sr.expires = claims.ExpiresAt.Add(r.cfg.TokenLeeway)
	}
	if p, ok := q["poll"]; ok && (len(p) != 1 || p[0] != "1" && p[0] != "0") {
		// A typo (poll=true) would otherwise open a stream the client
		// does not expect.
		return nil, http.StatusBadRequest, "poll must be 1 (a poll) or 0 (a stream), once"
	}
	if sr.app == "" {
		return nil, http.StatusBadRequest, "app_id is required"
	}
	if err := subject.CheckToken("app_id", sr.app); err != nil {
		return nil, http.StatusBadRequest, err.Error()
	}
	sr.feeds = dedupe(q["feed"])
	if len(sr.feeds) == 0 {
		sr.subject[0] = claims.Subject
		sr.feeds = sr.subject[:]
	}
	if len(sr.feeds) > r.cfg.MaxFeeds {
		return nil, http.StatusBadRequest, "too many feeds (at most " + strconv.Itoa(r.cfg.MaxFeeds) + ")"
	}
	for _, f := range sr.feeds {
		if err := subject.CheckToken("feed", f); err != nil {
			return nil, http.StatusBadRequest, err.Error()
		}
	}
	sr.topics = dedupe(q["topic"])
	if len(sr.topics) > r.cfg.MaxTopics {
		return nil, http.StatusBadRequest, "too many topics (at most " + strconv.Itoa(r.cfg.MaxTopics) + ")"
	}
	for _, t := range sr.topics {
		if err := subject.CheckTopic(t); err != nil {
			return nil, http.StatusBadRequest, err.Error()
		}
	}
	id := req.Header.Get("Last-Event-Id") // the canonical form of Last-Event-ID, which Get would allocate
	if id == "" {
		id = q.Get("last_event_id")
	}
	if id != "" {
		n, err := parseSeq(id)
		if err != nil {
			return nil, http.StatusBadRequest, "last event id must be a decimal stream sequence"
		}
		sr.hasID, sr.lastID = true, n
	}
	if c := q.Get("connection_id"); c != "" {
		if !connid.Valid(c) {
			return nil, http.StatusBadRequest, "connection_id must be 8 to 64 characters of [A-Za-z0-9_-]"
		}
		sr.connID = strings.Clone(c) // not the whole request line for the stream's life
	} else {
		sr.connID = connid.New()
	}
	// Authorization after validation: a malformed request is a 400 whoever sends it.
	if !claims.AllowsApp(sr.app) {
		return nil, http.StatusForbidden, "token does not grant app " + strconv.Quote(sr.app)
	}
	for _, f := range sr.feeds {
		if !claims.AllowsFeed(f) {
			return nil, http.StatusForbidden, "token does not grant feed " + strconv.Quote(f)
		}
	}
	return sr, 0, ""
}

// dedupe drops repeated values, keeping the first of each. Without
// repeats (nearly always) it returns vals itself.
func dedupe(vals []string) []string {
	i := 1
	for i < len(vals) && !slices.Contains(vals[:i], vals[i]) {
		i++
	}
	if i >= len(vals) {
		return vals
	}
	out := slices.Clip(vals[:i])   // appends copy: vals stays as it is
	for _, v := range vals[i+1:] { // vals[i] repeats one of out
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// parseSeq parses a stream sequence: 1 to 20 ASCII digits.
func parseSeq(s string) (uint64, error) {
	if len(s) == 0 || len(s) > 20 {
		return 0, errors.New("bad length")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a decimal")
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// setStreamHeaders sets the headers of a stream's response, and
// X-Connection-Id unless connID is "". What Header.Set would store, with
// the values in one array (a slice each was an allocation each): capped
// slices, so that a later Add copies.
func setStreamHeaders(w http.ResponseWriter, connID string) {
	h := w.Header()
	v := []string{"text/event-stream", "no-cache", "no", connID}
	h["Content-Type"] = v[0:1:1]
	h["Cache-Control"] = v[1:2:2]
	h["X-Accel-Buffering"] = v[2:3:3]
	if connID != "" {
		h["X-Connection-Id"] = v[3:4:4]
	}
}

// sendAway answers an EventSource that should come back later: browsers
// give up for good on any status but 200, so 200 with a retry hint and a close.
func (r *Relay) sendAway(w http.ResponseWriter, reason string) {
	setStreamHeaders(w, "")
	w.WriteHeader(http.StatusOK)
	b := sse.AppendComment(nil, reason)
	_, _ = w.Write(appendRetry(b, r.retryHint()))
}

// appendRetry appends a retry field without the blank line that would end
// a block: clients apply the field as they parse it, but a block of its own
// reaches lenient clients (go-sse, fetch-event-source) as an event with
// empty data. So it goes into the block of an event, or last before a
// close, where the unfinished block is discarded and the hint stays.
func appendRetry(dst []byte, ms int64) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, ms, 10)
	return append(dst, '\n')
}

// serveEvents answers GET /v1/events: it opens a stream (or, with poll=1,
// answers one page of JSON).
func (r *Relay) serveEvents(w http.ResponseWriter, req *http.Request) {
	// -1 is a chunked HTTP/1.1 body, or an HTTP/2 GET whose headers do not
	// end the stream: the latter is framed and cannot hold anything, the
	// former would be read as the stream's bytes.
	if req.ContentLength > 0 || req.ContentLength < 0 && req.ProtoMajor == 1 {
		// Not waiting for a body that has no use: answer and close.
		w.Header().Set("Connection", "close")
		r.metrics.rejected.Add(1)
		writeError(w, http.StatusBadRequest, "a stream request has no body")
		return
	}
	q := req.URL.Query()
	poll := q.Get("poll") == "1"
	head := req.Method == http.MethodHead
	// Before the token is checked: a flood of bad tokens costs a map lookup.
	// A HEAD only peeks (see serveHead).
	var ok bool
	var wait time.Duration
	if head {
		ok, wait = r.limits.ipRate.peek(r.limits.clientAddr(req), time.Now())
	} else {
		ok, wait = r.limits.ipRate.allow(r.limits.clientAddr(req), time.Now())
	}
	if !ok {
		r.refuseLimited(w, req, poll, limitIPRate, wait)
		return
	}
	sr, status, msg := r.parseStreamRequest(req, q)
	if sr == nil {
		r.metrics.rejected.Add(1)
		r.log.Debug("stream refused", "status", status, "error", msg, "remote", req.RemoteAddr)
		writeError(w, status, msg)
		return
	}
	if head {
		r.serveHead(w, req, sr)
		return
	}
	if ok, wait := r.limits.userRate.allow(sr.claims.Subject, time.Now()); !ok {
		r.refuseLimited(w, req, poll, limitUserRate, wait)
		return
	}
	if sr.poll {
		r.servePoll(w, req, sr)
		return
	}
	s := newSession(r, sr.connID, sr.claims.Subject, sr.app, sr.feeds, sr.topics)
	s.wmu.Lock() // the session writes first (head, catch-up); released when it waits for events
	c, reg := r.hub.register(s)
	switch reg {
	case refusedDraining:
		r.metrics.closed[closeDraining].Inc()
		r.sendAway(w, "draining")
		return
	case refusedFull:
		r.metrics.shed.Add(1)
		r.metrics.closed[closeShed].Inc()
		r.sendAway(w, "busy")
		return
	case refusedUserFull:
		r.refuseLimited(w, req, false, limitUserStreams, 0)
		return
	}
	s.start = r.keepalives.now()
	if r.log.Enabled(context.Background(), slog.LevelDebug) { // the arguments were allocations on every stream
		r.log.Debug("stream opened", "conn", s.connID, "user", s.user, "app", sr.app, "feeds", sr.feeds, "topics", s.topics, "last_event_id", sr.lastID, "has_id", sr.hasID, "cursor", c)
	}

	setStreamHeaders(w, sr.connID)
	if !r.cfg.NoHijack && req.ProtoMajor == 1 {
		if conn, brw, err := http.NewResponseController(w).Hijack(); err == nil {
			if brw.Reader.Buffered() > 0 {
				// Bytes after the request (pipelined, or a body without a
				// length): a protocol violation, as in serveConn.
				_ = conn.Close()
				s.finish(closeProtocolViolation)
				return
			}
			head := r.appendConnected(responseHead(w.Header(), connectedLen(sr)), sr, c)
			// The stream outlives this handler: net/http's goroutine,
			// buffers and request state are released when it returns.
			go s.serveConn(conn, head, sr, c)
			return
		}
	}
	first := r.appendConnected(make([]byte, 0, connectedLen(sr)), sr, c)
	s.serveHTTP(req.Context(), w, http.NewResponseController(w), first, sr, c)
}

// appendConnected appends the first bytes of a stream: the retry hint and
// the connected event, which carries id c when the client sent no id, so
// that a client that gets nothing else still resumes from there.
func (r *Relay) appendConnected(dst []byte, sr *streamRequest, c uint64) []byte {
	var buf [256]byte // the data, on the stack unless the ids are long
	hello := appendHello(buf[:0], sr.connID, sr.claims.Subject, sr.app)
	dst = appendRetry(dst, r.cfg.Retry.Milliseconds()) // a field of the connected event's block
	if sr.hasID {
		return sse.AppendMessage(dst, EventConnected, hello)
	}
	return sse.AppendEvent(dst, c, EventConnected, hello)
}

// connectedLen is the length of appendConnected's bytes, or more; or less
// when a string of the hello needs escapes.
func connectedLen(sr *streamRequest) int {
	const fields = len("retry: \nid: \nevent: \ndata: \n\n") + 2*20 + len(EventConnected)
	return fields + helloLen + len(sr.connID) + len(sr.claims.Subject) + len(sr.app)
}

// helloLen is the length of the connected event's data with empty strings.
const helloLen = len(`{"app_id":"","connection_id":"","user":""}`)

// appendHello appends the data of the connected event: what json.Marshal
// writes for map[string]string{"connection_id": connID, "user": user,
// "app_id": app}, keys sorted, without the map, its reflection and its sort.
func appendHello(dst []byte, connID, user, app string) []byte {
	dst = append(dst, `{"app_id":`...)
	dst = appendJSONString(dst, app)
	dst = append(dst, `,"connection_id":`...)
	dst = appendJSONString(dst, connID)
	dst = append(dst, `,"user":`...)
	dst = appendJSONString(dst, user)
	return append(dst, '}')
}

// appendJSONString appends s as json.Marshal writes a string. Printable
// ASCII but for '"', '\' and the HTML characters '<', '>' and '&' is
// written as it is; any other string is left to json.Marshal, so that the
// escapes (of those characters, control characters, invalid UTF-8, U+2028
// and U+2029) are encoding/json's.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
