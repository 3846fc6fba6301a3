package e2e_test

import (
	"net/url"
	"testing"
)

// TestErrorAnswers: bad requests to the built binary get the right status
// and a {"error":"…"} JSON body, for every token transport and parameter.
func TestErrorAnswers(t *testing.T) {
	t.Parallel()
	const secret = "errors-secret"
	r := startRelay(t, relayOpts{Secret: secret})
	alice := token(t, secret, "alice", "--app", "app", "--publish", "app")
	bob := token(t, secret, "bob", "--app", "app")
	wrong := token(t, "not-the-secret", "alice")
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	events := func(q url.Values) string { return r.URL + "/v1/events?" + q.Encode() }

	if resp, body := get(t, r.URL+"/healthz", nil); resp.StatusCode != 200 {
		t.Errorf("/healthz: %d %s", resp.StatusCode, body)
	}
	for _, c := range []struct {
		what   string
		q      url.Values
		hdr    map[string]string
		status int
	}{
		{"no token", url.Values{"app_id": {"app"}}, nil, 401},
		{"token of another secret", url.Values{"app_id": {"app"}}, bearer(wrong), 401},
		{"garbage query token", url.Values{"app_id": {"app"}, "access_token": {"garbage"}}, nil, 401},
		{"no app_id", url.Values{}, bearer(alice), 400},
		{"app_id with a dot", url.Values{"app_id": {"a.b"}}, bearer(alice), 400},
		{"app_id with a wildcard", url.Values{"app_id": {"*"}}, bearer(alice), 400},
		{"feed with >", url.Values{"app_id": {"app"}, "feed": {">"}}, bearer(alice), 400},
		{"topic with a wildcard", url.Values{"app_id": {"app"}, "topic": {"orders.*"}}, bearer(alice), 400},
		{"topic with a space", url.Values{"app_id": {"app"}, "topic": {"or ders"}}, bearer(alice), 400},
		{"last_event_id not decimal", url.Values{"app_id": {"app"}, "last_event_id": {"abc"}}, bearer(alice), 400},
		{"Last-Event-ID header not decimal", url.Values{"app_id": {"app"}}, map[string]string{"Authorization": "Bearer " + alice, "Last-Event-ID": "12x"}, 400},
		{"connection_id too short", url.Values{"app_id": {"app"}, "connection_id": {"short"}}, bearer(alice), 400},
		{"connection_id with a dot", url.Values{"app_id": {"app"}, "connection_id": {"abcdefgh.ij"}}, bearer(alice), 400},
		{"feed of another user", url.Values{"app_id": {"app"}, "feed": {"bob"}}, bearer(alice), 403},
		{"app not in the token", url.Values{"app_id": {"other"}}, bearer(alice), 403},
	} {
		resp, body := get(t, events(c.q), c.hdr)
		expectError(t, "GET /v1/events: "+c.what, resp, body, c.status)
	}
	for _, c := range []struct {
		what   string
		tok    string
		path   string
		body   map[string]any
		status int
	}{
		{"no token", "", "", map[string]any{"app_id": "app", "feed": "alice", "data": "x"}, 401},
		{"token in the query only", "", "?access_token=" + alice, map[string]any{"app_id": "app", "feed": "alice", "data": "x"}, 401},
		{"token of another secret", wrong, "", map[string]any{"app_id": "app", "feed": "alice", "data": "x"}, 401},
		{"token without publish", bob, "", map[string]any{"app_id": "app", "feed": "alice", "data": "x"}, 403},
		{"app not granted for publish", alice, "", map[string]any{"app_id": "other", "feed": "alice", "data": "x"}, 403},
		{"no data", alice, "", map[string]any{"app_id": "app", "feed": "alice"}, 400},
		{"feed with a dot", alice, "", map[string]any{"app_id": "app", "feed": "a.b", "data": "x"}, 400},
		{"reserved event name", alice, "", map[string]any{"app_id": "app", "feed": "alice", "event": "sserelay.connected", "data": "x"}, 400},
		{"event name with LF", alice, "", map[string]any{"app_id": "app", "feed": "alice", "event": "a\nb", "data": "x"}, 400},
		{"unknown field", alice, "", map[string]any{"app_id": "app", "feed": "alice", "data": "x", "nope": 1}, 400},
	} {
		resp, body := postPublish(t, r.URL+"/v1/publish"+c.path, c.tok, c.body, nil)
		expectError(t, "POST /v1/publish: "+c.what, resp, body, c.status)
	}
}
