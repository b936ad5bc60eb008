package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/pipeline/paircache"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/sharedcache"
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

// repeatOnceStream is like repeatStream, but each repeat brings back a
// pair of a job at least gap jobs earlier (finished by the time it comes
// back, as a re-submitted candidate list or the next night's backfill
// brings it), and no pair comes back twice.
func repeatOnceStream(r *rand.Rand, jobs, gap int, repeat float64) (out []*schemas.Job, pairs, repeats int) {
	pool := makeJob(r, "pool", jobs*20, 40).Candidates
	queries := []string{"what is the capital of france", "how do vaccines train the immune system"}
	byJob := make([][]schemas.Candidate, jobs) // each job's new pairs, not yet repeated
	next := 0
	for j := range jobs {
		q := queries[j%len(queries)]
		job := &schemas.Job{ID: fmt.Sprint("cache-once-", j), Query: q}
		for len(job.Candidates) < 20 {
			var cand schemas.Candidate
			again := false
			if float64(repeats) < repeat*float64(pairs+1) {
				// An earlier job of this query, gap jobs back or more, with
				// a pair not yet repeated.
				var from []int
				for e := j % len(queries); e+gap <= j; e += len(queries) {
					if len(byJob[e]) > 0 {
						from = append(from, e)
					}
				}
				if len(from) > 0 {
					e := from[r.IntN(len(from))]
					k := r.IntN(len(byJob[e]))
					cand, again = byJob[e][k], true
					byJob[e] = append(byJob[e][:k], byJob[e][k+1:]...)
				}
			}
			if !again {
				cand = pool[next]
				next++
				byJob[j] = append(byJob[j], cand)
			}
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
						_, err := answered(p.Rerank(ctx, "bench", j, time.Time{}))
						errs <- err
					})
				}
				wg.Wait()
				close(errs)
				return firstErr(errs)
			})
		}
		ratios, err := onOff(c.runs, rate)
		if err != nil {
			return err
		}
		if tc.repeat == 0 { // the slowdown: off ÷ on
			for i := range ratios {
				ratios[i] = 1 / ratios[i]
			}
		}
		line(tc.name, median(ratios), "×")
		fmt.Printf("# %s: %d jobs, %d pairs, %.0f%% of them repeats\n", tc.name, len(jobs), pairs, 100*float64(repeats)/float64(pairs))
	}
	return nil
}

