package calibrate

import (
	"math"
	"testing"

	"github.com/rerank/rerank/model/quantize"
)

// TestStatsObserve: values are folded per channel (the last dimension),
// non-finite ones skipped; an output of an unusable shape is an error, and
// a changed last dimension too.
func TestStatsObserve(t *testing.T) {
	s := &stats{ranges: map[string]*quantize.Range{}, counts: map[string][]int{}}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	s.observe("x", []int64{1, 2, 3}, []float32{1, -2, 3, 4, nan, inf})
	s.observe("x", []int64{1, 1, 3}, []float32{-1, 5, 0})
	if s.bad != nil {
		t.Fatal(s.bad)
	}
	r := s.ranges["x"]
	if r.Rows != 3 || r.ChannelMin[0] != -1 || r.ChannelMax[0] != 4 || r.ChannelMin[1] != -2 || r.ChannelMax[1] != 5 || r.ChannelMin[2] != 0 || r.ChannelMax[2] != 3 {
		t.Fatalf("range %+v", *r)
	}
	if got := s.counts["x"]; got[0] != 3 || got[1] != 2 || got[2] != 2 || r.ChannelMean[1] != 3 {
		t.Fatalf("counts %v, sums %v", got, r.ChannelMean)
	}
	for _, tc := range []struct {
		shape []int64
		n     int
	}{{nil, 3}, {[]int64{2, 0}, 0}, {[]int64{1, 4}, 3}, {[]int64{1, 2}, 0}, {[]int64{1, 1 << 40}, 2}} {
		b := &stats{ranges: map[string]*quantize.Range{}, counts: map[string][]int{}}
		b.observe("y", tc.shape, make([]float32, tc.n))
		if b.bad == nil || len(b.ranges) != 0 {
			t.Errorf("shape %v with %d values: no error", tc.shape, tc.n)
		}
	}
	s.observe("x", []int64{1, 4}, make([]float32, 4))
	if s.bad == nil {
		t.Error("a changed last dimension went unnoticed")
	}
}
