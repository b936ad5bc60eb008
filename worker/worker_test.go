package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/pipeline/pipelinetest"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// --- fixtures ---------------------------------------------------------------

func startServer(t *testing.T) *natsembed.Server {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	return ns
}

func connect(t *testing.T, ns *natsembed.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// slowScorer is the pipeline's stand-in model (a hash score per pair):
// Delay, Gate and Hang make its calls slow, gated or hung.
type slowScorer = pipelinetest.HashScorer

type counter struct {
	mu          sync.Mutex
	outcomes    map[string]int
	redelivered int
	panics      int
	dead        map[string]int
	backlog     map[string]uint64 // per lane, the most pending + unacked jobs reported
	last        map[string]uint64 // per lane, the last reported
	events      []string          // in-flight changes and outcomes, in order
}

func newCounter() *counter { return &counter{outcomes: map[string]int{}, dead: map[string]int{}} }
func (c *counter) JobDone(_, outcome string, _ uint64, _, _ time.Duration) {
	c.mu.Lock()
	c.outcomes[outcome]++
	c.events = append(c.events, "done:"+outcome)
	c.mu.Unlock()
}
func (c *counter) Redelivered(string) { c.mu.Lock(); c.redelivered++; c.mu.Unlock() }
func (c *counter) DeadLettered(_, code string) {
	c.mu.Lock()
	c.dead[code]++
	c.mu.Unlock()
}
func (c *counter) InFlight(d int) {
	c.mu.Lock()
	c.events = append(c.events, fmt.Sprintf("in-flight%+d", d))
	c.mu.Unlock()
}
func (c *counter) Panicked(string) { c.mu.Lock(); c.panics++; c.mu.Unlock() }
func (c *counter) Backlog(_, lane string, pending, unacked uint64) {
	c.mu.Lock()
	if c.backlog == nil {
		c.backlog = map[string]uint64{}
	}
	c.backlog[lane] = max(c.backlog[lane], pending+unacked)
	if c.last == nil {
		c.last = map[string]uint64{}
	}
	c.last[lane] = pending + unacked
	c.mu.Unlock()
}

// String reports the counts, read under the lock, for failure messages.
func (c *counter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("outcomes %v, dead letters %v, %d redelivered, %d panics", c.outcomes, c.dead, c.redelivered, c.panics)
}

func (c *counter) get(f func(c *counter) int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return f(c)
}

type runningWorker struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, once done is closed
	obs    *counter
	nc     *nats.Conn
}

// settled waits until the worker has settled n deliveries, then fails if
// it settled more. JobDone is the last step of settle, so the worker's
// counters are final for those deliveries once it has run, and an ack,
// confirmed by DoubleAck, has landed at the server: a result in the stream
// alone says neither. Term and Nak are not confirmed: after a rejected or
// retried delivery settles, the consumer's state may still lag.
func (r *runningWorker) settled(t *testing.T, n int) {
	t.Helper()
	total := func(c *counter) int {
		sum := 0
		for _, v := range c.outcomes {
			sum += v
		}
		return sum
	}
	waitFor(t, 20*time.Second, fmt.Sprintf("%d settled deliveries", n), func() bool { return r.obs.get(total) >= n })
	if got := r.obs.get(total); got != n {
		t.Fatalf("%d settled deliveries, want %d (%v)", got, n, r.obs)
	}
}

// stop cancels the worker and waits for Run to return; idempotent.
func (r *runningWorker) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("worker Run: %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop")
	}
}

func testConfig() worker.Config {
	return worker.Config{
		Provision: true, AckWait: time.Second, Heartbeat: 250 * time.Millisecond, MaxDeliver: 5,
		Concurrency: 4, ShutdownGrace: 5 * time.Second, BackoffBase: 100 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond, FetchWait: 200 * time.Millisecond, WorkerID: "test",
	}
}

