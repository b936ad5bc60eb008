package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// fakeReranker answers jobs for model "m" with answer, counting calls.
type fakeReranker struct {
	calls  atomic.Int64
	answer func(ctx context.Context, job *schemas.Job) (*schemas.Result, error)
}

func (f *fakeReranker) Models() []string { return []string{"m"} }
func (f *fakeReranker) Rerank(ctx context.Context, _ string, job *schemas.Job, _ time.Time) (*schemas.Result, error) {
	f.calls.Add(1)
	if f.answer == nil {
		return okResult(job), nil
	}
	return f.answer(ctx, job)
}

// okResult ranks a job's candidates in their own order.
func okResult(job *schemas.Job) *schemas.Result {
	res := &schemas.Result{V: schemas.Version, ID: job.ID, Model: "m", Meta: job.Meta}
	for i, c := range job.Candidates {
		res.Results = append(res.Results, schemas.Ranked{Index: i, ID: c.ID, RelevanceScore: float64(-i)})
	}
	return res
}

// storeResult stores res as the answer to message seq of job stream
// stream, as a worker does.
func storeResult(t *testing.T, js jetstream.JetStream, res *schemas.Result, stream string, seq uint64) {
	t.Helper()
	res.JobStream, res.JobSeq = stream, seq
	b, _ := schemas.EncodeResult(res, schemas.Msgpack)
	m := nats.NewMsg(schemas.ResultSubject(res.ID))
	m.Data = b
	m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeMsgpack)
	if _, err := js.PublishMsg(context.Background(), m, jetstream.WithMsgID(worker.ResultMsgID(res.ID, stream, seq))); err != nil {
		t.Fatal(err)
	}
}

func provision(t *testing.T, js jetstream.JetStream, cfg worker.Config) {
	t.Helper()
	if err := worker.Provision(context.Background(), js, []string{"m"}, cfg); err != nil {
		t.Fatal(err)
	}
}

func deadLetters(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(context.Background(), schemas.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			return out
		}
		out = append(out, m)
	}
}

