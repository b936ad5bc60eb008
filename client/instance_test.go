package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// publishes counts the jobs published on model m's subject, as a core
// subscriber sees them: every publish, whether JetStream stores it or drops
// it as a duplicate. It tells "published nothing" from "published, and
// deduplicated" without waiting out the 2-minute window.
func publishes(t *testing.T, e *env) func() int {
	t.Helper()
	sub, err := e.nc.SubscribeSync(schemas.JobSubject("m"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	e.nc.Flush()
	return func() int {
		e.nc.Flush()
		n, _, _ := sub.Pending()
		return n
	}
}

// trackedClient is a client with Options.Track, its bucket provisioned.
func trackedClient(t *testing.T, e *env) *client.Client {
	t.Helper()
	c, _ := client.New(e.nc, client.Options{Model: "m", Track: true})
	if err := c.ProvisionTracking(context.Background(), 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	return c
}

// storeOldResult stores, under job's id, the answer to another job message
// (the id's use before the dedup window ended).
func storeOldResult(t *testing.T, e *env, job *schemas.Job) {
	t.Helper()
	old := &schemas.Result{V: schemas.Version, ID: job.ID, Model: "m", JobStream: schemas.JobsStream, JobSeq: 1 << 40}
	for i, c := range job.Candidates[:1] {
		old.Results = append(old.Results, schemas.Ranked{Index: i, ID: c.ID, RelevanceScore: 42})
	}
	b, _ := schemas.EncodeResult(old, schemas.Msgpack)
	m := nats.NewMsg(schemas.ResultSubject(job.ID))
	m.Data = b
	m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeMsgpack)
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// A job id reused after the dedup window is a new job: the client never
// takes the stored result of the id's earlier job for its answer, neither
// while waiting nor when its wait ends, and Lookup of a tracked id does not
// either.
func TestReusedIDNeverGetsTheOlderResult(t *testing.T) {
	e := setupWith(t, worker.Config{Provision: true, FetchWait: 200 * time.Millisecond, WorkerID: "w"}, true)
	j := job("reused", "a", "bb", "ccc")
	storeOldResult(t, e, j)
	c := trackedClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	res, err := c.Submit(ctx, j) // no worker yet: nothing may answer
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with no worker running: result %+v, err %v; want the wait to end unanswered", res, err)
	}
	if res, err := c.Lookup(context.Background(), j.ID); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Lookup while the new job waits: %+v, %v; want ErrNotFound", res, err)
	}
	testfixture.StartWorker(t, e.url, e.r, e.cfg)
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err = c.Submit(ctx, j) // the same job, tracked: waits for it
	if err != nil || len(res.Results) != 3 {
		t.Fatalf("result %+v, %v; want the new job's 3 entries", res, err)
	}
	// The result reached Submit's subscription as the server took it; the
	// stream stores it a moment later (its own goroutine), so Lookup may
	// see the old message for that moment: never as the answer.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got, err := c.Lookup(ctx, j.ID)
		if err == nil && got.Answers(res.JobStream, res.JobSeq) {
			break
		}
		if err == nil || !errors.Is(err, client.ErrNotFound) || time.Now().After(deadline) {
			t.Fatalf("Lookup: %+v, %v; want the new job's result", got, err)
		}
	}
}

