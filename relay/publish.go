package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/connid"
	"github.com/sserelay/sserelay/relay/sse"
	"github.com/sserelay/sserelay/relay/subject"
)

// PublishRequest is the body of POST /v1/publish.
type PublishRequest struct {
	AppID        string          `json:"app_id"`
	Feed         string          `json:"feed"`
	Topic        string          `json:"topic,omitempty"`
	Event        string          `json:"event,omitempty"`
	Data         json.RawMessage `json:"data"`
	ConnectionID string          `json:"connection_id,omitempty"`
	ID           string          `json:"id,omitempty"`
}

// MaxMsgIDLen bounds the de-duplication id of a publish.
const MaxMsgIDLen = 128

// Validate checks every field and returns a message for the client.
func (p *PublishRequest) Validate() error {
	if err := subject.CheckToken("app_id", p.AppID); err != nil {
		return err
	}
	if err := subject.CheckToken("feed", p.Feed); err != nil {
		return err
	}
	if p.Topic != "" {
		if err := subject.CheckTopic(p.Topic); err != nil {
			return err
		}
	}
	if p.Event != "" && !sse.ValidEventName(p.Event) {
		return errors.New("event must be 1 to 128 characters without CR, LF, NUL or surrounding spaces, and must not start with \"sserelay.\"")
	}
	if len(p.Data) == 0 {
		return errors.New("data is required")
	}
	if p.ConnectionID != "" && !connid.Valid(p.ConnectionID) {
		return errors.New("connection_id must be 8 to 64 characters of [A-Za-z0-9_-]")
	}
	if p.ID != "" && (len(p.ID) > MaxMsgIDLen || strings.IndexFunc(p.ID, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0) {
		return errors.New("id must be 1 to 128 characters without whitespace or control characters")
	}
	return nil
}

// payload returns the SSE data: a JSON string verbatim, any other JSON value
// as its compact text.
func (p *PublishRequest) payload() ([]byte, error) {
	if p.Data[0] == '"' {
		var s string
		if err := json.Unmarshal(p.Data, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, p.Data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// isJSONMediaType reports whether the Content-Type ct is application/json:
// the media type in any case (RFC 9110 8.3.1), then nothing, or optional
// whitespace and parameters after ';'. The parameters are not looked at,
// as before: JSON is UTF-8 whatever a charset says. What mime.ParseMediaType
// decides for the media type, without its lowered copy and parameter map on
// every publish; net/http has trimmed the whitespace around the value.
func isJSONMediaType(ct string) bool {
	const mt = "application/json"
	if ct == mt {
		return true
	}
	if len(ct) < len(mt) || !strings.EqualFold(ct[:len(mt)], mt) {
		return false
	}
	rest := strings.TrimLeft(ct[len(mt):], " \t")
	return rest == "" || rest[0] == ';'
}

// parsePublish authenticates and validates a publish request and returns
// the message to store. On failure it returns the status and message to send.
func (r *Relay) parsePublish(w http.ResponseWriter, req *http.Request) (*nats.Msg, int, string) {
	// Header only: a token in a URL or a cookie would let a third-party page
	// publish as the user (CSRF); the stream accepts them only for EventSource.
	tok, ok := auth.TokenFromRequest(req, false, false)
	if !ok {
		return nil, http.StatusUnauthorized, "missing token: publishing needs Authorization: Bearer"
	}
	claims, err := r.cfg.Verifier.Verify(tok)
	if err != nil {
		return nil, http.StatusUnauthorized, err.Error()
	}
	if ok, wait := r.limits.pubRate.allow(claims.Subject, time.Now()); !ok {
		r.metrics.limited[limitPublishRate].Inc()
		w.Header().Set("Retry-After", retryAfter(wait))
		w.Header().Set("Connection", "close") // the body is not read
		return nil, http.StatusTooManyRequests, "too many publishes: retry later"
	}
	if ct := req.Header.Get("Content-Type"); ct != "" && !isJSONMediaType(ct) {
		return nil, http.StatusUnsupportedMediaType, "content type must be application/json"
	}
	body := http.MaxBytesReader(w, req.Body, r.cfg.MaxPublishBytes)
	bufp := publishBufs.Get().(*[]byte)
	defer putPublishBuf(bufp)
	b, err := readBody(body, *bufp, req.ContentLength, r.cfg.MaxPublishBytes)
	*bufp = b
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, http.StatusRequestEntityTooLarge, "body larger than " + strconv.FormatInt(r.cfg.MaxPublishBytes, 10) + " bytes"
	case errors.Is(err, os.ErrDeadlineExceeded):
		w.Header().Set("Connection", "close")
		return nil, http.StatusRequestTimeout, "request body not received within " + r.cfg.BodyTimeout.String()
	case err != nil:
		return nil, http.StatusBadRequest, "body must be one JSON object of the publish fields: " + err.Error()
	}
	if req.ProtoMajor != 1 {
		// The body is in: the wait for the acknowledgement must not be cut
		// by the body's deadline. (HTTP/1 clears it itself once the body
		// is read to its end, to start its background read.)
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	var p PublishRequest
	data, ok := decodePublish(b, &p)
	if !ok {
		p = PublishRequest{}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return nil, http.StatusBadRequest, "body must be one JSON object of the publish fields: " + err.Error()
		}
		if dec.More() {
			return nil, http.StatusBadRequest, "body must be one JSON object"
		}
	}
	if p.ConnectionID == "" {
		p.ConnectionID = req.Header.Get(HeaderConnectionID)
	}
	if err := p.Validate(); err != nil {
		return nil, http.StatusBadRequest, err.Error()
	}
	if !claims.AllowsApp(p.AppID) {
		return nil, http.StatusForbidden, "token does not grant app " + strconv.Quote(p.AppID) + " (apps claim)"
	}
	if !claims.AllowsPublishApp(p.AppID) {
		return nil, http.StatusForbidden, "token does not grant publishing to app " + strconv.Quote(p.AppID)
	}
	if !claims.AllowsPublish(p.AppID, p.Feed) {
		return nil, http.StatusForbidden, "token does not grant publishing to feed " + strconv.Quote(p.Feed) + " of app " + strconv.Quote(p.AppID)
	}
	if data == nil {
		if data, err = p.payload(); err != nil {
			return nil, http.StatusBadRequest, "data: " + err.Error()
		}
	}
	msg := &nats.Msg{Subject: subject.Join(r.cfg.SubjectPrefix, p.AppID, p.Feed, p.Topic), Data: data}
	if p.Event != "" || p.ConnectionID != "" || p.ID != "" {
		msg.Header = make(nats.Header, 3)
	}
	if p.Event != "" {
		msg.Header.Set(HeaderEvent, p.Event)
	}
	if p.ConnectionID != "" {
		msg.Header.Set(HeaderConnectionID, p.ConnectionID)
		msg.Header.Set(HeaderConnectionUser, claims.Subject)
	}
	if p.ID != "" {
		msg.Header.Set(HeaderMsgID, PublishMsgID(p.AppID, p.Feed, claims.Subject, p.ID))
	}
	return msg, 0, ""
}

// publishBufs holds the buffers that publish bodies are read into.
var publishBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBody bounds the buffers kept for reuse: a rare large body
// does not pin its memory.
const maxPooledBody = 64 << 10

func putPublishBuf(b *[]byte) {
	if cap(*b) <= maxPooledBody {
		*b = (*b)[:0]
		publishBufs.Put(b)
	}
}

// readBody reads body to its end into buf, sized for the announced length
// when there is one (limit bounds what the body may be, so the hint too).
func readBody(body io.Reader, buf []byte, length, limit int64) ([]byte, error) {
	n := int64(512)
	if length >= 0 {
		n = min(length, limit) + 1 // +1: the read that finds the end
	}
	if int64(cap(buf)) < n {
		buf = make([]byte, 0, n)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// servePublish answers POST /v1/publish: it stores one event and returns
// its stream sequence. The publish is asynchronous: the acknowledgements of
// all requests come back on one subscription, in a window of PublishWindow,
// instead of a request and a reply inbox per event.
//
// A 503 after the acknowledgement timed out (PublishTimeout) does not say
// the event was not stored: the store may have taken it and its
// acknowledgement come late (or been lost). Hence "retry with the same
// id": the de-duplication window turns the retry into the original seq.
// A 503 because NATS was disconnected is final: the relay's connection
// buffers nothing while disconnected, so that event never appears later.
func (r *Relay) servePublish(w http.ResponseWriter, req *http.Request) {
	msg, status, errMsg := r.parsePublish(w, req)
	if msg == nil {
		r.metrics.countPublish(status)
		writeError(w, status, errMsg)
		return
	}
	fail := func(msg string) {
		r.metrics.pubErrors.Add(1)
		r.metrics.countPublish(http.StatusServiceUnavailable)
		writeError(w, http.StatusServiceUnavailable, msg)
	}
	if !r.cfg.Conn.IsConnected() {
		fail(errNotStored)
		return
	}
	ack, sent, err := r.publish(req.Context(), msg)
	if err != nil {
		r.log.Warn("publish failed", "subject", msg.Subject, "sent", sent, "err", err)
		if !sent {
			fail(errNotStored)
		} else {
			fail(errMaybeStored)
		}
		return
	}
	r.metrics.published.Add(1)
	r.metrics.countPublish(http.StatusOK)
	h := w.Header()
	h["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	b := make([]byte, 0, 32)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, ack.Sequence, 10)
	_, _ = w.Write(append(b, "}\n"...))
}

var jsonContentType = []string{"application/json"}

// The two 503s of a publish: one for an event that never left the relay,
// one for an event that may be in the store.
const (
	errNotStored   = "event store unavailable (NATS not connected): the event was not stored, retry later"
	errMaybeStored = "event store unavailable: no acknowledgement in time, the event may be stored: retry with the same id"
)

// publish stores msg and waits for its acknowledgement, at most
// PublishTimeout (the window's timeout) or until ctx ends. sent says
// whether msg left the relay, so that an error may follow a stored event.
func (r *Relay) publish(ctx context.Context, msg *nats.Msg) (ack *jetstream.PubAck, sent bool, err error) {
	paf, err := r.pub.PublishMsgAsync(msg)
	if err != nil {
		return nil, false, err
	}
	select {
	case ack := <-paf.Ok():
		return ack, true, nil
	case err := <-paf.Err():
		return nil, true, err
	case <-ctx.Done():
		return nil, true, ctx.Err()
	}
}
