package bench

import (
	"slices"
	"sort"
)

// Counts is the correctness tally of one or more streams against the
// sequences acknowledged for their feeds.
type Counts struct {
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

func (c *Counts) add(o Counts) {
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
func check(s *stream, seqs []uint64) Counts {
	c := Counts{Received: int64(len(s.got)), Stale: int64(s.stale), BadID: int64(s.badSeq), Resets: int64(s.resets)}
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
