package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"testing"
)

// TestPollMatchesStream: poll=1 returns the same events as the stream:
// same ids, names and data, where data is what an EventSource sees (the
// stream splits the payload on CR, LF and CRLF; a client joins the data
// lines with LF).
func TestPollMatchesStream(t *testing.T) {
	t.Parallel()
	const secret = "poll-secret"
	r := startRelay(t, relayOpts{Secret: secret})
	base := r.freshStream(t)
	alice := token(t, secret, "alice", "--app", "app")
	p1 := publishCLI(t, r.NATS, "plain", "--app", "app", "--feed", "alice")
	p2 := publishCLI(t, r.NATS, "crlf\r\nand cr\rand lf\nend", "--app", "app", "--feed", "alice", "--event", "lines")
	from := strconv.FormatUint(base, 10)

	s := openStream(t, r.URL+"/v1/events?app_id=app", map[string]string{"Authorization": "Bearer " + alice, "Last-Event-ID": from})
	s.waitID(t, p2)
	var streamed []ev
	for _, e := range dataEvents(s.events()) {
		streamed = append(streamed, ev{mustUint(t, e.ID), e.Event, e.Data})
	}
	want := []ev{{p1, "", "plain"}, {p2, "lines", "crlf\nand cr\nand lf\nend"}}
	if fmt.Sprint(streamed) != fmt.Sprint(want) {
		t.Errorf("stream: got %v, want %v", streamed, want)
	}

	resp, body := get(t, r.URL+"/v1/events?"+url.Values{"app_id": {"app"}, "poll": {"1"}, "last_event_id": {from}}.Encode(), map[string]string{"Authorization": "Bearer " + alice})
	var poll struct {
		Events []struct {
			ID    string `json:"id"`
			Event string `json:"event"`
			Data  string `json:"data"`
		} `json:"events"`
		LastEventID string `json:"last_event_id"`
	}
	if err := json.Unmarshal(body, &poll); err != nil || resp.StatusCode != 200 {
		t.Fatalf("poll=1: %d %s", resp.StatusCode, body)
	}
	var polled []ev
	for _, e := range poll.Events {
		polled = append(polled, ev{mustUint(t, e.ID), e.Event, e.Data})
	}
	if fmt.Sprint(polled) != fmt.Sprint(streamed) {
		t.Errorf("poll=1 and the stream disagree on the same events:\npoll   %v\nstream %v", polled, streamed)
	}
	if poll.LastEventID != strconv.FormatUint(p2, 10) {
		t.Errorf("poll=1: last_event_id %s, want %d", poll.LastEventID, p2)
	}
}
