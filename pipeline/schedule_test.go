package pipeline_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

func nJob(id string, n int, lane schemas.Lane) *schemas.Job {
	j := &schemas.Job{ID: id, Query: "q " + id, Lane: lane}
	for i := range n {
		j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprint(i), Text: fmt.Sprintf("passage %d of %s", i, id)})
	}
	return j
}

// finishOrder runs first, waits until the scorer is busy with it, then runs
// the rest, and returns the job ids in the order their results came back.
// It runs in a testing/synctest bubble: the scorer's delays are the
// bubble's clock, so the order is decided by the scheduler alone.
func finishOrder(t *testing.T, p *pipeline.Pipeline, sc *fakeScorer, first *schemas.Job, rest ...*schemas.Job) []string {
	t.Helper()
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	run := func(j *schemas.Job) {
		defer wg.Done()
		res, err := p.Rerank(context.Background(), "m", j, time.Time{})
		if err != nil || res.Error != nil || len(res.Results) != len(j.Candidates) {
			t.Errorf("%s: %v %+v", j.ID, err, res)
		}
		mu.Lock()
		order = append(order, j.ID)
		mu.Unlock()
	}
	wg.Add(1)
	go run(first)
	synctest.Wait() // the first job's first call is under way
	if n := sc.Calls.Load(); n != 1 {
		t.Fatalf("%d scoring calls once the first job was under way, want 1", n)
	}
	for _, j := range rest {
		wg.Add(1)
		go run(j)
	}
	wg.Wait()
	return order
}

// A small job that arrives while a big one is being scored does not wait
// for the whole big job: it is scored between two of its chunks.
func TestSmallJobOvertakesBigJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := &fakeScorer{Delay: 5 * time.Millisecond}
		p := newPipeline(t, pipeline.Config{MaxBatchPairs: 8}, sc, "ms-marco-MiniLM")
		order := finishOrder(t, p, sc, nJob("big", 400, schemas.Interactive), nJob("small", 5, schemas.Interactive))
		if len(order) != 2 || order[0] != "small" {
			t.Fatalf("finish order %v: the small job waited for the big one", order)
		}
		for _, n := range sc.Sizes() {
			if n > 8 {
				t.Fatalf("a scoring call of %d pairs, over MaxBatchPairs 8", n)
			}
		}
	})
}

// Interactive work goes before bulk work already under way.
func TestInteractiveLaneGoesFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := &fakeScorer{Delay: 5 * time.Millisecond}
		p := newPipeline(t, pipeline.Config{MaxBatchPairs: 8}, sc, "ms-marco-MiniLM")
		order := finishOrder(t, p, sc, nJob("bulk", 300, schemas.Bulk), nJob("live", 40, schemas.Interactive))
		if len(order) != 2 || order[0] != "live" {
			t.Fatalf("finish order %v: interactive waited for bulk", order)
		}
	})
}

// Small jobs arriving together still share scoring calls.
func TestSmallJobsShareCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := &fakeScorer{Delay: 20 * time.Millisecond}
		p := newPipeline(t, pipeline.Config{MaxBatchPairs: 16, MaxBatchDelay: 5 * time.Millisecond}, sc, "ms-marco-MiniLM")
		var jobs []*schemas.Job
		for i := range 8 {
			jobs = append(jobs, nJob(fmt.Sprint("s", i), 4, schemas.Interactive))
		}
		out := p.RerankBatch(context.Background(), "m", jobs)
		for i, o := range out {
			if o.Err != nil || o.Result.Error != nil {
				t.Fatalf("job %d: %v", i, o.Err)
			}
		}
		if n := sc.Calls.Load(); n != 2 {
			t.Fatalf("8 jobs of 4 pairs took %d calls, want 2 of 16 pairs", n)
		}
	})
}
