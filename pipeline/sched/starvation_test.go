package sched_test

import (
	"testing"
	"time"

	"github.com/rerank/rerank/pipeline/sched"
	"github.com/rerank/rerank/schemas"
)

// perPair is the model time of one pair: 0.64 s for 1,024 pairs, the
// reference model alone.
const perPair = 625 * time.Microsecond

// saturation drives a policy with a simulated clock: one scoring slot,
// each call costing perPair per pair, a job of smallPairs arriving every
// smallPairs×perPair/load (load 1 offers exactly the model's capacity),
// and after warmup the big request. It returns how long the big request
// took from its arrival until its last call ended, and the pairs that
// waited when it arrived; ok is false when it was not done within limit.
func saturation(cfg sched.Config, big *sched.Request, small sched.Request, load float64, warmup, limit time.Duration) (took time.Duration, waiting int, ok bool) {
	p := sched.New(cfg)
	every := time.Duration(float64(small.Pairs) * float64(perPair) / load)
	bigAt, nextSmall, now := t0.Add(warmup), t0, t0
	added := false
	for {
		for !nextSmall.After(now) {
			r := small
			r.Arrived = nextSmall
			p.Add(&r, now)
			nextSmall = nextSmall.Add(every)
		}
		if !added && !bigAt.After(now) {
			waiting = p.Pending()
			big.Arrived = bigAt
			p.Add(big, now)
			added = true
		}
		_, chunks := p.Next(now)
		if chunks == nil {
			now = nextSmall
			if !added && bigAt.Before(now) {
				now = bigAt
			}
			continue
		}
		for _, c := range chunks {
			now = now.Add(time.Duration(c.Hi-c.Lo) * perPair)
		}
		if added && big.Remaining() == 0 {
			return now.Sub(bigAt), waiting, true
		}
		if added && now.Sub(bigAt) > limit {
			return now.Sub(bigAt), waiting, false
		}
	}
}

// lengths returns n token counts of value l.
func lengths(n, l int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = l
	}
	return out
}

// A big job under a small-job load that fills the model finishes within
// the package's starvation bound, about 3 times its run time alone at the
// defaults (4 where its pairs are longer than the small jobs'), however its
// chunks and the small jobs interleave. Before the bound, a job's aging
// credit restarted at each chunk: a 1,024-pair job took 359 times its run
// time alone, a 4,096-pair job 1,409 times (an hour), and one whose pairs
// were longer than the small jobs' had not finished after 3 hours.
func TestBigJobFinishesWithinItsStarvationBound(t *testing.T) {
	const workAging = 0.5 // the default
	tests := []struct {
		name  string
		big   *sched.Request
		small sched.Request
		load  float64
		// longer: the big job's pairs are longer than the small jobs', so
		// the window may give later jobs' pairs before its own.
		longer bool
	}{
		{
			name:  "1,024 pairs under small jobs at 100 % of capacity",
			big:   req(schemas.Interactive, 1024),
			small: sched.Request{Lane: schemas.Interactive, Pairs: 8},
			load:  1,
		},
		{
			name:  "4,096 pairs under small jobs at 100 % of capacity",
			big:   req(schemas.Interactive, 4096),
			small: sched.Request{Lane: schemas.Interactive, Pairs: 8},
			load:  1,
		},
		{
			name:  "4,096 pairs under small jobs at 125 % of capacity",
			big:   req(schemas.Interactive, 4096),
			small: sched.Request{Lane: schemas.Interactive, Pairs: 8},
			load:  1.25,
		},
		{
			name:  "4,096 bulk pairs under small bulk jobs at 100 % of capacity",
			big:   req(schemas.Bulk, 4096),
			small: sched.Request{Lane: schemas.Bulk, Pairs: 8},
			load:  1,
		},
		{
			// Its last pairs are its longest: small jobs' shorter pairs must
			// not take every call once its rest fits the window.
			name:   "1,024 pairs longer than the small jobs' under 100 %",
			big:    &sched.Request{Lane: schemas.Interactive, Pairs: 1024, Lengths: lengths(1024, 200)},
			small:  sched.Request{Lane: schemas.Interactive, Pairs: 8, Lengths: lengths(8, 20)},
			load:   1,
			longer: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			P := tt.big.Pairs
			alone := time.Duration(P) * perPair
			took, waiting, ok := saturation(sched.Config{}, tt.big, tt.small, tt.load, time.Second, 4*alone+time.Second)
			// The package doc's K.
			k := 1 + tt.load/workAging + float64(waiting+sched.DefaultBatchPairs)/float64(P)
			if tt.longer {
				k = 2 + (2*tt.load-1)/workAging + float64(2*waiting+sched.DefaultBatchPairs)/float64(P)
			}
			t.Logf("%d pairs: %v under load, %v alone: %.2f× (bound %.2f×, %d pairs waiting on arrival)",
				P, took, alone, float64(took)/float64(alone), k, waiting)
			if !ok {
				t.Fatalf("not done after %v, %.0f× its %v alone (bound %.2f×)", took, float64(took)/float64(alone), alone, k)
			}
			if bound := time.Duration(k * float64(alone)); took > bound {
				t.Fatalf("took %v, over the bound %v (%.2f× its %v alone)", took, bound, k, alone)
			}
		})
	}
}
