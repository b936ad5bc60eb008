package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

// sweepThreads measures pipeline pairs/s over intra-op threads × concurrent
// runs, then over the batch size, on 4 concurrent 64-candidate jobs, to pick
// the defaults.
func sweepThreads(c config, rt *model.Runtime) error {
	r := rand.New(rand.NewPCG(9, 9))
	jobs := make([]*schemas.Job, 4)
	for i := range jobs {
		jobs[i] = makeJob(r, fmt.Sprintf("sweep-%d", i), 64, 75)
	}
	type setting struct{ intra, runs, batch int }
	var settings []setting
	for _, intra := range []int{1, 2, 4} {
		for _, runs := range []int{1, 2} {
			settings = append(settings, setting{intra, runs, 0})
		}
	}
	for _, batch := range []int{8, 32, 64} {
		settings = append(settings, setting{0, 1, batch})
	}
	for _, st := range settings {
		m, err := rt.Load(c.modelDir, model.Options{IntraOpThreads: st.intra, InterOpThreads: 1, ConcurrentRuns: st.runs, MaxBatchSize: st.batch})
		if err != nil {
			return err
		}
		o := m.Options() // defaults filled in
		p, err := newPipeline(m, pipeline.Config{ConcurrentCalls: st.runs})
		if err != nil {
			m.Close()
			return err
		}
		rate, err := measure(c.runs, 256, func() error {
			for _, res := range p.RerankBatch(context.Background(), "bench", jobs) {
				if res.Err != nil {
					return res.Err
				}
			}
			return nil
		})
		p.Close()
		m.Close()
		if err != nil {
			return err
		}
		fmt.Printf("sweep intra_op=%d concurrent_runs=%d max_batch_size=%d: %.2f pairs/s\n", o.IntraOpThreads, o.ConcurrentRuns, o.MaxBatchSize, rate)
	}
	return nil
}

// sweepBatch measures pipeline pairs/s on one 1,000-candidate job (passages
// of about 110 tokens, within 256) over batch sizes × token budgets on the
// configured device: the figures behind the CUDA batch defaults.
func sweepBatch(c config, rt *model.Runtime) error {
	dev, err := model.ParseDevice(c.device)
	if err != nil {
		return err
	}
	job := makeJob(rand.New(rand.NewPCG(11, 11)), "sweep-batch", 1000, 75)
	for _, batch := range []int{32, 64, 128, 256, 512} {
		for _, tokens := range []int{16384, 32768, 65536, 131072} {
			if tokens < batch*64 {
				continue
			}
			m, err := rt.Load(c.modelDir, model.Options{Device: dev, MaxBatchSize: batch, MaxBatchTokens: tokens, MaxBatchCells: tokens * 512})
			if err != nil {
				return err
			}
			p, err := newPipeline(m, pipeline.Config{MaxBatchDelay: -1})
			if err != nil {
				m.Close()
				return err
			}
			rate, err := measure(c.runs, len(job.Candidates), func() error {
				_, err := p.Rerank(context.Background(), "bench", job, time.Time{})
				return err
			})
			p.Close()
			m.Close()
			if err != nil {
				return err
			}
			fmt.Printf("sweep_batch max_batch_size=%d max_batch_tokens=%d: %.1f pairs/s\n", batch, tokens, rate)
		}
	}
	return nil
}

// compareCPU scores one job with the model on the configured device and on
// the CPU and prints the largest score difference (cuda_vs_cpu_max_abs_diff).
func compareCPU(ctx context.Context, c config, rt *model.Runtime, m *model.Model) error {
	cpu, err := rt.Load(c.modelDir, model.Options{})
	if err != nil {
		return err
	}
	defer cpu.Close()
	job := makeJob(rand.New(rand.NewPCG(12, 12)), "compare", 256, 75)
	pairs := pairsOf(job)
	a, _, err := m.Score(ctx, pairs)
	if err != nil {
		return err
	}
	b, _, err := cpu.Score(ctx, pairs)
	if err != nil {
		return err
	}
	worst := 0.0
	for i := range a {
		worst = math.Max(worst, math.Abs(float64(a[i])-float64(b[i])))
	}
	line(fmt.Sprintf("%s_vs_cpu_max_abs_diff", strings.SplitN(c.device, ":", 2)[0]), worst, "abs")
	return nil
}
