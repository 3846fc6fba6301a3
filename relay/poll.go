package relay

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// eventSourceData returns data as an EventSource delivers it: CRLF and CR
// become LF, since the stream splits data lines on all three.
func eventSourceData(b []byte) string {
	if !bytes.ContainsRune(b, '\r') {
		return string(b)
	}
	return strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(b))
}

var (
	errPollBusy = errors.New("no replay slot for the poll")
	errPageFull = errors.New("poll page full")
)

// servePoll answers poll=1: the events after last_event_id, one page, as JSON.
func (r *Relay) servePoll(w http.ResponseWriter, req *http.Request, sr *streamRequest) {
	type pollEvent struct {
		ID    string `json:"id"`
		Event string `json:"event,omitempty"`
		Data  string `json:"data"`
	}
	resp := struct {
		Events      []pollEvent `json:"events"`
		LastEventID string      `json:"last_event_id"`
		Reset       string      `json:"reset,omitempty"`
	}{Events: []pollEvent{}}
	s := newSession(r, sr.connID, sr.claims.Subject, sr.app, sr.feeds, sr.topics) // for its filter only: never registered
	c := r.Cursor()
	last := c
	switch {
	case !sr.hasID:
	case sr.lastID > c:
		ls, err := r.lastSeq(req.Context())
		if err != nil {
			r.storeUnavailable(w, req, "poll stream info", err)
			return
		}
		if sr.lastID > ls {
			resp.Reset = ResetUnknownID
		} else {
			last = sr.lastID
		}
	case sr.lastID == c:
		last = c // nothing new: no read
	default:
		// A poll reads the store as a resume does: it takes a replay slot,
		// so that a flood of polls cannot hold more memory than MaxReplays
		// resumes, nor starve them. A poll does not wait long for one.
		timer := time.NewTimer(pollSlotWait)
		err := r.takeReplaySlot(req.Context(), sr.claims.Subject, timer.C, func() error { return errPollBusy })
		timer.Stop()
		if err != nil {
			if errors.Is(err, errPollBusy) {
				r.metrics.limited[limitPollReplay].Inc()
				w.Header().Set("Retry-After", retryAfter(r.cfg.Retry))
				writeError(w, http.StatusServiceUnavailable, "busy: no replay slot free, retry later")
			}
			return // the client left, or the relay drains
		}
		defer r.releaseReplaySlot(sr.claims.Subject)
		last = sr.lastID
		full, size := false, 0
		_, err = r.replay(req.Context(), s.filter(), sr.lastID, c, r.cfg.PollPage, func(ev storedEvent) error {
			// A page holds PollPageBytes of data, and at least one event.
			if size += len(ev.data) + len(ev.event); size > r.cfg.PollPageBytes && len(resp.Events) > 0 {
				full = true
				return errPageFull
			}
			resp.Events = append(resp.Events, pollEvent{ID: strconv.FormatUint(ev.seq, 10), Event: ev.event, Data: eventSourceData(ev.data)})
			last = ev.seq
			return nil
		})
		if errors.Is(err, errPageFull) {
			err = nil
		}
		full = full || len(resp.Events) >= r.cfg.PollPage
		switch {
		case errors.Is(err, errHistoryGone):
			resp.Events, resp.Reset, last = []pollEvent{}, ResetHistoryGone, c
		case err != nil:
			r.storeUnavailable(w, req, "poll replay", err)
			return
		case !full:
			last = c // nothing more up to the cursor
		}
	}
	resp.LastEventID = strconv.FormatUint(last, 10)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Connection-Id", sr.connID)
	writeJSON(w, http.StatusOK, resp)
}

// storeUnavailable answers a poll whose store read failed: 503 with
// Retry-After, saying whether NATS is down, which a client cannot tell
// from a slow store otherwise.
func (r *Relay) storeUnavailable(w http.ResponseWriter, req *http.Request, what string, err error) {
	if req.Context().Err() != nil {
		return // the client left: nobody to answer, nothing wrong with the store
	}
	r.log.Warn(what, "err", err)
	w.Header().Set("Retry-After", retryAfter(r.cfg.Retry))
	if errors.Is(err, errNATSDown) {
		writeError(w, http.StatusServiceUnavailable, "event store unavailable (NATS not connected): retry later")
		return
	}
	writeError(w, http.StatusServiceUnavailable, "event store unavailable: retry later")
}
