package bench

import (
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// The latency histogram is log-linear, like HdrHistogram: values below 128 ns
// have a bucket each, and every power of two above is split into 64 buckets,
// so a quantile is off by at most 1/64 (1.6 %). Memory is fixed whatever the
// number of samples.
const (
	subBits    = 6
	subCount   = 1 << subBits // buckets per power of two
	linearTop  = 2 * subCount // values below it have a bucket each
	maxExp     = 40           // 2^40 ns ≈ 18 min: larger values go in the last bucket
	numBuckets = linearTop + (maxExp-subBits-1)*subCount
	histShards = 16
)

func bucketOf(v int64) int {
	if v < linearTop {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	msb := bits.Len64(uint64(v)) - 1 // ≥ subBits+1
	if msb >= maxExp {
		return numBuckets - 1
	}
	shift := msb - subBits
	return linearTop + (msb-subBits-1)*subCount + int(uint64(v)>>shift) - subCount
}

// bucketMid returns the middle of bucket i.
func bucketMid(i int) int64 {
	if i < linearTop {
		return int64(i)
	}
	j := i - linearTop
	msb := j/subCount + subBits + 1
	shift := msb - subBits
	lo := int64(j%subCount+subCount) << shift
	return lo + (int64(1)<<shift)/2
}

// hist is a histogram of durations in nanoseconds that many goroutines
// record into at once: sharded so that they rarely share a cache line.
type hist struct {
	shards [histShards]histShard
}

type histShard struct {
	counts [numBuckets]atomic.Uint64
	max    atomic.Int64
	sum    atomic.Int64
	_      [64]byte
}

func newHist() *hist { return &hist{} }

// record adds v (ns) to the shard chosen by the caller (a stream index).
func (h *hist) record(shard int, v int64) {
	s := &h.shards[shard&(histShards-1)]
	s.counts[bucketOf(v)].Add(1)
	s.sum.Add(v)
	for {
		m := s.max.Load()
		if v <= m || s.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// latency summarises a histogram in milliseconds.
type latency struct {
	Count  uint64  `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func ms(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }

// summary merges the shards and returns the quantiles.
func (h *hist) summary() latency {
	var counts [numBuckets]uint64
	var n uint64
	var sum, mx int64
	for i := range h.shards {
		s := &h.shards[i]
		for b := range counts {
			k := s.counts[b].Load()
			counts[b] += k
			n += k
		}
		sum += s.sum.Load()
		mx = max(mx, s.max.Load())
	}
	if n == 0 {
		return latency{}
	}
	q := func(p float64) float64 {
		rank := uint64(p*float64(n) + 0.5)
		rank = min(max(rank, 1), n)
		var c uint64
		for b, k := range counts {
			if c += k; c >= rank {
				return ms(min(bucketMid(b), mx))
			}
		}
		return ms(mx)
	}
	return latency{
		Count: n, MeanMs: ms(sum / int64(n)),
		P50Ms: q(0.50), P90Ms: q(0.90), P99Ms: q(0.99), P999Ms: q(0.999), MaxMs: ms(mx),
	}
}

// durations summarises a small set of exact samples (catch-up times).
func durationSummary(ds []time.Duration) latency {
	if len(ds) == 0 {
		return latency{}
	}
	s := append([]time.Duration(nil), ds...)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	at := func(p float64) float64 {
		i := int(p*float64(len(s))+0.5) - 1
		i = min(max(i, 0), len(s)-1)
		return ms(int64(s[i]))
	}
	return latency{
		Count: uint64(len(s)), MeanMs: ms(int64(sum) / int64(len(s))),
		P50Ms: at(0.5), P90Ms: at(0.9), P99Ms: at(0.99), P999Ms: at(0.999), MaxMs: ms(int64(s[len(s)-1])),
	}
}
