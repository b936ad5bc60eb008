package eval

import (
	"cmp"
	"errors"
	"math"
	"slices"

	"github.com/rerank/rerank/schemas"
)

// Agreement compares two score lists over the same candidates, such as an
// int8 model's against its fp32 original's.
type Agreement struct {
	N        int     // candidates
	Spearman float64 // Spearman's ρ of the scores (average ranks for ties)
	Kendall  float64 // Kendall's τ-b of the scores
	MaxDiff  float64 // max |a[i] − b[i]|
	TopKSame int     // how many of a's 10 best are among b's 10 best
}

// ErrAgreementInput reports score lists Compare cannot compare.
var ErrAgreementInput = errors.New("agreement needs two score lists of the same length, at least 2, without NaN")

// Compare measures how closely b ranks the candidates as a does.
func Compare(a, b []float64) (Agreement, error) {
	n := len(a)
	if n != len(b) || n < 2 {
		return Agreement{}, ErrAgreementInput
	}
	ag := Agreement{N: n}
	for i := range a {
		if math.IsNaN(a[i]) || math.IsNaN(b[i]) {
			return Agreement{}, ErrAgreementInput
		}
		ag.MaxDiff = max(ag.MaxDiff, math.Abs(a[i]-b[i]))
	}
	ag.Spearman = pearson(ranks(a), ranks(b))
	ag.Kendall = kendallTauB(a, b)
	top := func(s []float64) map[int]bool {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(x, y int) int { return cmp.Compare(s[y], s[x]) })
		m := map[int]bool{}
		for _, i := range idx[:min(10, n)] {
			m[i] = true
		}
		return m
	}
	ta, tb := top(a), top(b)
	for i := range ta {
		if tb[i] {
			ag.TopKSame++
		}
	}
	return ag, nil
}

// CandidateScores returns a result's scores in candidate order (the job's
// n candidates; those the result leaves out, as with top_n, score 0).
func CandidateScores(res *schemas.Result, n int) []float64 {
	out := make([]float64, n)
	for _, r := range res.Results {
		if r.Index >= 0 && r.Index < n {
			out[r.Index] = r.RelevanceScore
		}
	}
	return out
}

// ranks gives each value its 1-based rank, ties sharing their average rank.
func ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(i, j int) int { return cmp.Compare(x[i], x[j]) })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && x[idx[j+1]] == x[idx[i]] {
			j++
		}
		avg := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			r[idx[k]] = avg
		}
		i = j + 1
	}
	return r
}

func pearson(x, y []float64) float64 {
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= float64(len(x))
	my /= float64(len(y))
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return math.NaN()
	}
	return sxy / math.Sqrt(sxx*syy)
}

// kendallTauB is τ-b = (C − D) / √((n0 − n1)(n0 − n2)), counting every pair
// (O(n²): agreement samples are a few thousand candidates at most).
func kendallTauB(x, y []float64) float64 {
	var conc, disc, tieX, tieY float64
	for i := range x {
		for j := i + 1; j < len(x); j++ {
			dx, dy := cmp.Compare(x[i], x[j]), cmp.Compare(y[i], y[j])
			switch {
			case dx == 0 && dy == 0:
			case dx == 0:
				tieX++
			case dy == 0:
				tieY++
			case dx == dy:
				conc++
			default:
				disc++
			}
		}
	}
	den := math.Sqrt((conc + disc + tieX) * (conc + disc + tieY))
	if den == 0 {
		return math.NaN()
	}
	return (conc - disc) / den
}
