package auth

import (
	"net/http"
	"net/url"
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
	if tok, present := authorization(r); present {
		return tok, tok != ""
	}
	if allowQuery {
		if tok := r.URL.Query().Get(QueryParam); tok != "" {
			return tok, true
		}
	}
	return cookie(r, allowCookie)
}

// TokenFromRequestQuery is [TokenFromRequest] with allowQuery for a caller
// that has parsed r's query already: query is r.URL.Query(), which is not
// parsed again.
func TokenFromRequestQuery(r *http.Request, query url.Values, allowCookie bool) (token string, ok bool) {
	if tok, present := authorization(r); present {
		return tok, tok != ""
	}
	if tok := query.Get(QueryParam); tok != "" {
		return tok, true
	}
	return cookie(r, allowCookie)
}

// authorization returns the token of r's Authorization header, "" if the
// header is malformed; present is false when r has none.
func authorization(r *http.Request) (token string, present bool) {
	h, present := r.Header["Authorization"]
	if !present {
		return "", false
	}
	if len(h) != 1 {
		return "", true
	}
	scheme, tok, found := strings.Cut(h[0], " ")
	tok = strings.TrimLeft(tok, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || strings.ContainsAny(tok, " \t") {
		return "", true
	}
	return tok, true
}

// cookie returns the token of r's cookie, if allowed.
func cookie(r *http.Request, allowed bool) (token string, ok bool) {
	if allowed {
		if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
			return c.Value, true
		}
	}
	return "", false
}