// 1. A job whose reply_to is the JetStream API would, published there, purge
// the job stream: it gets invalid_reply_to on its default subject and a dead
// letter, and every job queued behind it is answered.
func TestSystemReplyToCannotTouchTheQueue(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.Concurrency = 1
	provision(t, js, cfg)
	for _, subject := range []string{"$JS.API.STREAM.PURGE." + schemas.JobsStream, "$KV.config.x", "$SYS.REQ.SERVER.PING", "rerank.results.victim"} {
		j := makeJob("hostile-"+strconv.Itoa(len(subject)), 2)
		j.ReplyTo = subject
		publishJob(t, js, j)
	}
	for i := range 20 {
		publishJob(t, js, makeJob(fmt.Sprintf("healthy-%d", i), 3))
	}
	w := startWorker(t, ns, &slowScorer{}, cfg)
	waitFor(t, 20*time.Second, "every job answered", func() bool { return len(storedResults(t, js)) == 24 })
	for i := range 20 {
		if r := lastResult(t, js, fmt.Sprintf("healthy-%d", i)); r.Error != nil || len(r.Results) != 3 {
			t.Errorf("healthy-%d: %+v", i, r)
		}
	}
	for id := range storedResults(t, js) {
		if strings.HasPrefix(id, "hostile-") {
			if r := lastResult(t, js, id); r.Error == nil || r.Error.Code != schemas.CodeInvalidReplyTo {
				t.Errorf("%s: want invalid_reply_to, got %+v", id, r.Error)
			}
		}
	}
	w.settled(t, 24) // dead letters are published after the error results
	if n := w.obs.get(func(c *counter) int { return c.dead[string(schemas.CodeInvalidReplyTo)] }); n != 4 {
		t.Errorf("%d invalid_reply_to dead letters, want 4", n)
	}
	// The hostile jobs' Terms are not confirmed: poll until they land.
	waitFor(t, 10*time.Second, "the queue empty", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
}

// 4 and 12. While the results stream is gone, finished work is held and
// retried, not redelivered until the deliveries run out: the healthy job is
// answered on its first delivery and the invalid one gets its error result.
func TestResultsOutageLosesNoAnswer(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.MaxDeliver = 2
	provision(t, js, cfg)
	cfg.Provision = false // a provisioning worker could re-create the stream deleted below
	w := startWorker(t, ns, &slowScorer{}, cfg)
	if err := js.DeleteStream(context.Background(), schemas.ResultsStream); err != nil {
		t.Fatal(err)
	}
	publishJob(t, js, makeJob("outage-ok", 3))
	bad := makeJob("outage-bad", 3)
	bad.Candidates[1].ID = bad.Candidates[0].ID
	publishJob(t, js, bad)
	cons, _ := js.Consumer(context.Background(), schemas.JobsStream, worker.ConsumerName("m"))
	waitFor(t, 10*time.Second, "both jobs in flight", func() bool {
		ci, err := cons.Info(context.Background())
		return err == nil && ci.NumAckPending == 2
	})
	time.Sleep(3 * time.Second) // the outage: with the old 100 ms backoff, every delivery is spent by now
	if _, err := js.CreateStream(context.Background(), worker.StreamConfigs(1)[1]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "both answers stored", func() bool {
		s, err := js.Stream(context.Background(), schemas.ResultsStream)
		if err != nil {
			return false
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 2
	})
	if r := lastResult(t, js, "outage-ok"); r.Error != nil || r.Attempt != 1 {
		t.Errorf("healthy job: error %v on attempt %d, want its result on attempt 1", r.Error, r.Attempt)
	}
	if r := lastResult(t, js, "outage-bad"); r.Error == nil || r.Error.Code != schemas.CodeDuplicateCandidateID {
		t.Errorf("invalid job: %+v, want duplicate_candidate_id", r.Error)
	}
	waitFor(t, 10*time.Second, "the queue empty", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
	if n := w.obs.get(func(c *counter) int { return c.redelivered }); n != 0 {
		t.Errorf("%d redeliveries: finished work was handed back", n)
	}
}

// 5. A job at the payload limit that must be dead-lettered does not fit
// beside the reason headers: its dead letter is trimmed, says so, and the
// job leaves the queue with its error result.
func TestDeadLetterAtPayloadLimitIsTrimmed(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	w := startWorker(t, ns, &slowScorer{}, testConfig())
	j := makeJob("huge", 1)
	j.Candidates[0].Text = "x"
	base, _ := schemas.EncodeJob(j, schemas.Msgpack)
	j.Candidates[0].Text = strings.Repeat("a", natsembed.MaxPayload-len(base)-200)
	data, _ := schemas.EncodeJob(j, schemas.Msgpack)
	publishRaw(t, js, j.ID, schemas.ContentTypeMsgpack, data)
	waitFor(t, 20*time.Second, "a dead letter", func() bool { return streamMsgs(t, js, schemas.DeadStream) == 1 })
	d := deadLetters(t, js)[0]
	sum := sha256.Sum256(data)
	if d.Header.Get(schemas.HeaderTrimmed) != "true" || d.Header.Get(schemas.HeaderOriginalSize) != strconv.Itoa(len(data)) ||
		d.Header.Get(schemas.HeaderOriginalSHA256) != hex.EncodeToString(sum[:]) || len(d.Data) >= len(data) ||
		string(d.Data) != string(data[:len(d.Data)]) {
		t.Errorf("dead letter: headers %v, %d of %d bytes", d.Header, len(d.Data), len(data))
	}
	if r := lastResult(t, js, "huge"); r.Error == nil || r.Error.Code != schemas.CodeTextTooLong {
		t.Errorf("error result: %+v", r.Error)
	}
	waitFor(t, 10*time.Second, "the queue empty", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
	if n := w.obs.get(func(c *counter) int { return c.redelivered }); n != 0 {
		t.Errorf("%d redeliveries", n)
	}
}

// 6. A result over the payload limit is the job's fault (too many documents
// asked back): result_too_large at once, never recomputed.
func TestResultTooLargeIsPermanent(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	f := &fakeReranker{answer: func(_ context.Context, job *schemas.Job) (*schemas.Result, error) {
		res := okResult(job)
		doc := strings.Repeat("d", natsembed.MaxPayload/2)
		for i := range res.Results {
			res.Results[i].Document = &doc
		}
		return res, nil
	}}
	cfg := testConfig()
	provision(t, js, cfg)
	w := startWorkerWith(t, ns, f, cfg)
	publishJob(t, js, makeJob("big-result", 3))
	waitFor(t, 20*time.Second, "the error result", func() bool { return len(storedResults(t, js)) == 1 })
	r := lastResult(t, js, "big-result")
	if r.Error == nil || r.Error.Code != schemas.CodeResultTooLarge || !strings.Contains(r.Error.Message, "top_n") {
		t.Fatalf("result: %+v", r.Error)
	}
	waitFor(t, 10*time.Second, "the queue empty", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
	if f.calls.Load() != 1 || w.obs.get(func(c *counter) int { return c.dead[string(schemas.CodeResultTooLarge)] }) != 1 {
		t.Errorf("%d computations (want 1); %v", f.calls.Load(), w.obs)
	}
}

// 9. A panic while answering a job fails that job (internal, dead-lettered)
// and nothing else: the worker goes on answering.
func TestPanicFailsOnlyItsJob(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	f := &fakeReranker{answer: func(_ context.Context, job *schemas.Job) (*schemas.Result, error) {
		if job.Query == "boom" {
			var m map[string]int
			m["x"]++ // a nil-map write: a real runtime panic
		}
		return okResult(job), nil
	}}
	cfg := testConfig()
	provision(t, js, cfg)
	w := startWorkerWith(t, ns, f, cfg)
	boom := makeJob("boom", 2)
	boom.Query = "boom"
	publishJob(t, js, boom)
	for i := range 5 {
		publishJob(t, js, makeJob(fmt.Sprintf("after-boom-%d", i), 2))
	}
	waitFor(t, 20*time.Second, "every answer", func() bool { return len(storedResults(t, js)) == 6 })
	if r := lastResult(t, js, "boom"); r.Error == nil || r.Error.Code != schemas.CodeInternal {
		t.Errorf("panicking job: %+v", r.Error)
	}
	for i := range 5 {
		if r := lastResult(t, js, fmt.Sprintf("after-boom-%d", i)); r.Error != nil {
			t.Errorf("job after the panic: %v", r.Error)
		}
	}
	w.settled(t, 6)
	if p, d := w.obs.get(func(c *counter) int { return c.panics }), w.obs.get(func(c *counter) int { return c.dead[string(schemas.CodeInternal)] }); p != 1 || d != 1 {
		t.Errorf("%d panics and %d internal dead letters, want 1 and 1", p, d)
	}
}

// 10. A redelivered job whose result an earlier delivery already stored is
// acknowledged without being recomputed: no second result, however long
// after the first.
func TestRedeliveredJobWithStoredResultIsNotRecomputed(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	provision(t, js, cfg)
	j := makeJob("answered-before", 2)
	publishJob(t, js, j)
	// The first delivery: taken, answered, but never acknowledged (its
	// worker died between the two).
	cons, _ := js.Consumer(context.Background(), schemas.JobsStream, worker.ConsumerName("m"))
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	taken := 0
	for range batch.Messages() {
		taken++
	}
	if taken != 1 {
		t.Fatalf("took %d deliveries for the first, want 1 (%v)", taken, batch.Error())
	}
	storeResult(t, js, okResult(j), schemas.JobsStream, 1) // what the first delivery's worker stored
	f := &fakeReranker{}
	w := startWorkerWith(t, ns, f, cfg)
	waitFor(t, 20*time.Second, "the redelivery acknowledged", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
	w.settled(t, 1) // the stream drops the job before the ack's reply reaches the worker
	if f.calls.Load() != 0 || storedResults(t, js)[j.ID] != 1 || w.obs.get(func(c *counter) int { return c.outcomes[worker.OutcomeStored] }) != 1 {
		t.Errorf("%d computations, %d stored results, %v: want 0, 1 and one %q outcome", f.calls.Load(), storedResults(t, js)[j.ID], w.obs, worker.OutcomeStored)
	}
}

// A job id reused after the dedup window is a new job message: when it is
// delivered again, the stored result of the id's earlier message is not
// its answer, and the job is computed (a stale answer acked as "stored"
// would reach a client that waits for this message's result).
func TestReusedIDRedeliveryIsRecomputed(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	provision(t, js, cfg)
	old := makeJob("reused", 2)
	storeResult(t, js, okResult(old), schemas.JobsStream, 1) // the id's first message, answered long ago
	publishJob(t, js, makeJob("filler", 1))                  // takes sequence 1 here
	again := makeJob("reused", 3)
	again.Query = "a new question under the old id"
	publishJob(t, js, again) // sequence 2
	cons, _ := js.Consumer(context.Background(), schemas.JobsStream, worker.ConsumerName("m"))
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() { // taken and never settled: both come again
		_ = m
	}
	f := &fakeReranker{}
	w := startWorkerWith(t, ns, f, cfg)
	w.settled(t, 2)
	res := lastResult(t, js, "reused")
	if !res.Answers(schemas.JobsStream, 2) || len(res.Results) != 3 || f.calls.Load() != 2 {
		t.Fatalf("stored result %+v after %d computations: want the answer to message 2 with 3 entries, computed", res, f.calls.Load())
	}
}

// 11. Heartbeats follow the AckWait of the consumer the worker binds to, not
// the worker's flags: under --provision=false ops may define it otherwise.
func TestHeartbeatFollowsTheBoundConsumer(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	ops := testConfig()
	ops.AckWait, ops.MaxDeliver = time.Second, 3
	provision(t, js, ops)
	cfg := testConfig()
	cfg.Provision = false
	cfg.AckWait, cfg.Heartbeat = 30*time.Second, 0 // flags: heartbeat every 10 s
	f := &fakeReranker{answer: func(ctx context.Context, job *schemas.Job) (*schemas.Result, error) {
		select {
		case <-time.After(2500 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return okResult(job), nil
	}}
	w := startWorkerWith(t, ns, f, cfg)
	publishJob(t, js, makeJob("slow", 2))
	waitFor(t, 20*time.Second, "the result", func() bool { return len(storedResults(t, js)) == 1 })
	waitFor(t, 10*time.Second, "the queue empty", func() bool { return streamMsgs(t, js, schemas.JobsStream) == 0 })
	if n, r := f.calls.Load(), w.obs.get(func(c *counter) int { return c.redelivered }); n != 1 || r != 0 {
		t.Errorf("%d computations and %d redeliveries of a 2.5 s job under a 1 s AckWait: the heartbeat did not follow the consumer", n, r)
	}
}

// Lanes end to end: a job published on rerank.jobs.m.bulk is answered, and
// an interactive job published while the bulk one is being scored is
// answered first (its pairs go between the bulk job's chunks).
func TestInteractiveJobOvertakesBulkJobThroughJetStream(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	sc := &slowScorer{Delay: 10 * time.Millisecond, Gate: make(chan struct{})}
	w := startWorker(t, ns, sc, testConfig())
	bulk := makeJob("bulk-job", 600)
	b, _ := schemas.EncodeJob(bulk, schemas.Msgpack)
	m := nats.NewMsg(schemas.LaneSubject("m", schemas.Bulk))
	m.Data = b
	m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeMsgpack)
	if _, err := js.PublishMsg(context.Background(), m, jetstream.WithMsgID(bulk.ID)); err != nil {
		t.Fatal(err)
	}
	// The bulk job's first call is held until the live job is taken, so the
	// live job's pairs are queued long before the bulk job's 37 other
	// chunks (10 ms each) are scored, however slow the fetch.
	waitFor(t, 10*time.Second, "the bulk job being scored", func() bool { return sc.Calls.Load() > 0 })
	publishJob(t, js, makeJob("live-job", 5))
	taken := func(c *counter) int { return strings.Count(strings.Join(c.events, " "), "in-flight+1") }
	waitFor(t, 10*time.Second, "the live job taken", func() bool { return w.obs.get(taken) == 2 })
	close(sc.Gate)
	waitFor(t, 30*time.Second, "both results", func() bool { return len(storedResults(t, js)) == 2 })
	s, _ := js.Stream(context.Background(), schemas.ResultsStream)
	live, err := s.GetLastMsgForSubject(context.Background(), schemas.ResultSubject("live-job"))
	if err != nil {
		t.Fatal(err)
	}
	bulkRes, err := s.GetLastMsgForSubject(context.Background(), schemas.ResultSubject("bulk-job"))
	if err != nil {
		t.Fatal(err)
	}
	if live.Sequence > bulkRes.Sequence {
		t.Fatalf("the interactive job was answered after the bulk job (sequences %d, %d)", live.Sequence, bulkRes.Sequence)
	}
	if r := lastResult(t, js, "bulk-job"); r.Error != nil || len(r.Results) != 600 {
		t.Fatalf("bulk job: %v, %d results", r.Error, len(r.Results))
	}
}
