package bench

import (
	"context"
	"fmt"
	"slices"
	"sort"
)

// checkMain checks the main streams once they have ended.
func (r *runner) checkMain(d *deliveryReport, main []*stream) {
	drops := make(map[string]int)
	for _, s := range main {
		if !s.connected {
			continue
		}
		d.Streams++
		c := check(s, r.feeds[s.feed].seqs)
		d.Counts.add(c)
		if c.Missing+c.Duplicate+c.OutOfOrder+c.Stale+c.BadID+c.Resets > 0 && len(d.Problems) < 5 {
			d.Problems = append(d.Problems, fmt.Sprintf("user %s (position %d): %s", s.user, s.base, countsText(c)))
		}
		if s.err != nil {
			d.Dropped++
			drops[oneLine(s.err.Error())]++
		}
	}
	d.DropErrors = kinds(drops)
	if d.Seconds > 0 {
		d.PerSecond = float64(d.Counts.Received) / d.Seconds
	}
}

func (r *runner) verdict(rep *Report, ctx context.Context) {
	var f []string
	if ctx.Err() != nil {
		f = append(f, "interrupted: "+ctx.Err().Error())
	}
	if c := rep.Connect; c != nil && c.Failed > 0 {
		f = append(f, fmt.Sprintf("%d of %d streams failed to connect", c.Failed, c.Requested))
	}
	pubErrors := int64(0)
	if p := rep.Publish; p != nil {
		pubErrors = p.Errors
		if p.Acked == 0 {
			f = append(f, "no event was acknowledged")
		}
	}
	bad := func(what string, c tally, errs int64) {
		if c.Missing > 0 {
			f = append(f, fmt.Sprintf("%s: %d events missing", what, c.Missing))
		}
		if c.Duplicate > 0 {
			f = append(f, fmt.Sprintf("%s: %d events duplicated", what, c.Duplicate))
		}
		if c.OutOfOrder > 0 {
			f = append(f, fmt.Sprintf("%s: %d events out of order", what, c.OutOfOrder))
		}
		if c.Unexpected > 0 && errs == 0 {
			f = append(f, fmt.Sprintf("%s: %d events with ids never acknowledged", what, c.Unexpected))
		}
		if c.Stale > 0 || c.BadID > 0 {
			f = append(f, fmt.Sprintf("%s: %d events at or below the stream's position, %d without a usable id", what, c.Stale, c.BadID))
		}
		if c.Resets > 0 {
			f = append(f, fmt.Sprintf("%s: %d sserelay.reset events", what, c.Resets))
		}
	}
	if d := rep.Delivery; d != nil {
		bad("live", d.Counts, pubErrors)
		if d.Dropped > 0 {
			f = append(f, fmt.Sprintf("%d streams dropped during the run", d.Dropped))
		}
	}
	if s := rep.Storm; s != nil {
		bad("resume storm", s.Counts, 0)
		if s.Failed > 0 || s.Completed < s.Clients {
			f = append(f, fmt.Sprintf("resume storm: %d of %d clients caught up", s.Completed, s.Clients))
		}
	}
	if s := rep.Resume; s != nil {
		bad("resume", s.Counts, 0)
		if !s.Completed {
			f = append(f, "resume: the client did not catch up: "+s.Error)
		}
	}
	ch := &rep.Checked
	if d := rep.Delivery; d != nil {
		ch.Streams += d.Streams
		ch.Counts.add(d.Counts)
	}
	if s := rep.Storm; s != nil {
		ch.Streams += s.checked
		ch.Counts.add(s.Counts)
	}
	if s := rep.Resume; s != nil {
		ch.Streams++
		ch.Counts.add(s.Counts)
	}
	rep.Failures = f
	if rep.Failures == nil {
		rep.Failures = []string{}
	}
	rep.OK = len(f) == 0
}

// tally is the correctness tally of one or more streams against the
// sequences acknowledged for their feeds.
type tally struct {
	Expected   int64 `json:"expected"`     // acknowledged events of the stream's feed above its position
	Received   int64 `json:"received"`     // events received
	Missing    int64 `json:"missing"`      // expected but never received
	Duplicate  int64 `json:"duplicate"`    // received more than once (extra copies)
	OutOfOrder int64 `json:"out_of_order"` // received after an event with a higher id
	Unexpected int64 `json:"unexpected"`   // ids never acknowledged for the feed (a publish that failed may still be stored)
	Stale      int64 `json:"stale"`        // ids at or below the stream's position (Last-Event-ID or connect cursor)
	BadID      int64 `json:"bad_id"`       // events without a usable id
	Resets     int64 `json:"resets"`       // sserelay.reset events
}

func (c *tally) add(o tally) {
	c.Expected += o.Expected
	c.Received += o.Received
	c.Missing += o.Missing
	c.Duplicate += o.Duplicate
	c.OutOfOrder += o.OutOfOrder
	c.Unexpected += o.Unexpected
	c.Stale += o.Stale
	c.BadID += o.BadID
	c.Resets += o.Resets
}

// check compares what stream s received with seqs, the sorted sequences
// acknowledged for its feed. It runs after the stream's goroutine ended.
func check(s *stream, seqs []uint64) tally {
	c := tally{Received: int64(len(s.got)), Stale: int64(s.stale), BadID: int64(s.badSeq), Resets: int64(s.resets)}
	k := sort.Search(len(seqs), func(i int) bool { return seqs[i] > s.base })
	exp := seqs[k:]
	c.Expected = int64(len(exp))

	got := s.got
	sorted := true
	var hi uint32
	for i, v := range got {
		if i > 0 && v <= got[i-1] {
			sorted = false
		}
		if v < hi {
			c.OutOfOrder++
		}
		hi = max(hi, v)
	}
	if !sorted {
		got = slices.Clone(got)
		slices.Sort(got)
	}
	i, j := 0, 0
	for i < len(got) || j < len(exp) {
		if i > 0 && i < len(got) && got[i] == got[i-1] {
			c.Duplicate++
			i++
			continue
		}
		switch {
		case j == len(exp) || (i < len(got) && s.base+uint64(got[i]) < exp[j]):
			c.Unexpected++
			i++
		case i == len(got) || s.base+uint64(got[i]) > exp[j]:
			c.Missing++
			j++
		default:
			i++
			j++
		}
	}
	return c
}
