package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// Tenants have namespaces of their own: one job id used in the shared
// namespace and by two tenants (one of them partitioned) is three jobs,
// none a duplicate of another, each answered in its own namespace; a
// tenant's reply_to lands in its own results, and one outside them is
// refused, with the error result and the dead letter in its namespace.
func TestTenantsHaveNamespacesOfTheirOwn(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.Partitions = 2
	cfg.Tenants = []string{"a", "b"}
	w := startWorker(t, ns, &slowScorer{}, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	publish := func(subject string, j *schemas.Job) *jetstream.PubAck {
		t.Helper()
		b, _ := schemas.EncodeJob(j, schemas.Msgpack)
		m := nats.NewMsg(subject)
		m.Data = b
		m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeMsgpack)
		ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(j.ID))
		if err != nil {
			t.Fatalf("publishing %s to %s: %v", j.ID, subject, err)
		}
		return ack
	}
	lane := schemas.LaneSubject("m", schemas.Interactive)
	acks := map[string]*jetstream.PubAck{
		"":  publish(lane, makeJob("same", 2)),
		"a": publish(schemas.TenantSubject("a", lane), makeJob("same", 2)),
		"b": publish(schemas.TenantSubject("b", schemas.PartitionSubject("m", schemas.Interactive, 1)), makeJob("same", 2)),
	}
	wantStream := map[string]string{"": "RERANK_JOBS", "a": "RERANK_JOBS_T_a", "b": "RERANK_JOBS_P1_T_b"}
	for tenant, ack := range acks {
		if ack.Duplicate || ack.Stream != wantStream[tenant] {
			t.Fatalf("tenant %q: job stored in %s (duplicate %v), want %s", tenant, ack.Stream, ack.Duplicate, wantStream[tenant])
		}
	}
	replied := makeJob("r1", 2)
	replied.ReplyTo = "rerank.results.app.r1"
	publish(schemas.TenantSubject("a", lane), replied)
	outside := makeJob("r2", 2)
	outside.ReplyTo = "_INBOX.a-listener"
	publish(schemas.TenantSubject("a", lane), outside)
	w.settled(t, 5)

	results, _ := js.Stream(ctx, schemas.ResultsStream)
	read := func(subject string) *schemas.Result {
		t.Helper()
		var m *jetstream.RawStreamMsg
		waitFor(t, 10*time.Second, "a result on "+subject, func() bool {
			var err error
			m, err = results.GetLastMsgForSubject(ctx, subject)
			return err == nil
		})
		f, _ := schemas.ParseContentType(m.Header.Get(schemas.HeaderContentType))
		r, err := schemas.DecodeResult(m.Data, f)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for tenant, ack := range acks {
		r := read(schemas.TenantSubject(tenant, schemas.ResultSubject("same")))
		if r.Error != nil || !r.Answers(ack.Stream, ack.Sequence) {
			t.Errorf("tenant %q: result %+v answers %s #%d, want %s #%d", tenant, r.Error, r.JobStream, r.JobSeq, ack.Stream, ack.Sequence)
		}
	}
	if r := read("rerank.tenant.a.results.app.r1"); r.Error != nil || r.ID != "r1" {
		t.Errorf("reply_to in tenant a's results: %+v", r)
	}
	if r := read("rerank.tenant.a.results.r2"); r.Error == nil || r.Error.Code != schemas.CodeInvalidReplyTo {
		t.Errorf("reply_to outside tenant a's results: %+v, want %s", r.Error, schemas.CodeInvalidReplyTo)
	}
	dead, _ := js.Stream(ctx, schemas.DeadStream)
	if m, err := dead.GetLastMsgForSubject(ctx, "rerank.tenant.a.dead.m"); err != nil || m.Header.Get(schemas.HeaderErrorCode) != string(schemas.CodeInvalidReplyTo) {
		t.Errorf("tenant a's dead letter: %v %v", err, m)
	}
	// Nothing of the tenants' in the shared namespace, and nothing outside
	// the namespaces at all.
	info, err := results.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"rerank.results.same": 1, "rerank.tenant.a.results.same": 1, "rerank.tenant.b.results.same": 1,
		"rerank.tenant.a.results.app.r1": 1, "rerank.tenant.a.results.r2": 1}
	if len(info.State.Subjects) != len(want) {
		t.Errorf("stored results on %v, want %v", info.State.Subjects, want)
	}
	for s, n := range want {
		if info.State.Subjects[s] != n {
			t.Errorf("stored results on %v, want %v", info.State.Subjects, want)
			break
		}
	}
}

func TestTenantsAreValidated(t *testing.T) {
	for _, tenants := range [][]string{{"a.b"}, {"a", "a"}, {""}, {"a b"}} {
		cfg := testConfig()
		cfg.Tenants = tenants
		if err := cfg.Validate(); !errors.Is(err, worker.ErrInvalidConfig) {
			t.Errorf("tenants %q: %v, want %v", tenants, err, worker.ErrInvalidConfig)
		}
	}
}

// A worker serving tenants refuses to start on a results stream that
// cannot store their results (provisioned before tenants existed): their
// jobs would never leave the queue.
func TestTenantsNeedTheirResultsSubjects(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig()
	cfg.Tenants = []string{"a"}
	if err := worker.Provision(ctx, js, []string{"m"}, cfg); err != nil {
		t.Fatal(err)
	}
	old := worker.StreamConfigs(1)[1]
	old.Subjects = []string{schemas.ResultsPrefix + ">"}
	if _, err := js.UpdateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	cfg.Provision = false
	w, err := worker.New(nc, &fakeReranker{}, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Run(ctx); !errors.Is(err, worker.ErrNotProvisioned) || !strings.Contains(err.Error(), "rerank provision") {
		t.Fatalf("Run on a results stream without tenants' subjects: %v", err)
	}
}
