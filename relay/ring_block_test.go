package relay

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
)

// ringWant is what the ring must return for seq in TestRingBlocks.
func ringWant(seq uint64) ringEntry {
	r := rand.New(rand.NewPCG(seq, 7))
	size := r.IntN(200)
	switch r.IntN(20) {
	case 0:
		size = ringBlock/4 + r.IntN(ringBlock) // a block of its own, or most of one
	case 1:
		size = 0
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(seq) + byte(i)
	}
	e := ringEntry{seq: seq, key: "app.f" + strconv.Itoa(int(seq%7)), topic: "t" + strconv.Itoa(int(seq%3)), data: data}
	if seq%2 == 0 {
		e.event = "ev" + strconv.Itoa(int(seq))
	}
	if seq%5 == 0 {
		e.connID, e.connUser = "conn-"+strconv.Itoa(int(seq)), "user"+strconv.Itoa(int(seq%11))
	}
	if seq%13 == 0 {
		e.bad = true
	}
	return e
}

func sameEntry(t *testing.T, got, want ringEntry) {
	t.Helper()
	if got.seq != want.seq || got.key != want.key || got.topic != want.topic || got.event != want.event ||
		got.connID != want.connID || got.connUser != want.connUser || got.bad != want.bad || !bytes.Equal(got.data, want.data) {
		t.Fatalf("entry %d: got key %q topic %q event %q conn %q/%q bad %v, %d bytes of data; want key %q topic %q event %q conn %q/%q bad %v, %d bytes",
			want.seq, got.key, got.topic, got.event, got.connID, got.connUser, got.bad, len(got.data),
			want.key, want.topic, want.event, want.connID, want.connUser, want.bad, len(want.data))
	}
}

// TestRingBlocks pushes entries of every size through a small ring and
// checks that each entry it holds reads back as pushed, that entries taken
// out earlier (as a replay holds them) stay intact while the ring evicts
// and refills, that the feed links still work, and that the blocks of
// evicted entries are let go.
func TestRingBlocks(t *testing.T) {
	const maxBytes = 1 << 20
	g := newRing(500, maxBytes)
	var held []ringEntry
	for seq := uint64(1); seq <= 20000; seq++ {
		g.push(ringWant(seq))
		if seq%97 == 0 {
			held = append(held, g.at(seq))
		}
		if seq%1000 == 0 {
			for s := g.first(); s <= g.last(); s++ {
				sameEntry(t, g.at(s), ringWant(s))
			}
			total := 0
			for _, b := range g.blocks {
				total += cap(b)
			}
			// Live bytes, at most a quarter of each block unused, the
			// oldest block partly evicted and the newest partly filled.
			if limit := 4*maxBytes/3 + 4*ringBlock; total > limit {
				t.Fatalf("after %d pushes the ring holds %d bytes of blocks for at most %d of entries", seq, total, maxBytes)
			}
		}
	}
	for _, e := range held {
		sameEntry(t, e, ringWant(e.seq))
	}
	// The links of a feed, through entries of every size.
	last := g.last()
	for seq, n := g.lastByKey["app.f3"], 0; g.covers(seq); seq, n = g.at(seq).prev, n+1 {
		if seq%7 != 3 || n > 500 {
			t.Fatalf("feed app.f3 links to entry %d", seq)
		}
	}
	if g.at(last).seq != last {
		t.Fatal("at(last) is not the last entry")
	}
	g.push(ringWant(last + 5)) // a gap empties the ring and its blocks
	if g.n != 1 || len(g.blocks) > 1 {
		t.Fatalf("after a gap: %d entries, %d blocks", g.n, len(g.blocks))
	}
	sameEntry(t, g.at(last+5), ringWant(last+5))
}

// TestRingSlotHasNoPointers: the garbage collector must not have to scan
// the ring's slots (see ring).
func TestRingSlotHasNoPointers(t *testing.T) {
	typ := reflect.TypeFor[ringSlot]()
	for i := range typ.NumField() {
		switch k := typ.Field(i).Type.Kind(); k {
		case reflect.Bool, reflect.Uint32, reflect.Uint64, reflect.Int, reflect.Int64, reflect.Uint16, reflect.Uint8:
		default:
			t.Errorf("ringSlot.%s is a %s: the GC would scan every slot", typ.Field(i).Name, k)
		}
	}
}
