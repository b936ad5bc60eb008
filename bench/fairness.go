package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

// benchLatencyUnderBulk: 10-candidate interactive jobs arriving one a
// second while a 4,000-candidate bulk job runs, against the same number of
// small jobs on an idle pipeline and the bulk job alone. Each run does the
// three in turn (mixed, idle, alone), so they see the same machine.
func benchLatencyUnderBulk(ctx context.Context, c config, m *model.Model, r *rand.Rand) error {
	p, err := newPipeline(m, pipeline.Config{})
	if err != nil {
		return err
	}
	defer p.Close()
	rerank := func(j *schemas.Job) (time.Duration, error) {
		start := time.Now()
		_, err := answered(p.Rerank(ctx, "bench", j, time.Time{}))
		return time.Since(start), err
	}
	var p99s, p50s, slowdowns []float64
	for run := range c.fairnessRuns {
		bulk := makeJob(r, fmt.Sprintf("bulk-%d", run), 4000, 12)
		bulk.Lane = schemas.Bulk
		small := func(i int) *schemas.Job {
			j := makeJob(rand.New(rand.NewPCG(uint64(run), uint64(i))), fmt.Sprintf("small-%d-%d", run, i), 10, 40)
			j.Lane = schemas.Interactive
			return j
		}
		// Odd runs take the bulk job alone first, so that a drift of the
		// machine's speed over a run does not favour one side.
		var alone time.Duration
		if run%2 == 1 {
			if alone, err = rerank(bulk); err != nil {
				return err
			}
		}
		// Mixed: small jobs arrive one a second for as long as the bulk job runs.
		bulkDone := make(chan struct{})
		var bulkTime time.Duration
		var bulkErr error
		go func() { bulkTime, bulkErr = rerank(bulk); close(bulkDone) }()
		var mu sync.Mutex
		var mixed []float64
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second)
		n := 0
	arrivals:
		for {
			select {
			case <-bulkDone:
				break arrivals
			case <-tick.C:
				wg.Add(1)
				j := small(n)
				n++
				go func() {
					defer wg.Done()
					d, err := rerank(j)
					if err != nil {
						fmt.Fprintln(os.Stderr, "bench: small job:", err)
						return
					}
					mu.Lock()
					mixed = append(mixed, ms(d))
					mu.Unlock()
				}()
			}
		}
		tick.Stop()
		wg.Wait()
		if bulkErr != nil {
			return bulkErr
		}
		if len(mixed) == 0 {
			return fmt.Errorf("the bulk job took %s: no small job arrived while it ran", bulkTime)
		}
		// Idle: the same small jobs, one a second, alone.
		var idle []float64
		var idleSum time.Duration
		for i := range n {
			d, err := rerank(small(i))
			if err != nil {
				return err
			}
			idle = append(idle, ms(d))
			idleSum += d
			time.Sleep(max(0, time.Second-d))
		}
		// The bulk job alone.
		if run%2 == 0 {
			if alone, err = rerank(bulk); err != nil {
				return err
			}
		}
		p99s = append(p99s, percentile(mixed, 0.99))
		p50s = append(p50s, percentile(idle, 0.5))
		slowdowns = append(slowdowns, bulkTime.Seconds()/(alone+idleSum).Seconds())
		fmt.Printf("# latency under bulk, run %d: %d small jobs; bulk %.1f s with them, %.1f s alone; small p50/p99 %.0f/%.0f ms under bulk, %.0f/%.0f ms idle\n",
			run+1, n, bulkTime.Seconds(), alone.Seconds(), percentile(mixed, 0.5), percentile(mixed, 0.99), percentile(idle, 0.5), percentile(idle, 0.99))
	}
	line("small_job_p99_under_bulk_ms", median(p99s), "ms")
	line("small_job_p50_idle_ms", median(p50s), "ms")
	line("small_job_latency_under_bulk_ratio", median(p99s)/median(p50s), "ratio")
	line("bulk_slowdown", median(slowdowns), "ratio")
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// percentile is the nearest-rank percentile of xs.
func percentile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// benchIdleModels: the throughput of one busy model through a worker that
// serves it alone, and through a worker that also serves 3 idle models (the
// same model directory under other names), interleaved. Both workers get the
// same intra-op threads: the figure measures scheduling, not the division of
// threads between models (docs/operations.md).
func benchIdleModels(ctx context.Context, c config, r *rand.Rand) error {
	ns, stopNATS, err := startNATS()
	if err != nil {
		return err
	}
	defer stopNATS()
	const jobs, candidates = 40, 10
	threads := c.intraOp
	if threads <= 0 {
		threads = runtimeCPUs()
	}
	var alone, withIdle []float64
	for run := range c.idleRuns {
		for _, idle := range []int{0, 3} {
			extra := []string{"--concurrency", "4", "--intra-op-threads", fmt.Sprint(threads), "--intra-op-spin", "on"}
			for i := range idle {
				extra = append(extra, "--model", fmt.Sprintf("idle%d=%s", i, c.modelDir))
			}
			w, err := startWorker(c, ns.ClientURL(), extra...)
			if err != nil {
				return err
			}
			rate, err := drain(ctx, w.url, r, fmt.Sprintf("idle-%d-%d", run, idle), jobs, candidates)
			w.stop()
			if err != nil {
				return err
			}
			if idle == 0 {
				alone = append(alone, rate)
			} else {
				withIdle = append(withIdle, rate)
			}
		}
	}
	line("busy_model_jobs_per_s_alone", median(alone), "jobs/s")
	line("busy_model_jobs_per_s_with_3_idle", median(withIdle), "jobs/s")
	line("idle_models_throughput_ratio", median(withIdle)/median(alone), "ratio")
	return nil
}

// drain submits n jobs at once to model "bench" and returns jobs/s until
// the last result.
func drain(ctx context.Context, url string, r *rand.Rand, prefix string, n, candidates int) (float64, error) {
	cl, closeNC, err := benchClient(url)
	if err != nil {
		return 0, err
	}
	defer closeNC()
	jobs := make([]*schemas.Job, n)
	for i := range jobs {
		jobs[i] = makeJob(r, fmt.Sprintf("%s-%d", prefix, i), candidates, 40)
	}
	start := time.Now()
	if err := submitAll(ctx, cl, jobs); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
