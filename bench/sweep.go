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
// runs on 4 concurrent 64-candidate jobs, to pick the defaults.
func sweepThreads(c config, rt *model.Runtime) error {
	r := rand.New(rand.NewPCG(9, 9))
	jobs := make([]*schemas.Job, 4)
	for i := range jobs {
		jobs[i] = makeJob(r, fmt.Sprintf("sweep-%d", i), 64, 75)
	}
	for _, intra := range []int{1, 2, 4} {
		for _, runs := range []int{1, 2} {
			m, err := rt.Load(c.modelDir, model.Options{IntraOpThreads: intra, InterOpThreads: 1, ConcurrentRuns: runs})
			if err != nil {
				return err
			}
			p, err := newPipeline(m, pipeline.Config{ConcurrentCalls: runs})
			if err != nil {
				m.Close()
				return err
			}
			rate, err := measure(c.runs, 256, func() error {
				for _, o := range p.RerankBatch(context.Background(), "bench", jobs) {
					if o.Err != nil {
						return o.Err
					}
				}
				return nil
			})
			p.Close()
			m.Close()
			if err != nil {
				return err
			}
			fmt.Printf("sweep intra_op=%d concurrent_runs=%d: %.2f pairs/s\n", intra, runs, rate)
		}
	}
	return nil
}
