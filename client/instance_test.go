package client_test

import (
	"context"
	"errors"
	"fmt"
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

// shortDedupWindow shrinks the job stream's duplicate window, so that a
// test can reuse a job id "after the window" without waiting 2 minutes.
func shortDedupWindow(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, schemas.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// pastDedupWindow waits until the job stream has forgotten the message
// ids stored so far: it stores a probe message with a fresh id (on a
// subject no worker reads), then publishes it again until the stream no
// longer calls it a duplicate. The server forgets ids oldest first, so the
// ids stored before the probe are forgotten by then.
func pastDedupWindow(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := fmt.Sprintf("dedup-probe-%d", time.Now().UnixNano())
	probe := func() bool {
		m := nats.NewMsg(schemas.JobSubject("probe"))
		m.Data = []byte("{}")
		ack, err := e.js.PublishMsg(ctx, m, jetstream.WithMsgID(id))
		if err != nil {
			t.Fatalf("publishing the dedup probe: %v", err)
		}
		return ack.Duplicate
	}
	if probe() {
		t.Fatal("a fresh probe id was taken for a duplicate")
	}
	for probe() {
		time.Sleep(20 * time.Millisecond)
	}
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
	c, _ := client.New(e.nc, client.Options{Model: "m", Track: true})
	if err := c.ProvisionTracking(context.Background(), 1, time.Hour); err != nil {
		t.Fatal(err)
	}
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
	if got, err := c.Lookup(ctx, j.ID); err != nil || !got.Answers(res.JobStream, res.JobSeq) {
		t.Fatalf("Lookup: %+v, %v", got, err)
	}
}

// With Track, an id is one job for as long as its record lives, not only
// for JetStream's dedup window: submitting it again after the window
// publishes nothing and answers the first job's result (an
// Idempotency-Key's promise). Without Track the id is a new job, computed.
func TestTrackedIDIsOneJobPastTheDedupWindow(t *testing.T) {
	e := setup(t, false)
	shortDedupWindow(t, e)
	tracked, _ := client.New(e.nc, client.Options{Model: "m", Track: true})
	if err := tracked.ProvisionTracking(context.Background(), 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := tracked.Submit(ctx, job("idem", "a", "bb"))
	if err != nil {
		t.Fatal(err)
	}
	pastDedupWindow(t, e)
	again, err := tracked.Submit(ctx, job("idem", "a", "bb"))
	if err != nil || !again.Answers(first.JobStream, first.JobSeq) {
		t.Fatalf("tracked resubmission: %+v, %v; want the first job's result", again, err)
	}
	if n, _ := e.r.calls.Load("idem"); *n.(*int) != 1 {
		t.Fatalf("computed %d times, want once", *n.(*int))
	}
	plain, _ := client.New(e.nc, client.Options{Model: "m"})
	fresh, err := plain.Submit(ctx, job("idem", "a", "bb", "ccc"))
	if err != nil || len(fresh.Results) != 3 || fresh.Answers(first.JobStream, first.JobSeq) {
		t.Fatalf("untracked reuse: %+v, %v; want a new job's 3 entries", fresh, err)
	}
}

// A tracked id whose job was answered and whose result the results stream
// has since dropped (at its byte limit) is queued again when submitted
// again, rather than waited for in vain.
func TestTrackedIDWhoseResultWasDroppedIsQueuedAgain(t *testing.T) {
	e := setup(t, false)
	shortDedupWindow(t, e) // results are dropped hours after the window, not within it
	tracked, _ := client.New(e.nc, client.Options{Model: "m", Track: true})
	if err := tracked.ProvisionTracking(context.Background(), 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := tracked.Submit(ctx, job("dropped", "a", "bb"))
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
	pastDedupWindow(t, e)
	again, err := tracked.Submit(ctx, job("dropped", "a", "bb"))
	if err != nil || again.Answers(first.JobStream, first.JobSeq) || len(again.Results) != 2 {
		t.Fatalf("resubmission after the result was dropped: %+v, %v; want a new job's answer", again, err)
	}
}

// With Track, an id is one job: the same id with other content is refused
// (ErrIDConflict) and nothing is published, instead of answering the other
// job's result.
func TestTrackedIDWithOtherContentIsAConflict(t *testing.T) {
	e := setup(t, false)
	tracked, _ := client.New(e.nc, client.Options{Model: "m", Track: true})
	if err := tracked.ProvisionTracking(context.Background(), 1, time.Hour); err != nil {
		t.Fatal(err)
	}
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
