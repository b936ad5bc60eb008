package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rerank/rerank/client"
)

// While the queue refuses jobs, an evaluation's jobs in flight retry as
// one: 32 of them against a lane full for 10 s make one probe per round
// (the gate doubling to 5 s: a handful of rounds) after their first
// refusals, not 32 retries each round (per-job backoff: ~8 rounds × 32), so
// a backfill does not refill every slot the workers free. Once there is
// room, every job gets in.
func TestQueueGateSpacesOutRetriesAcrossJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newQueueGate()
		start := time.Now()
		var attempts atomic.Int64
		publish := func() error {
			attempts.Add(1)
			if time.Since(start) < 10*time.Second {
				return fmt.Errorf("publishing: %w", client.ErrQueueFull)
			}
			return nil
		}
		var wg sync.WaitGroup
		var failed atomic.Int64
		for range 32 {
			wg.Go(func() {
				if err := g.do(context.Background(), publish); err != nil {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		// 32 first refusals, one probe a round (~8 rounds over 10 s), 32
		// successes.
		if n := attempts.Load(); n > 32+16+32 || failed.Load() != 0 {
			t.Fatalf("%d attempts, %d failed", n, failed.Load())
		}
	})
}
