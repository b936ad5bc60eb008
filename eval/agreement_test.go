package eval

import (
	"errors"
	"math"
	"testing"

	"github.com/rerank/rerank/schemas"
)

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		name              string
		a, b              []float64
		spearman, kendall float64
		maxDiff           float64
	}{
		{"identical", []float64{1, 2, 3, 4}, []float64{1, 2, 3, 4}, 1, 1, 0},
		{"monotone transform", []float64{1, 2, 3, 4}, []float64{10, 20, 30, 45}, 1, 1, 41},
		{"reversed", []float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}, -1, -1, 3},
		// One swap of adjacent items out of 6 pairs: τ = (5-1)/6; ρ = 1 - 6·2/(4·15) = 0.8.
		{"one swap", []float64{1, 2, 3, 4}, []float64{1, 3, 2, 4}, 0.8, 4.0 / 6, 1},
		// Ties in b: scipy.stats.kendalltau([1,2,3,4],[1,1,2,3]) = 0.9128709; spearmanr = 0.9486833.
		{"ties", []float64{1, 2, 3, 4}, []float64{1, 1, 2, 3}, 0.9486833, 0.9128709, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ag, err := Compare(tc.a, tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(ag.Spearman-tc.spearman) > 1e-6 || math.Abs(ag.Kendall-tc.kendall) > 1e-6 || math.Abs(ag.MaxDiff-tc.maxDiff) > 1e-12 || ag.N != len(tc.a) {
				t.Fatalf("got %+v, want ρ %v τ %v max diff %v", ag, tc.spearman, tc.kendall, tc.maxDiff)
			}
		})
	}
	a := make([]float64, 30)
	for i := range a {
		a[i] = float64(i)
	}
	ag, _ := Compare(a, a)
	if ag.TopKSame != 10 {
		t.Fatalf("top-10 overlap %d", ag.TopKSame)
	}
	for _, bad := range [][2][]float64{{{1}, {1}}, {{1, 2}, {1}}, {{1, math.NaN()}, {1, 2}}} {
		if _, err := Compare(bad[0], bad[1]); !errors.Is(err, ErrAgreementInput) {
			t.Fatalf("%v: err %v", bad, err)
		}
	}
}

func TestCandidateScores(t *testing.T) {
	res := &schemas.Result{Results: []schemas.Ranked{{Index: 2, RelevanceScore: 0.9}, {Index: 0, RelevanceScore: 0.5}, {Index: 7, RelevanceScore: 1}}}
	got := CandidateScores(res, 3)
	if len(got) != 3 || got[0] != 0.5 || got[1] != 0 || got[2] != 0.9 {
		t.Fatalf("%v", got)
	}
}
