package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// A bulk backfill of more jobs than the worker has slots never makes an
// interactive job wait for a bulk job to finish: bulk holds at most
// Concurrency − InteractiveSlots slots, so the interactive job is taken and
// answered while every bulk job still runs. And the worker holds at most
// its slots plus one job per consumer it pulls from (the prefetch), not a
// full fetch per lane.
func TestInteractiveJobNeverWaitsForBulkJobs(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.Concurrency = 4 // one interactive slot (a quarter)
	release := make(chan struct{})
	f := &fakeReranker{answer: func(ctx context.Context, job *schemas.Job) (*schemas.Result, error) {
		if strings.HasPrefix(job.ID, "backfill-") {
			select { // a long bulk job: runs until the test lets it end
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return okResult(job), nil
	}}
	startWorkerWith(t, ns, f, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bulk, _ := client.New(nc, client.Options{Model: "m", Lane: schemas.Bulk})
	var backfill []*client.Pending
	for i := range 12 {
		p, err := bulk.SubmitAsync(ctx, makeJob(fmt.Sprintf("backfill-%d", i), 3))
		if err != nil {
			t.Fatal(err)
		}
		backfill = append(backfill, p)
	}
	waitFor(t, 10*time.Second, "the bulk slots taken", func() bool { return f.calls.Load() == 3 })
	live, _ := client.New(nc, client.Options{Model: "m"})
	for i := range 3 { // one after another, each while the backfill runs
		lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := live.Submit(lctx, makeJob(fmt.Sprintf("live-%d", i), 2))
		lcancel()
		if err != nil || res.Error != nil {
			t.Fatalf("interactive job %d under the backfill: %v %+v (bulk jobs started: %d)", i, err, res, f.calls.Load())
		}
	}
	if n := f.calls.Load(); n != 3+3 {
		t.Fatalf("%d jobs started; want the 3 bulk jobs the cap allows and the 3 interactive ones", n)
	}
	var held int
	for _, lane := range schemas.Lanes {
		c, err := js.Consumer(ctx, schemas.JobsStream, worker.LaneConsumerName("m", lane))
		if err != nil {
			t.Fatal(err)
		}
		ci, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held += ci.NumAckPending
	}
	if held > cfg.Concurrency+2 {
		t.Errorf("the worker holds %d jobs with %d slots and 2 consumers; want at most %d", held, cfg.Concurrency, cfg.Concurrency+2)
	}
	close(release)
	for _, p := range backfill {
		if res, err := p.Result(ctx); err != nil || res.Error != nil {
			t.Fatalf("a bulk job: %v %+v", err, res)
		}
	}
}
