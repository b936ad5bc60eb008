package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// Tracked submissions of one id at the same moment (one Idempotency-Key
// sent twice at once) are one job: one publishes, the others wait for its
// record and take its result.
func TestConcurrentTrackedSubmissionsAreOneJob(t *testing.T) {
	e := setup(t, false)
	seen := publishes(t, e)
	c := trackedClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 8
	results := make([]*schemas.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = c.Submit(ctx, job("at-once", "a", "bb")) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || !results[i].Answers(results[0].JobStream, results[0].JobSeq) {
			t.Fatalf("submission %d: %+v, %v; want the answer of %s #%d", i, results[i], errs[i], results[0].JobStream, results[0].JobSeq)
		}
	}
	if got := seen(); got != 1 {
		t.Fatalf("%d publishes of one id submitted %d times at once, want 1", got, n)
	}
}

// A tracked submitter killed between publishing a job and recording its
// message (a gateway killed there) leaves the id reserved. The job is
// answered, then its server restarts, after which JetStream no longer
// knows the msg-id of an answered work-queue job (nats-io/nats-server#3272)
// and would store the same id again as a new job: a resubmission finds
// the result instead, publishes nothing, and the job runs once.
func TestDeadSubmittersJobIsNotQueuedAgain(t *testing.T) {
	dir := t.TempDir()
	port, err := natsembed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	start := func() *natsembed.Server {
		ns, err := natsembed.Start(natsembed.Options{Port: port, StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	ns := start()
	url := ns.ClientURL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := worker.Config{Provision: true, FetchWait: 200 * time.Millisecond, WorkerID: "w"}
	if err := worker.Provision(ctx, js, []string{"m"}, cfg); err != nil {
		t.Fatal(err)
	}
	e := &env{nc: nc, js: js, r: &lengthReranker{}, url: url, cfg: cfg}
	dead := trackedClient(t, e)
	j := job("dead-submitter", "a", "bb")
	if err := dead.SubmitAndDie(ctx, j); err != nil {
		t.Fatal(err)
	}
	testfixture.StartWorker(t, url, e.r, cfg)
	jobs, _ := js.Stream(ctx, schemas.JobsStream)
	for { // answered and acknowledged: out of the work queue
		info, err := jobs.Info(ctx)
		if err == nil && info.State.Msgs == 0 && info.State.LastSeq == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the job was not answered: %v %+v", err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ns.Stop()
	ns = start()
	t.Cleanup(ns.Stop)
	for { // JetStream back, its streams recovered
		if _, err := js.Stream(ctx, schemas.ResultsStream); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	seen := publishes(t, e)
	res, err := trackedClient(t, e).Submit(ctx, j)
	if err != nil || !res.Answers(schemas.JobsStream, 1) {
		t.Fatalf("resubmission: %+v, %v; want the answer of the first job message", res, err)
	}
	if got := seen(); got != 0 {
		t.Fatalf("%d publishes of an answered job whose submitter died before recording it, want 0", got)
	}
	if info, err := jobs.Info(ctx); err != nil || info.State.LastSeq != 1 {
		t.Fatalf("job stream %+v, %v: the job was queued again", info.State, err)
	}
	if n, _ := e.r.calls.Load(j.ID); *n.(*int) != 1 {
		t.Fatalf("computed %d times, want once", *n.(*int))
	}
}