// benchSharedCache: shared_cache_speedup_50, pairs/s of two workers (two
// pipelines on the model, each with its own process cache, each taking
// half the jobs, chosen at random, in order, up to four at a time) on a
// stream
// where half the pairs repeat earlier ones, when they share the shared
// tier (a JetStream key-value bucket on an embedded server, reached over
// loopback TCP) ÷ when each has its process cache only. Each run starts
// with empty caches and a fresh bucket; runs interleaved.
func benchSharedCache(ctx context.Context, c config, m *model.Model, r *rand.Rand) error {
	dir, err := os.MkdirTemp("", "rerank-bench-kv")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: dir, Name: "bench-kv"})
	if err != nil {
		return err
	}
	defer ns.Stop()
	nc, err := nats.Connect(ns.ClientURL(), nats.ReconnectBufSize(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	buckets := 0
	for _, stream := range []struct {
		name, what string
		jobs       func() ([]*schemas.Job, int, int)
	}{
		{"shared_cache_speedup_50", "each repeat a pair of a job 16 or more jobs back, no pair repeated twice",
			func() ([]*schemas.Job, int, int) { return repeatOnceStream(r, 100, 16, 0.5) }},
		{"shared_cache_speedup_50_uniform", "repeats drawn from all earlier pairs, as cache_speedup_50's (in flight and repeated ones included)",
			func() ([]*schemas.Job, int, int) { return repeatStream(r, 100, 0.5) }},
	} {
		if err := sharedCacheRun(ctx, c, m, r, js, &buckets, stream.name, stream.what, stream.jobs); err != nil {
			return err
		}
	}
	return nil
}

// sharedCacheRun measures one stream of benchSharedCache.
func sharedCacheRun(ctx context.Context, c config, m *model.Model, r *rand.Rand, js jetstream.JetStream, buckets *int, name, what string,
	stream func() ([]*schemas.Job, int, int)) error {
	nc := js.Conn()
	jobs, pairs, repeats := stream()
	// Which worker takes each job: at random, half each, the same in both
	// arms (workers taking jobs as they free up fall into a rhythm of
	// their own in each arm, which decides how often a repeat meets the
	// worker that scored it first). Jobs are handed out in order, each
	// once its worker has one of its 4 slots free.
	assign := make([]int, len(jobs))
	for k, p := range r.Perm(len(jobs)) {
		assign[k] = p % 2
	}
	var (
		lookupMu sync.Mutex
		lookups  []float64 // ms per job's lookup
	)
	var tierStats sharedcache.Stats // over all runs
	onLookup := func(_, _ int, d time.Duration) {
		lookupMu.Lock()
		lookups = append(lookups, float64(d.Microseconds())/1000)
		lookupMu.Unlock()
	}
	reused := map[bool]*atomic.Int64{true: {}, false: {}} // pairs taken from a cache, over all runs
	rate := func(shared bool) (float64, error) {
		var workers [2]*pipeline.Pipeline
		for w := range workers {
			cfg := pipeline.Config{Cache: paircache.New(64 << 20)}
			if shared {
				*buckets++
				sc := sharedcache.Config{Bucket: fmt.Sprint("bench-", *buckets), OnLookup: onLookup}
				if w == 0 {
					if err := sharedcache.Provision(ctx, js, sc); err != nil {
						return 0, err
					}
				} else {
					sc.Bucket = fmt.Sprint("bench-", *buckets-1)
				}
				tier, err := sharedcache.New(nc, sc, nil)
				if err != nil {
					return 0, err
				}
				defer func() {
					st := tier.Stats()
					tierStats.Lookups += st.Lookups
					tierStats.Hits += st.Hits
					tierStats.Skipped += st.Skipped
					tierStats.Errors += st.Errors
				}()
				cfg.Shared = tier
			}
			p, err := newPipeline(m, cfg)
			if err != nil {
				return 0, err
			}
			defer p.Close()
			workers[w] = p
		}
		return measure(1, pairs, func() error {
			errs := make(chan error, len(jobs))
			var wg sync.WaitGroup
			var queues [2]chan *schemas.Job
			for w, p := range workers {
				queue := make(chan *schemas.Job)
				queues[w] = queue
				for range 4 {
					wg.Go(func() {
						for j := range queue {
							res, err := answered(p.Rerank(ctx, "bench", j, time.Time{}))
							if err == nil {
								reused[shared].Add(int64(res.Cached))
							}
							errs <- err
						}
					})
				}
			}
			for k, j := range jobs { // in order, each when its worker has a slot free
				queues[assign[k]] <- j
			}
			for _, q := range queues {
				close(q)
			}
			wg.Wait()
			close(errs)
			return firstErr(errs)
		})
	}
	ratios, err := onOff(c.runs, rate)
	if err != nil {
		return err
	}
	line(name, median(ratios), "×")
	fmt.Printf("# %s: 2 workers, %d jobs, %d pairs, %.0f%% of them repeats (%s); taken from a cache: %.0f%% with the shared tier, %.0f%% with process caches only\n",
		name, len(jobs), pairs, 100*float64(repeats)/float64(pairs), what,
		100*float64(reused[true].Load())/float64(pairs*c.runs), 100*float64(reused[false].Load())/float64(pairs*c.runs))
	fmt.Printf("# %s: the shared bucket over all runs: %d pairs looked up, %d found, %d skipped (backoff), %d errors\n",
		name, tierStats.Lookups, tierStats.Hits, tierStats.Skipped, tierStats.Errors)
	slices.Sort(lookups)
	if n := len(lookups); n > 0 {
		fmt.Printf("# %s: a job's lookup in the shared bucket (its pairs the process cache missed, 64 in flight): median %.2f ms, p95 %.2f ms over %d jobs\n",
			name, lookups[n/2], lookups[n*95/100], n)
	}
	return nil
}

// onOff measures rate with the feature on and off, runs times, the order
// alternating from run to run, and returns each run's on ÷ off.
func onOff(runs int, rate func(on bool) (float64, error)) ([]float64, error) {
	var ratios []float64
	for run := range runs {
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
			return nil, err
		}
		ratios = append(ratios, on/off)
	}
	return ratios, nil
}