func startWorker(t *testing.T, ns *natsembed.Server, sc pipeline.Scorer, cfg worker.Config) *runningWorker {
	t.Helper()
	ic, _ := inject.Preset("all-MiniLM-L12-v3-bm25")
	p, err := pipeline.New(pipeline.Config{MaxBatchDelay: time.Millisecond, Limits: cfg.Limits}, pipeline.Model{Name: "m", Scorer: sc, Inject: ic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return startWorkerWith(t, ns, p, cfg)
}

// startWorkerWith runs a worker around any Reranker serving model "m".
func startWorkerWith(t *testing.T, ns *natsembed.Server, p worker.Reranker, cfg worker.Config) *runningWorker {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	obs := newCounter()
	var log *slog.Logger
	if os.Getenv("RERANK_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	w, err := worker.New(nc, p, cfg, log, obs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningWorker{cancel: cancel, done: make(chan struct{}), obs: obs, nc: nc}
	go func() { r.err = w.Run(ctx); close(r.done) }()
	t.Cleanup(func() { r.stop(t) })
	// Ready once the consumer exists.
	js, _ := jetstream.New(nc)
	waitFor(t, 10*time.Second, "consumer provisioned", func() bool {
		_, err := js.Consumer(context.Background(), schemas.JobsStream, worker.ConsumerName("m"))
		return err == nil
	})
	return r
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func f64(v float64) *float64 { return &v }

func makeJob(id string, n int) *schemas.Job {
	j := &schemas.Job{ID: id, Query: "query for " + id, Meta: map[string]string{"job": id}}
	for i := range n {
		j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprintf("c%d", i), Text: fmt.Sprintf("passage %d for %s", i, id), BM25: f64(float64(i%50) + 0.5)})
	}
	return j
}

func publishRaw(t *testing.T, js jetstream.JetStream, msgID, contentType string, data []byte) {
	t.Helper()
	m := nats.NewMsg(schemas.JobSubject("m"))
	m.Data = data
	if contentType != "" {
		m.Header.Set(schemas.HeaderContentType, contentType)
	}
	opts := []jetstream.PublishOpt{}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := js.PublishMsg(context.Background(), m, opts...); err != nil {
		t.Fatal(err)
	}
}

func publishJob(t *testing.T, js jetstream.JetStream, j *schemas.Job) {
	t.Helper()
	b, err := schemas.EncodeJob(j, schemas.Msgpack)
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, js, j.ID, schemas.ContentTypeMsgpack, b)
}

// storedResults counts results per job id in RERANK_RESULTS.
func storedResults(t *testing.T, js jetstream.JetStream) map[string]uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), schemas.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(schemas.ResultsPrefix+">"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		out[strings.TrimPrefix(subj, schemas.ResultsPrefix)] = n
	}
	return out
}

