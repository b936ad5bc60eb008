package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/rerank/rerank/eval"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

// benchInt8 compares the int8 copy of the model (`rerank quantize`) with
// the fp32 model on the same 1,000-candidate job, both as a worker serves
// them: pairs/s through the pipeline, interleaved, and the agreement of
// their scores.
func benchInt8(ctx context.Context, c config, rt *model.Runtime, m *model.Model, job *schemas.Job) error {
	opts, err := c.options()
	if err != nil {
		return err
	}
	q, err := rt.Load(c.int8Dir, opts)
	if err != nil {
		return fmt.Errorf("loading the int8 model (make bench writes it with rerank quantize): %w", err)
	}
	defer q.Close()
	pf, err := newPipeline(m, pipeline.Config{MaxBatchDelay: -1})
	if err != nil {
		return err
	}
	defer pf.Close()
	pq, err := newPipeline(q, pipeline.Config{MaxBatchDelay: -1})
	if err != nil {
		return err
	}
	defer pq.Close()
	n := len(job.Candidates)
	var scores [2][]float64
	rerank := func(p *pipeline.Pipeline, side int) func() error {
		return func() error {
			res, err := answered(p.Rerank(ctx, "bench", job, time.Time{}))
			if err != nil {
				return err
			}
			scores[side] = eval.CandidateScores(res, n)
			return nil
		}
	}
	pipes := []*pipeline.Pipeline{pf, pq}
	rates := make([][]float64, len(pipes))
	for k := range c.runs {
		// Alternate which side goes first, so neither always follows the
		// other's warm caches.
		for i := range pipes {
			s := (i + k) % len(pipes)
			r, err := measure(1, n, rerank(pipes[s], s))
			if err != nil {
				return err
			}
			rates[s] = append(rates[s], r)
		}
	}
	fp, i8 := rates[0], rates[1]
	ag, err := eval.Compare(scores[0], scores[1])
	if err != nil {
		return err
	}
	line("fp32_pairs_per_s", median(fp), "pairs/s")
	line("int8_pairs_per_s", median(i8), "pairs/s")
	line("int8_vs_fp32", median(i8)/median(fp), "ratio")
	line("int8_kendall_tau", ag.Kendall, "tau")
	line("int8_spearman", ag.Spearman, "rho")
	line("int8_max_abs_diff", ag.MaxDiff, "score")
	return nil
}

// benchColdStart measures, for each model directory, the time from
// starting a `rerank serve` process to the result of a job that was queued
// before it started, and that worker's peak RSS after a 2 × 1,000-candidate
// load (the peak_rss_mb load).
func benchColdStart(ctx context.Context, c config, r *rand.Rand) error {
	load := []*schemas.Job{makeJob(r, "rss-0", 1000, 75), makeJob(r, "rss-1", 1000, 75)}
	for _, side := range []struct{ name, dir string }{{"fp32", c.modelDir}, {"int8", c.int8Dir}} {
		var starts []float64
		var rss float64
		for run := range c.coldRuns {
			s, peak, err := coldStart(ctx, c, side.dir, makeJob(r, fmt.Sprintf("cold-%s-%d", side.name, run), 10, 40), load, run == 0)
			if err != nil {
				return fmt.Errorf("%s: %w", side.name, err)
			}
			starts = append(starts, s)
			rss = max(rss, peak)
		}
		line("cold_start_s_"+side.name, median(starts), "s")
		if side.name == "int8" {
			line("int8_peak_rss_mb", rss, "MB")
		}
	}
	return nil
}

// coldStart queues job on a fresh server, starts a worker and times its
// result; with load, it then runs the load jobs and reads the peak RSS.
func coldStart(ctx context.Context, c config, dir string, job *schemas.Job, load []*schemas.Job, withLoad bool) (float64, float64, error) {
	ns, stopNATS, err := startNATS()
	if err != nil {
		return 0, 0, err
	}
	defer stopNATS()
	cl, closeNC, err := benchClient(ns.ClientURL())
	if err != nil {
		return 0, 0, err
	}
	defer closeNC()
	cc := c
	cc.modelDir = dir
	// The queue exists before the worker does, as under KEDA's scale from
	// zero: a first worker provisions the streams and the consumer and
	// leaves; the job is queued; then the measured worker starts.
	first, err := startWorker(cc, ns.ClientURL())
	if err != nil {
		return 0, 0, err
	}
	first.stop()
	pd, err := cl.SubmitAsync(ctx, job)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	type started struct {
		w   *workerProc
		err error
	}
	ch := make(chan started, 1)
	go func() {
		w, err := startWorker(cc, ns.ClientURL())
		ch <- started{w, err}
	}()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	res, err := pd.Result(wctx)
	cancel()
	cold := time.Since(start).Seconds()
	st := <-ch
	if st.err != nil {
		return 0, 0, st.err
	}
	w := st.w
	defer w.stop()
	if err != nil {
		return 0, 0, err
	}
	if res.Error != nil {
		return 0, 0, res.Error
	}
	if !withLoad {
		return cold, 0, nil
	}
	if err := submitAll(ctx, cl, load); err != nil {
		return 0, 0, err
	}
	rss, err := w.PeakRSSMB()
	return cold, rss, err
}