// With Track, an id is one job for as long as its record lives, not only
// for JetStream's dedup window: submitting it again publishes nothing (a
// core subscriber sees no second publish; JetStream's dedup would forget
// the id after 2 minutes) and answers the first job's result (an
// Idempotency-Key's promise). Without Track the id is published again.
func TestTrackedIDIsOneJobPastTheDedupWindow(t *testing.T) {
	e := setup(t, false)
	tracked := trackedClient(t, e)
	seen := publishes(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := tracked.Submit(ctx, job("idem", "a", "bb"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := tracked.Submit(ctx, job("idem", "a", "bb"))
	if err != nil || !again.Answers(first.JobStream, first.JobSeq) {
		t.Fatalf("tracked resubmission: %+v, %v; want the first job's result", again, err)
	}
	if n := seen(); n != 1 {
		t.Fatalf("%d publishes of a tracked id submitted twice, want 1", n)
	}
	if n, _ := e.r.calls.Load("idem"); *n.(*int) != 1 {
		t.Fatalf("computed %d times, want once", *n.(*int))
	}
	plain, _ := client.New(e.nc, client.Options{Model: "m"})
	p, err := plain.SubmitAsync(ctx, job("idem", "a", "bb"))
	if err != nil {
		t.Fatal(err)
	}
	p.Cancel()
	if n := seen(); n != 2 {
		t.Fatalf("%d publishes after an untracked resubmission, want 2", n)
	}
}

// A tracked id whose job was answered and whose result the results stream
// has since dropped (at its byte limit) is queued again when submitted
// again, rather than waited for in vain.
func TestTrackedIDWhoseResultWasDroppedIsQueuedAgain(t *testing.T) {
	e := setup(t, false)
	tracked := trackedClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := tracked.Submit(ctx, job("dropped", "a", "bb"))
	if err != nil {
		t.Fatal(err)
	}
	// The worker acks after storing the result: wait for the ack to take
	// the job out of the work queue (hours before a result is dropped).
	jobs, err := e.js.Stream(ctx, schemas.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if info, err := jobs.Info(ctx); err == nil && info.State.Msgs == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the job was not acknowledged: %v %+v", err, info)
		}
	}
	s, err := e.js.Stream(ctx, schemas.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(schemas.ResultSubject("dropped"))); err != nil {
		t.Fatal(err)
	}
	// Published again (results are dropped hours after the dedup window,
	// so in real life the stream stores it as a new job; here, minutes
	// inside the window, JetStream drops it as a duplicate).
	seen := publishes(t, e)
	p, err := tracked.SubmitAsync(ctx, job("dropped", "a", "bb"))
	if err != nil {
		t.Fatal(err)
	}
	p.Cancel()
	if n := seen(); n != 1 {
		t.Fatalf("%d publishes of a tracked id whose result was dropped, want 1", n)
	}
}

// With Track, an id is one job: the same id with other content is refused
// (ErrIDConflict) and nothing is published, instead of answering the other
// job's result.
func TestTrackedIDWithOtherContentIsAConflict(t *testing.T) {
	e := setup(t, false)
	tracked := trackedClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := tracked.Submit(ctx, job("once", "a", "bb")); err != nil {
		t.Fatal(err)
	}
	if res, err := tracked.Submit(ctx, job("once", "a", "bb", "ccc")); !errors.Is(err, client.ErrIDConflict) {
		t.Fatalf("the id with other candidates: %+v, %v; want ErrIDConflict", res, err)
	}
	if res, err := tracked.Submit(ctx, job("once", "a", "bb")); err != nil || len(res.Results) != 2 {
		t.Fatalf("the same job again: %+v, %v", res, err)
	}
}

// A read of the results stream whose answer is lost (its server died
// mid-request) costs the waiting Pending one lookup's timeout, not the rest
// of its wait: the result that arrives meanwhile is taken. (A plain NATS
// server stands in for JetStream: the publish is acknowledged by hand, and
// the results stream's info request is swallowed.)
func TestLostLookupDoesNotHoldTheWait(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	fake, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	fake.Subscribe(schemas.JobSubject("m"), func(m *nats.Msg) { m.Respond([]byte(`{"stream":"RERANK_JOBS","seq":7}`)) })
	asked := make(chan struct{}, 16)
	fake.Subscribe("$JS.API.STREAM.INFO."+schemas.ResultsStream, func(*nats.Msg) { asked <- struct{}{} }) // never answered
	fake.Flush()

	c, _ := client.New(nc, client.Options{Model: "m"})
	j := job("lost-lookup", "a", "bb")
	p, err := c.SubmitAsync(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	go func() { // the result, live, while the first lookup waits for its lost answer
		<-asked
		res := &schemas.Result{V: schemas.Version, ID: j.ID, Model: "m", JobStream: "RERANK_JOBS", JobSeq: 7,
			Results: []schemas.Ranked{{Index: 0, ID: "c0"}, {Index: 1, ID: "c1"}}}
		b, _ := schemas.EncodeResult(res, schemas.Msgpack)
		m := nats.NewMsg(schemas.ResultSubject(j.ID))
		m.Data = b
		m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeMsgpack)
		fake.PublishMsg(m)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	res, err := p.Result(ctx)
	if err != nil || len(res.Results) != 2 {
		t.Fatalf("%+v, %v", res, err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the result came after %s: a lost lookup held the wait", d)
	}
}
