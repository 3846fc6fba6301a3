package e2e_test

import (
	"net/url"
	"testing"
)

// TestNatsCLI publishes with the real `nats` CLI (natscli) into the
// relay's embedded server, with the contract's headers.
func TestNatsCLI(t *testing.T) {
	t.Parallel()
	natsCLI := tool(t, "SSERELAY_NATS_CLI", "nats")
	const secret = "natscli-secret"
	r := startRelay(t, relayOpts{Secret: secret})
	base := r.freshStream(t)
	alice := token(t, secret, "alice", "--app", "app")
	open := func(conn string) *sseStream {
		q := url.Values{"app_id": {"app"}, "connection_id": {conn}}
		s := openStream(t, r.URL+"/v1/events?"+q.Encode(), map[string]string{"Authorization": "Bearer " + alice})
		s.connected(t)
		return s
	}
	sender := open("alice-sender-1")
	other := open("alice-other-2")

	home := t.TempDir() // natscli keeps contexts under HOME: start from none
	natsPub := func(args ...string) {
		t.Helper()
		all := append([]string{"--no-context", "-s", r.NATS, "pub"}, args...)
		runCmd(t, "", []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home}, natsCLI, all...)
	}
	natsPub("sse.app.alice.x", "hello from natscli", "-H", "X-Connection-Id:alice-sender-1", "-H", "X-Connection-User:alice", "-H", "Sse-Event:greet")
	// A plain message after it: once a stream has it, it has (or will
	// never get) everything published before.
	natsPub("sse.app.alice", "after")

	greet := ev{base + 1, "greet", "hello from natscli"}
	after := ev{base + 2, "", "after"}
	other.waitID(t, after.seq)
	sender.waitID(t, after.seq)
	if got, want := normalize(other.raw()), connectedFrame(2000, true, base, "alice-other-2", "alice", "app")+frames(greet, after); got != want {
		t.Errorf("the user's other stream:\n got %q\nwant %q", got, want)
	}
	if got, want := normalize(sender.raw()), connectedFrame(2000, true, base, "alice-sender-1", "alice", "app")+frames(after); got != want {
		t.Errorf("the stream named in X-Connection-Id must not get the event:\n got %q\nwant %q", got, want)
	}
}
