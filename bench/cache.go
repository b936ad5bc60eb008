package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/pipeline/paircache"
	"github.com/rerank/rerank/schemas"
)

// repeatStream is a stream of jobs of 20 candidates (~40 words) in which
// a fraction repeat of the pairs repeat an earlier job's pair (the same
// query and passage, as a re-submitted candidate list or a nightly
// backfill brings them), the rest new; repeats is how many did.
func repeatStream(r *rand.Rand, jobs int, repeat float64) (out []*schemas.Job, pairs, repeats int) {
	pool := makeJob(r, "pool", jobs*20, 40).Candidates
	queries := []string{"what is the capital of france", "how do vaccines train the immune system"}
	used := map[string][]schemas.Candidate{} // by query
	next := 0
	for j := range jobs {
		q := queries[j%len(queries)]
		job := &schemas.Job{ID: fmt.Sprint("cache-", j), Query: q}
		seen := map[string]bool{}
		for len(job.Candidates) < 20 {
			prev := used[q]
			again := len(prev) >= 40 && float64(repeats) < repeat*float64(pairs+1)
			var cand schemas.Candidate
			if again {
				if cand = prev[r.IntN(len(prev))]; seen[cand.Text] {
					continue
				}
			} else {
				cand = pool[next]
				next++
				used[q] = append(used[q], cand)
			}
			seen[cand.Text] = true
			cand.ID = fmt.Sprint(len(job.Candidates))
			job.Candidates = append(job.Candidates, cand)
			pairs++
			if again {
				repeats++
			}
		}
		out = append(out, job)
	}
	return out, pairs, repeats
}

// benchCache: pairs/s on streams where 0 %, 50 % and 90 % of the pairs
// repeat earlier ones, with the pair cache (a fresh one each run) against
// without, runs interleaved: cache_speedup_50, cache_speedup_90, and
// cache_miss_overhead (with no repeats, off ÷ on: 1.0 costs nothing, 1.02
// is 2 % slower with the cache).
func benchCache(ctx context.Context, c config, m *model.Model, r *rand.Rand) error {
	for _, tc := range []struct {
		name   string
		repeat float64
	}{{"cache_miss_overhead", 0}, {"cache_speedup_50", 0.5}, {"cache_speedup_90", 0.9}} {
		jobs, pairs, repeats := repeatStream(r, 40, tc.repeat)
		rate := func(cached bool) (float64, error) {
			cfg := pipeline.Config{}
			if cached {
				cfg.Cache = paircache.New(64 << 20)
			}
			p, err := newPipeline(m, cfg)
			if err != nil {
				return 0, err
			}
			defer p.Close()
			// As a worker takes them: up to 8 jobs at once, in order.
			return measure(1, pairs, func() error {
				slots := make(chan struct{}, 8)
				errs := make(chan error, len(jobs))
				var wg sync.WaitGroup
				for _, j := range jobs {
					slots <- struct{}{}
					wg.Go(func() {
						defer func() { <-slots }()
						res, err := p.Rerank(ctx, "bench", j, time.Time{})
						if err == nil && res.Error != nil {
							err = res.Error
						}
						errs <- err
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						return err
					}
				}
				return nil
			})
		}
		var ratios []float64
		for run := range c.runs {
			var on, off float64
			var err error
			if run%2 == 0 {
				if on, err = rate(true); err == nil {
					off, err = rate(false)
				}
			} else if off, err = rate(false); err == nil {
				on, err = rate(true)
			}
			if err != nil {
				return err
			}
			if tc.repeat == 0 {
				ratios = append(ratios, off/on)
			} else {
				ratios = append(ratios, on/off)
			}
		}
		line(tc.name, median(ratios), "×")
		fmt.Printf("# %s: %d jobs, %d pairs, %.0f%% of them repeats\n", tc.name, len(jobs), pairs, 100*float64(repeats)/float64(pairs))
	}
	return nil
}