func lastResult(t *testing.T, js jetstream.JetStream, id string) *schemas.Result {
	t.Helper()
	s, _ := js.Stream(context.Background(), schemas.ResultsStream)
	m, err := s.GetLastMsgForSubject(context.Background(), schemas.ResultSubject(id))
	if err != nil {
		t.Fatalf("result of %s: %v", id, err)
	}
	f, _ := schemas.ParseContentType(m.Header.Get(schemas.HeaderContentType))
	r, err := schemas.DecodeResult(m.Data, f)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// --- tests ------------------------------------------------------------------

func TestLargeJobBothResultSubjects(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	startWorker(t, ns, &slowScorer{}, testConfig())

	job := makeJob("big-1", 1000)
	job.TopN = 100
	publishJob(t, js, job)
	waitFor(t, 20*time.Second, "stored result", func() bool { return storedResults(t, js)["big-1"] == 1 })
	res := lastResult(t, js, "big-1")
	if res.Error != nil || len(res.Results) != 100 || res.Meta["job"] != "big-1" || res.Attempt != 1 || res.Worker != "test" {
		t.Fatalf("result: err=%v n=%d meta=%v attempt=%d", res.Error, len(res.Results), res.Meta, res.Attempt)
	}
	// Without top_n every candidate comes back exactly once, sorted.
	job2 := makeJob("big-2", 1000)
	publishJob(t, js, job2)
	waitFor(t, 20*time.Second, "stored result", func() bool { return storedResults(t, js)["big-2"] == 1 })
	res = lastResult(t, js, "big-2")
	seen := map[int]bool{}
	for k, r := range res.Results {
		if seen[r.Index] || job2.Candidates[r.Index].ID != r.ID {
			t.Fatalf("result %d: index %d repeated or mismatched", k, r.Index)
		}
		seen[r.Index] = true
		if k > 0 && r.RelevanceScore > res.Results[k-1].RelevanceScore {
			t.Fatalf("unsorted at %d", k)
		}
	}
	if len(seen) != 1000 {
		t.Fatalf("%d of 1000 candidates returned", len(seen))
	}

	// reply_to: a private subject, JSON in and out.
	sub, err := nc.SubscribeSync("_INBOX.test-reply")
	if err != nil {
		t.Fatal(err)
	}
	job3 := makeJob("reply-1", 5)
	job3.ReplyTo = "_INBOX.test-reply"
	b, _ := schemas.EncodeJob(job3, schemas.JSON)
	publishRaw(t, js, job3.ID, schemas.ContentTypeJSON, b)
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(schemas.HeaderContentType) != schemas.ContentTypeJSON || !strings.HasPrefix(string(m.Data), "{") {
		t.Fatalf("reply not JSON: %q", m.Data[:20])
	}
	r3, err := schemas.DecodeResult(m.Data, schemas.JSON)
	if err != nil || r3.ID != "reply-1" || len(r3.Results) != 5 {
		t.Fatalf("reply: %+v %v", r3, err)
	}
	if _, stored := storedResults(t, js)["reply-1"]; stored {
		t.Fatal("a reply_to result was also stored on the default subject")
	}
	waitFor(t, 5*time.Second, "jobs stream drained", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
}

func TestDuplicateSubmissionStoresOneResult(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	sc := &slowScorer{}
	startWorker(t, ns, sc, testConfig())
	job := makeJob("dup-1", 10)
	publishJob(t, js, job)
	publishJob(t, js, job) // within the 2-minute window: dropped by JetStream
	waitFor(t, 10*time.Second, "result", func() bool { return storedResults(t, js)["dup-1"] >= 1 })
	publishJob(t, js, job) // after completion, still inside the window
	// Give a wrongly accepted duplicate the chance to be processed.
	probe := makeJob("probe", 1)
	publishJob(t, js, probe)
	waitFor(t, 10*time.Second, "probe result", func() bool { return storedResults(t, js)["probe"] == 1 })
	if n := storedResults(t, js)["dup-1"]; n != 1 {
		t.Fatalf("%d stored results for one job id", n)
	}
}

// A worker that dies mid-job (no ack, no nak) loses nothing: after AckWait
// the job goes to another worker, and one result is stored.
func TestCrashedWorkerJobIsRedelivered(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	hung := &slowScorer{}
	hung.Hang.Store(true)
	a := startWorker(t, ns, hung, testConfig())
	publishJob(t, js, makeJob("crash-1", 20))
	waitFor(t, 10*time.Second, "worker A to take the job", func() bool { return hung.Calls.Load() > 0 })
	a.nc.Close() // the process "dies": no ack, no nak, no heartbeat

	b := startWorker(t, ns, &slowScorer{}, testConfig())
	waitFor(t, 20*time.Second, "redelivered result", func() bool { return storedResults(t, js)["crash-1"] == 1 })
	res := lastResult(t, js, "crash-1")
	if res.Attempt < 2 || res.Error != nil {
		t.Fatalf("result attempt %d err %v; want a redelivery", res.Attempt, res.Error)
	}
	if b.obs.get(func(c *counter) int { return c.redelivered }) == 0 {
		t.Fatal("worker B saw no redelivery")
	}
	waitFor(t, 5*time.Second, "jobs stream drained", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
	if n := storedResults(t, js)["crash-1"]; n != 1 {
		t.Fatalf("%d results", n)
	}
}

// A job gives its slot back once its result is stored, before the ack's
// round trip through the consumer's replicas: the slot serves the next job
// meanwhile (with a fast model, the ack's confirmation held a quarter of
// each slot's time). The ack is still confirmed: the stream drains.
func TestSlotIsFreedBeforeTheAckRoundTrip(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.Concurrency = 1
	w := startWorker(t, ns, &slowScorer{}, cfg)
	for i := range 3 {
		publishJob(t, js, makeJob(fmt.Sprintf("slot-%d", i), 3))
	}
	waitFor(t, 10*time.Second, "three results", func() bool { return len(storedResults(t, js)) == 3 })
	waitFor(t, 5*time.Second, "three outcomes", func() bool { return w.obs.get(func(c *counter) int { return c.outcomes[worker.OutcomeOK] }) == 3 })
	waitFor(t, 5*time.Second, "acks confirmed: jobs stream drained", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
	w.obs.mu.Lock()
	events := slices.Clone(w.obs.events)
	w.obs.mu.Unlock()
	// Per job: taken (+1), slot given back (-1), then the acked outcome:
	// the k-th outcome comes after the k-th slot was given back (the next
	// job may already hold the slot by then).
	var freed, done int
	for i, e := range events {
		switch e {
		case "in-flight-1":
			freed++
		case "done:" + worker.OutcomeOK:
			if done++; freed < done {
				t.Fatalf("event %d of %q: outcome %d (after its ack) came before its slot was given back", i, events, done)
			}
		}
	}
	if freed != 3 || done != 3 {
		t.Fatalf("events %q: %d slots given back, %d outcomes; want 3 each", events, freed, done)
	}
}

// InProgress heartbeats keep a job that runs 3× AckWait from being redelivered.
func TestLongJobIsNotRedelivered(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	sc := &slowScorer{Delay: 3 * time.Second} // AckWait is 1 s
	w := startWorker(t, ns, sc, testConfig())
	publishJob(t, js, makeJob("long-1", 5))
	waitFor(t, 20*time.Second, "result", func() bool { return storedResults(t, js)["long-1"] == 1 })
	w.settled(t, 1) // the result is stored before the ack is sent
	res := lastResult(t, js, "long-1")
	if res.Attempt != 1 {
		t.Fatalf("attempt %d: the job was redelivered", res.Attempt)
	}
	if sc.Calls.Load() != 1 || w.obs.get(func(c *counter) int { return c.redelivered }) != 0 {
		t.Fatalf("scorer calls %d; %v", sc.Calls.Load(), w.obs)
	}
	cons, _ := js.Consumer(context.Background(), schemas.JobsStream, worker.ConsumerName("m"))
	info, _ := cons.Info(context.Background())
	if info.NumRedelivered != 0 || info.NumAckPending != 0 {
		t.Fatalf("consumer: redelivered %d, ack pending %d", info.NumRedelivered, info.NumAckPending)
	}
}

func TestInvalidPayloadsAreDeadLettered(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	w := startWorker(t, ns, &slowScorer{}, testConfig())

	good, _ := schemas.EncodeJob(makeJob("bad-truncated", 3), schemas.Msgpack)
	ctypeJob, _ := schemas.EncodeJob(makeJob("bad-ctype", 3), schemas.Msgpack)
	nan := makeJob("bad-nan", 3)
	nan.Candidates[1].BM25 = f64(math.NaN())
	nanBytes, _ := msgpack.Marshal(nan)
	noQuery := makeJob("bad-noquery", 2)
	noQuery.Query = ""
	noQueryBytes, _ := schemas.EncodeJob(noQuery, schemas.JSON)
	missing := makeJob("bad-missing", 3)
	missing.Candidates[2].BM25 = nil
	missingBytes, _ := schemas.EncodeJob(missing, schemas.Msgpack)
	badReply := makeJob("bad-reply", 2)
	badReply.ReplyTo = "rerank.jobs.m"
	badReplyBytes, _ := schemas.EncodeJob(badReply, schemas.Msgpack)
	cases := []struct {
		id, ct string
		data   []byte
		code   schemas.Code
	}{
		{"bad-reply", schemas.ContentTypeMsgpack, badReplyBytes, schemas.CodeInvalidReplyTo},
		{"bad-random", "", []byte{0xc1, 0xde, 0xad, 0xbe, 0xef}, schemas.CodeBadEncoding},
		{"bad-truncated", schemas.ContentTypeMsgpack, good[:len(good)/2], schemas.CodeBadEncoding},
		{"bad-noquery", schemas.ContentTypeJSON, noQueryBytes, schemas.CodeMissingQuery},
		{"bad-nan", schemas.ContentTypeMsgpack, nanBytes, schemas.CodeNonFiniteScore},
		{"bad-missing", schemas.ContentTypeMsgpack, missingBytes, schemas.CodeMissingScore},
		{"bad-ctype", "text/plain", ctypeJob, schemas.CodeBadEncoding},
	}
	for _, c := range cases {
		publishRaw(t, js, c.id, c.ct, c.data)
	}
	publishJob(t, js, makeJob("healthy", 4))
	waitFor(t, 20*time.Second, "all results", func() bool { return len(storedResults(t, js)) == len(cases)+1 })
	for _, c := range cases {
		res := lastResult(t, js, c.id)
		if res.Error == nil || res.Error.Code != c.code {
			t.Errorf("%s: error %+v, want code %s", c.id, res.Error, c.code)
		}
	}
	if res := lastResult(t, js, "healthy"); res.Error != nil || len(res.Results) != 4 {
		t.Fatalf("healthy job: %+v", res)
	}
	// Dead letters hold the original bytes and the reason.
	dead, err := js.Stream(context.Background(), schemas.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "dead letters", func() bool { return streamMsgs(t, js, schemas.DeadStream) == uint64(len(cases)) })
	byID := map[string]*jetstream.RawStreamMsg{}
	for seq := uint64(1); seq <= uint64(len(cases)); seq++ {
		m, err := dead.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		byID[m.Header.Get("Rerank-Job-Msg-Id")] = m
	}
	for _, c := range cases {
		m := byID[c.id]
		if m == nil {
			t.Fatalf("no dead letter for %s", c.id)
		}
		if string(m.Data) != string(c.data) || m.Header.Get(schemas.HeaderErrorCode) != string(c.code) || m.Subject != schemas.DeadPrefix+"m" {
			t.Errorf("%s: dead letter subject %s code %q, bytes equal %v", c.id, m.Subject, m.Header.Get(schemas.HeaderErrorCode), string(m.Data) == string(c.data))
		}
	}
	// No redelivery: the jobs are gone and were delivered once.
	waitFor(t, 5*time.Second, "jobs stream drained", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
	w.settled(t, len(cases)+1)
	if n := w.obs.get(func(c *counter) int { return c.redelivered }); n != 0 {
		t.Fatalf("%d redeliveries", n)
	}
	if n := w.obs.get(func(c *counter) int { return c.outcomes[worker.OutcomeInvalid] }); n != len(cases) {
		t.Fatalf("%d invalid outcomes, want %d", n, len(cases))
	}
}

// A job that fails on every delivery ends in the dead-letter stream with an
// internal error result, after MaxDeliver attempts with backoff.
func TestTransientFailuresExhaustDeliveries(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.MaxDeliver = 3
	w := startWorker(t, ns, &failingScorer{}, cfg)
	publishJob(t, js, makeJob("doomed", 2))
	waitFor(t, 20*time.Second, "error result", func() bool { return storedResults(t, js)["doomed"] == 1 })
	res := lastResult(t, js, "doomed")
	if res.Error == nil || res.Error.Code != schemas.CodeInternal || res.Attempt != 3 {
		t.Fatalf("result %+v", res)
	}
	w.settled(t, 3)
	if n := w.obs.get(func(c *counter) int { return c.outcomes[worker.OutcomeRetry] }); n != 2 {
		t.Fatalf("%d retries, want 2", n)
	}
	waitFor(t, 5*time.Second, "dead letter", func() bool { return streamMsgs(t, js, schemas.DeadStream) == 1 })
}

// A job whose every delivery ends with its worker dying is still answered:
// the server announces it out of deliveries, and a live worker publishes the
// internal error result, dead-letters it and removes it from the queue.
func TestJobOutOfDeliveriesByCrashesIsAnswered(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.MaxDeliver = 2
	// The survivor that will answer: it never gets the job itself (it
	// starts pulling only after the job's last delivery).
	for attempt := 1; attempt <= 2; attempt++ {
		hung := &slowScorer{}
		hung.Hang.Store(true)
		w := startWorker(t, ns, hung, cfg)
		if attempt == 1 {
			publishJob(t, js, makeJob("crasher", 3))
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("delivery %d taken", attempt), func() bool { return hung.Calls.Load() > 0 })
		w.nc.Close() // dies under the job
	}
	survivor := startWorker(t, ns, &slowScorer{}, cfg)
	waitFor(t, 20*time.Second, "error result", func() bool { return storedResults(t, js)["crasher"] == 1 })
	res := lastResult(t, js, "crasher")
	if res.Error == nil || res.Error.Code != schemas.CodeInternal || res.Attempt != 2 {
		t.Fatalf("result %+v, want internal error on attempt 2", res)
	}
	waitFor(t, 5*time.Second, "dead letter, queue empty", func() bool {
		return streamMsgs(t, js, schemas.DeadStream) == 1 && streamMsgs(t, js, schemas.JobsStream) == 0
	})
	survivor.settled(t, 1)
	if n := survivor.obs.get(func(c *counter) int { return c.dead[string(schemas.CodeInternal)] }); n != 1 {
		t.Fatalf("survivor dead-lettered %d internal, want 1", n)
	}
}

// The advisory is lost when no worker listens at that moment: a worker
// started later finds the delivered job that nothing tracks and answers it.
func TestJobOutOfDeliveriesWhileNoWorkerListensIsSwept(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.MaxDeliver = 2
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := worker.Provision(ctx, js, []string{"m"}, cfg); err != nil {
		t.Fatal(err)
	}
	publishJob(t, js, makeJob("orphan", 3))
	cons, err := js.Consumer(ctx, schemas.JobsStream, worker.ConsumerName("m"))
	if err != nil {
		t.Fatal(err)
	}
	// Two deliveries taken by "workers" that die without a word, then a
	// pull that makes the server give up on the job; nobody hears the
	// advisory.
	for delivery := 1; delivery <= 3; delivery++ {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range b.Messages() {
			n++
		}
		if want := map[bool]int{true: 1, false: 0}[delivery <= 2]; n != want {
			t.Fatalf("pull %d got %d jobs, want %d", delivery, n, want)
		}
	}
	waitFor(t, 10*time.Second, "the consumer to give up on the job", func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.Delivered.Stream >= 1 && ci.NumAckPending == 0
	})
	if n := streamMsgs(t, js, schemas.JobsStream); n != 1 {
		t.Fatalf("%d jobs in the stream before the sweep, want the orphan", n)
	}
	w := startWorker(t, ns, &slowScorer{}, cfg)
	waitFor(t, 20*time.Second, "error result", func() bool { return storedResults(t, js)["orphan"] == 1 })
	res := lastResult(t, js, "orphan")
	if res.Error == nil || res.Error.Code != schemas.CodeInternal || res.Attempt != 2 {
		t.Fatalf("result %+v, want internal error after 2 deliveries", res)
	}
	waitFor(t, 5*time.Second, "dead letter, queue empty", func() bool {
		return streamMsgs(t, js, schemas.DeadStream) == 1 && streamMsgs(t, js, schemas.JobsStream) == 0
	})
	w.settled(t, 1)
	if n := w.obs.get(func(c *counter) int { return c.dead[string(schemas.CodeInternal)] }); n != 1 {
		t.Fatalf("worker dead-lettered %d internal, want 1", n)
	}
}

type failingScorer struct{ slowScorer }

func (*failingScorer) ScoreEncoded(context.Context, []wordpiece.Encoding) ([]float32, model.Stats, error) {
	return nil, model.Stats{}, errors.New("device lost")
}

// Stopping a worker under load loses nothing: jobs it cannot finish within
// the grace are handed back, and every job ends with exactly one result.
func TestGracefulShutdownUnderLoadLosesNothing(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.ShutdownGrace = 100 * time.Millisecond
	sc := &slowScorer{Delay: 300 * time.Millisecond}
	a := startWorker(t, ns, sc, cfg)
	const n = 60
	for i := range n {
		publishJob(t, js, makeJob(fmt.Sprintf("load-%d", i), 8))
	}
	waitFor(t, 20*time.Second, "some results", func() bool { return len(storedResults(t, js)) >= 8 })
	// Stop while a scorer call (300 ms, over the 100 ms grace) runs, not in
	// the gap where finished jobs are still being acknowledged.
	waitFor(t, 5*time.Second, "a job in inference", func() bool { return sc.Active.Load() > 0 })
	a.stop(t)
	abandoned := a.obs.get(func(c *counter) int { return c.outcomes[worker.OutcomeAbandoned] })
	if abandoned == 0 {
		t.Fatal("no job was in flight past the grace: the test did not exercise the hand-back")
	}
	startWorker(t, ns, &slowScorer{}, testConfig())
	waitFor(t, 60*time.Second, "all results", func() bool { return len(storedResults(t, js)) == n })
	for id, count := range storedResults(t, js) {
		if count != 1 {
			t.Fatalf("job %s has %d results", id, count)
		}
	}
	waitFor(t, 5*time.Second, "jobs stream drained", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
	t.Logf("worker A handed back %d jobs at shutdown", abandoned)
}

func TestProvisionOffNeedsConsumer(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	ic, _ := inject.Preset("ms-marco-MiniLM")
	p, _ := pipeline.New(pipeline.Config{}, pipeline.Model{Name: "m", Scorer: &slowScorer{}, Inject: ic})
	defer p.Close()
	cfg := testConfig()
	cfg.Provision = false
	w, err := worker.New(nc, p, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Run(ctx); !errors.Is(err, worker.ErrNotProvisioned) {
		t.Fatalf("got %v, want ErrNotProvisioned", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []worker.Config{
		{AckWait: time.Second, Heartbeat: 2 * time.Second},
		{Concurrency: 10, MaxAckPending: 5},
		{Replicas: 7},
	}
	for _, c := range tests {
		if err := c.Validate(); !errors.Is(err, worker.ErrInvalidConfig) {
			t.Errorf("%+v: got %v", c, err)
		}
	}
	if err := (worker.Config{}).Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	// Every problem at once.
	err := (worker.Config{Replicas: 7, Partitions: -1, Tenants: []string{"a", "a"}}).Validate()
	for _, want := range []string{"replicas 7", "partitions -1", "tenant a listed twice"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %q: %v", want, err)
		}
	}
}

// TestBacklogIsReported: the worker reads its lane consumers' backlog for
// the Observer (rerank_backlog_jobs): jobs queued behind a slow one show
// up, and the backlog returns to zero once they are done.
func TestBacklogIsReported(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.Concurrency = 1
	cfg.BacklogInterval = 50 * time.Millisecond
	w := startWorker(t, ns, &slowScorer{Delay: 300 * time.Millisecond}, cfg)
	for i := range 6 {
		publishJob(t, js, makeJob(fmt.Sprintf("backlog-%d", i), 2))
	}
	waitFor(t, 20*time.Second, "a backlog of several jobs reported", func() bool {
		return w.obs.get(func(c *counter) int { return int(c.backlog["interactive"]) }) >= 3
	})
	waitFor(t, 30*time.Second, "every result", func() bool { return len(storedResults(t, js)) == 6 })
	waitFor(t, 10*time.Second, "the backlog back to zero", func() bool {
		return w.obs.get(func(c *counter) int { return int(c.last["interactive"]) }) == 0
	})
}

// A worker stopped while it starts (SIGTERM while it provisions its
// streams) stops cleanly: Run returns nil, not the start-up's
// cancellation. One that cannot start (no streams, and not allowed to
// create them) returns that error.
func TestStopWhileStartingIsClean(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	cfg := testConfig()
	w, err := worker.New(nc, &fakeReranker{}, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // SIGTERM before the streams are provisioned
	if err := w.Run(ctx); err != nil {
		t.Fatalf("stopped while starting: %v, want nil", err)
	}
	cfg.Provision = false
	w, _ = worker.New(nc, &fakeReranker{}, cfg, nil, nil)
	if err := w.Run(context.Background()); err == nil {
		t.Fatal("a worker that could not start returned nil")
	}
}
