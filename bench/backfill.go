package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/schemas"
)

// benchBackfill: interactive jobs under a bulk backfill, end to end through
// JetStream, a `rerank serve` worker's slot pool and its pipeline (what
// small_job_latency_under_bulk_ratio cannot show: it drives the pipeline
// alone). A run publishes more 150-candidate bulk jobs than the worker has
// slots on the bulk lane, then sends 10-candidate interactive jobs one
// after another while the backfill runs; the idle half sends the same
// interactive jobs to the idle worker. Halves alternate order by run.
//
// interactive_under_bulk_backfill_ratio = p99 of the interactive jobs
// under the backfill ÷ their idle p50 (medians over runs).
func benchBackfill(ctx context.Context, c config, r *rand.Rand) error {
	ns, stopNATS, err := startNATS()
	if err != nil {
		return err
	}
	defer stopNATS()
	const concurrency, bulkJobs, bulkCandidates, liveJobs = 8, 12, 150, 20
	w, err := startWorker(c, ns.ClientURL(), "--concurrency", fmt.Sprint(concurrency))
	if err != nil {
		return err
	}
	defer w.stop()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	live, err := client.New(nc, client.Options{Model: "bench"})
	if err != nil {
		return err
	}
	bulk, err := client.New(nc, client.Options{Model: "bench", Lane: schemas.Bulk})
	if err != nil {
		return err
	}
	// liveRun sends the interactive jobs one after another, each as soon as
	// the last is answered, and returns their latencies (ms).
	liveRun := func(prefix string) ([]float64, error) {
		var out []float64
		for i := range liveJobs {
			j := makeJob(rand.New(rand.NewPCG(uint64(i), 7)), fmt.Sprintf("%s-%d", prefix, i), 10, 40)
			start := time.Now()
			wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			_, err := answered(live.Submit(wctx, j))
			cancel()
			if err != nil {
				return nil, err
			}
			out = append(out, ms(time.Since(start)))
		}
		return out, nil
	}
	if _, err := liveRun("warm"); err != nil {
		return err
	}
	var p99s, p50s []float64
	for run := range c.backfillRuns {
		var idle, under []float64
		for half := range 2 {
			if (half == 0) == (run%2 == 0) {
				if idle, err = liveRun(fmt.Sprintf("idle-%d", run)); err != nil {
					return err
				}
				continue
			}
			var backfill []*client.Pending
			for i := range bulkJobs {
				p, err := bulk.SubmitAsync(ctx, makeJob(r, fmt.Sprintf("backfill-%d-%d", run, i), bulkCandidates, 40))
				if err != nil {
					return err
				}
				backfill = append(backfill, p)
			}
			time.Sleep(time.Second) // the backfill takes the bulk slots and the model
			if under, err = liveRun(fmt.Sprintf("under-%d", run)); err != nil {
				return err
			}
			for _, p := range backfill { // the backfill ends before the next half
				wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
				_, err := answered(p.Result(wctx))
				cancel()
				if err != nil {
					return fmt.Errorf("a backfill job: %w", err)
				}
			}
		}
		p99s = append(p99s, percentile(under, 0.99))
		p50s = append(p50s, percentile(idle, 0.5))
		fmt.Printf("# interactive under a bulk backfill, run %d: %d bulk jobs of %d on %d slots; interactive p50/p99 %.0f/%.0f ms under it, %.0f/%.0f ms idle\n",
			run+1, bulkJobs, bulkCandidates, concurrency, percentile(under, 0.5), percentile(under, 0.99), percentile(idle, 0.5), percentile(idle, 0.99))
	}
	line("interactive_p99_under_bulk_backfill_ms", median(p99s), "ms")
	line("interactive_p50_idle_ms", median(p50s), "ms")
	line("interactive_under_bulk_backfill_ratio", median(p99s)/median(p50s), "ratio")
	return nil
}
