package relay

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/connid"
)

// FuzzStreamRequest feeds GET /v1/events query strings and Last-Event-ID
// headers to the request parser, with a token of alice that may also read
// "room". Whatever the input: no panic; a refusal is a 400, 401 or 403 with
// a message; an accepted request only names valid parts and feeds the token
// grants, within the limits, and the subjects it subscribes to are NATS
// subjects under those feeds (a literal, or a literal followed by ".>"),
// never a wildcard that reaches further. Corpus:
// testdata/fuzz/FuzzStreamRequest.
func FuzzStreamRequest(f *testing.F) {
	f.Add("app_id=demo&feed=alice&feed=room&topic=orders.eu&connection_id=tab-0001-ab", "42")
	f.Add("app_id=demo&feed=*&topic=>&last_event_id=-1", "")
	v, err := auth.NewVerifier(f.Context(), auth.Config{Secret: []byte("fuzz-secret-0123456789abcdef0123")})
	if err != nil {
		f.Fatal(err)
	}
	tok, err := auth.Sign([]byte("fuzz-secret-0123456789abcdef0123"), auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"}, Feeds: []string{"room"}})
	if err != nil {
		f.Fatal(err)
	}
	cfg := Config{Verifier: v}
	cfg.setValueDefaults()
	r := &Relay{cfg: cfg}
	f.Fuzz(func(t *testing.T, query, lastEventID string) {
		req, err := http.NewRequest(http.MethodGet, "http://relay.test/v1/events?"+query, nil)
		if err != nil {
			t.Skip("not a request line net/http would parse")
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if lastEventID != "" {
			req.Header.Set("Last-Event-ID", lastEventID)
		}
		sr, status, msg := r.parseStreamRequest(req, req.URL.Query())
		if sr == nil {
			if (status != http.StatusBadRequest && status != http.StatusUnauthorized && status != http.StatusForbidden) || msg == "" {
				t.Fatalf("refused with %d %q", status, msg)
			}
			return
		}
		if status != 0 || msg != "" {
			t.Fatalf("accepted with status %d %q", status, msg)
		}
		if len(sr.feeds) == 0 || len(sr.feeds) > r.cfg.MaxFeeds || len(sr.topics) > r.cfg.MaxTopics {
			t.Fatalf("accepted %d feeds and %d topics", len(sr.feeds), len(sr.topics))
		}
		for _, fd := range sr.feeds {
			if fd != "alice" && fd != "room" {
				t.Fatalf("accepted feed %q, which the token does not grant", fd)
			}
		}
		if !connid.Valid(sr.connID) {
			t.Fatalf("connection id %q", sr.connID)
		}
		id := lastEventID
		if id == "" {
			id = req.URL.Query().Get("last_event_id")
		}
		if sr.hasID != (id != "") || (sr.hasID && strconv.FormatUint(sr.lastID, 10) != trimZeros(id)) {
			t.Fatalf("last event id %q read as %v %d", id, sr.hasID, sr.lastID)
		}
		s := newSession(r, sr.connID, sr.claims.Subject, sr.app, sr.feeds, sr.topics)
		for _, subj := range s.filter().subjects {
			lit, wide := strings.CutSuffix(subj, ".>")
			if !server.IsValidLiteralSubject(lit) || (!wide && lit != subj) {
				t.Fatalf("subscribes to %q", subj)
			}
			parts := strings.SplitN(lit, ".", 4)
			if len(parts) < 3 || parts[0] != "sse" || parts[1] != sr.app || !slices.Contains(sr.feeds, parts[2]) {
				t.Fatalf("subject %q is not under the feeds %q of app %q", subj, sr.feeds, sr.app)
			}
		}
	})
}

// trimZeros is the canonical form of a decimal: no leading zeros.
func trimZeros(s string) string {
	if t := strings.TrimLeft(s, "0"); t != "" {
		return t
	}
	return "0"
}

// FuzzLastEventID checks the Last-Event-ID parser against strconv: it
// accepts exactly the strings of 1 to 20 ASCII digits that fit a uint64,
// with their value. Corpus: testdata/fuzz/FuzzLastEventID.
func FuzzLastEventID(f *testing.F) {
	f.Add("18446744073709551615")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSeq(s)
		want, werr := strconv.ParseUint(s, 10, 64)
		digits := s != "" && len(s) <= 20 && strings.Trim(s, "0123456789") == ""
		switch {
		case err == nil && (!digits || werr != nil || n != want):
			t.Fatalf("parseSeq(%q) = %d, strconv says %d, %v", s, n, want, werr)
		case err != nil && digits && werr == nil:
			t.Fatalf("parseSeq(%q) refused %d: %v", s, want, err)
		}
	})
}
