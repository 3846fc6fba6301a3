package auth

import (
	"net/http"
	"strings"
)

// Where [TokenFromRequest] looks besides the Authorization header.
const (
	// QueryParam carries the token for clients that cannot set headers (browser EventSource).
	QueryParam = "access_token"
	// CookieName carries the token for same-site browser pages.
	CookieName = "sserelay_token"
)

// TokenFromRequest returns the bearer token: Authorization: Bearer header first; then, if
// allowQuery, the access_token query parameter; then, if allowCookie, the cookie sserelay_token.
// ok is false when none is present. A malformed Authorization header (not "Bearer <tok>", scheme
// case-insensitive) gives ok=false with no fallback: the client meant to authenticate with the
// header, and falling back to, say, a stale cookie would hide its mistake behind another identity.
// Empty query or cookie values count as absent.
func TokenFromRequest(r *http.Request, allowQuery, allowCookie bool) (token string, ok bool) {
	if h, present := r.Header["Authorization"]; present {
		if len(h) != 1 {
			return "", false
		}
		scheme, tok, found := strings.Cut(h[0], " ")
		tok = strings.TrimLeft(tok, " ")
		if !found || !strings.EqualFold(scheme, "Bearer") || tok == "" || strings.ContainsAny(tok, " \t") {
			return "", false
		}
		return tok, true
	}
	if allowQuery {
		if tok := r.URL.Query().Get(QueryParam); tok != "" {
			return tok, true
		}
	}
	if allowCookie {
		if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
			return c.Value, true
		}
	}
	return "", false
}
