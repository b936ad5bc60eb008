package main

import (
	"context"
	"fmt"
	"math/rand/v2"

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
