package relay

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"
)

// writeJSON writes v as the JSON body of a response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError writes {"error": msg} with status.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// cors answers preflights and sets the CORS headers for allowed origins.
// Fetch-based clients send Authorization, Last-Event-ID and X-Connection-Id,
// which need a preflight; the browser must be able to read X-Connection-Id.
//
// Only an origin listed by name may send credentials (cookies, which
// streams accept as a token). "*" lets any other origin read the answers
// without them: Access-Control-Allow-Origin: *, with which a browser never
// sends cookies nor exposes a response that needed them, so a foreign page
// can only use a token it already holds. The origin "null" (sandboxed
// frames, file: pages) is never reflected.
//
// A preflight is answered here with the methods of its path (mux's), as
// the catch-all of mux answers any other OPTIONS; a preflight for a path
// that nothing serves goes on to mux's 404.
func (r *Relay) cors(mux *http.ServeMux) http.Handler {
	if len(r.cfg.AllowedOrigins) == 0 {
		return mux
	}
	anyOrigin := slices.Contains(r.cfg.AllowedOrigins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		origin := req.Header.Get("Origin")
		listed := origin != "" && origin != "*" && origin != "null" && slices.Contains(r.cfg.AllowedOrigins, origin)
		if listed || (origin != "" && anyOrigin) {
			h := w.Header()
			if listed {
				h.Set("Access-Control-Allow-Origin", origin)
				h.Set("Access-Control-Allow-Credentials", "true")
			} else {
				h.Set("Access-Control-Allow-Origin", "*")
			}
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", "X-Connection-Id, Retry-After")
			if req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != "" {
				if allow := allowedMethods(mux, req); allow != "" {
					h.Set("Allow", allow)
					h.Set("Access-Control-Allow-Methods", allow)
					h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, X-Connection-Id")
					h.Set("Access-Control-Max-Age", "600")
					w.WriteHeader(http.StatusNoContent)
					return
				}
			}
		}
		mux.ServeHTTP(w, req)
	})
}

// serveHead answers HEAD /v1/events: the status and headers a GET would
// get (the token and parameters are checked), without a body, a session
// or a read of the store. HEAD is GET without content (RFC 9110 9.3.2):
// monitors and link checkers send it, and answering with the stream's
// headers tells them what a GET would say; 405 would hide a bad token.
//
// That includes the limits and draining: a GET that would be sent away
// gets the sent-away answer's headers (no X-Connection-Id), a poll over
// its rate 429 with Retry-After. But a HEAD only peeks at them, in the
// order serveEvents meets them: it takes no token of the per-address or
// per-user rate and holds no stream slot, so probes (a health check every
// few seconds, from behind the same NAT as the users) never use up what
// GETs need. Taking them instead would make the HEAD exact about the next
// GET only by making that GET fail. The per-address rate is thus no bound
// on HEADs with bad tokens, each a signature check (the token cache keeps
// only tokens that verified), as it never bounded POST /v1/publish. A
// poll's replay slot is not looked at: a HEAD does not read the store.
func (r *Relay) serveHead(w http.ResponseWriter, req *http.Request, sr *streamRequest) {
	if ok, wait := r.limits.userRate.peek(sr.claims.Subject, time.Now()); !ok {
		r.refuseLimited(w, req, sr.poll, limitUserRate, wait)
		return
	}
	if sr.poll {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Connection-Id", sr.connID)
		w.WriteHeader(http.StatusOK)
		return
	}
	switch r.hub.peek(sr.claims.Subject) {
	case refusedDraining:
		r.sendAway(w, "draining") // the body is not sent: what a GET would be told
		return
	case refusedFull:
		r.sendAway(w, "busy")
		return
	case refusedUserFull:
		r.refuseLimited(w, req, false, limitUserStreams, 0)
		return
	}
	setStreamHeaders(w, sr.connID)
	w.WriteHeader(http.StatusOK)
}
