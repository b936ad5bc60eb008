package client_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// lengthReranker ranks candidates by text length, longest first: a
// deterministic stand-in for a model, so that the tests check the client
// and the wire, not scores.
type lengthReranker struct{ calls sync.Map } // job id → times run

func (r *lengthReranker) Models() []string { return []string{"m"} }

func (r *lengthReranker) Rerank(_ context.Context, model string, job *schemas.Job, _ time.Time) (*schemas.Result, error) {
	n, _ := r.calls.LoadOrStore(job.ID, new(int))
	*n.(*int)++
	res := &schemas.Result{V: schemas.Version, ID: job.ID, Model: model, Meta: job.Meta}
	for i, c := range job.Candidates {
		res.Results = append(res.Results, schemas.Ranked{Index: i, ID: c.ID, RelevanceScore: float64(len(c.Text))})
	}
	slices.SortStableFunc(res.Results, func(a, b schemas.Ranked) int { return cmp.Compare(b.RelevanceScore, a.RelevanceScore) })
	return res, nil
}

type env struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	r   *lengthReranker
	url string
	cfg worker.Config
}

// setup starts an in-process JetStream server, provisions the streams, and
// starts a worker on them unless noWorker.
func setup(t *testing.T, noWorker bool) *env {
	t.Helper()
	return setupWith(t, worker.Config{Provision: true, FetchWait: 200 * time.Millisecond, WorkerID: "w"}, noWorker)
}

// startNATS starts an in-process JetStream server and connects to it.
func startNATS(t *testing.T) (*natsembed.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return ns, nc, js
}

// setupWith is setup with the worker configuration (and stream limits) cfg.
func setupWith(t *testing.T, cfg worker.Config, noWorker bool) *env {
	t.Helper()
	ns, nc, js := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := worker.Provision(ctx, js, []string{"m"}, cfg); err != nil {
		t.Fatal(err)
	}
	e := &env{nc: nc, js: js, r: &lengthReranker{}, url: ns.ClientURL(), cfg: cfg}
	if noWorker {
		return e
	}
	testfixture.StartWorker(t, ns.ClientURL(), e.r, cfg)
	return e
}

func job(id string, texts ...string) *schemas.Job {
	j := &schemas.Job{ID: id, Query: "q"}
	for i, s := range texts {
		j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprint("c", i), Text: s})
	}
	return j
}

func TestSubmitBothFormatsAndSubjects(t *testing.T) {
	e := setup(t, false)
	for _, tc := range []struct {
		name    string
		format  schemas.Format
		replyTo string
	}{
		{"msgpack default subject", schemas.Msgpack, ""},
		{"json default subject", schemas.JSON, ""},
		{"msgpack core reply subject", schemas.Msgpack, "app.answers.one"},
		{"json stored reply subject", schemas.JSON, "rerank.results.search.json-stored-reply-subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(e.nc, client.Options{Model: "m", Format: tc.format})
			if err != nil {
				t.Fatal(err)
			}
			j := job(strings.ReplaceAll(tc.name, " ", "-"), "bb", "a", "cccc")
			j.ReplyTo = tc.replyTo
			j.Meta = map[string]string{"k": "v"}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := c.Submit(ctx, j)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range res.Results {
				ids = append(ids, r.ID)
			}
			if res.ID != j.ID || res.Error != nil || !slices.Equal(ids, []string{"c2", "c0", "c1"}) || res.Meta["k"] != "v" {
				t.Fatalf("result %+v, ranking %v", res, ids)
			}
		})
	}
}

func TestSubmitAsyncManyInFlight(t *testing.T) {
	e := setup(t, false)
	c, _ := client.New(e.nc, client.Options{Model: "m"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var pending []*client.Pending
	for i := range 100 {
		p, err := c.SubmitAsync(ctx, job(fmt.Sprint("async-", i), strings.Repeat("x", i%7+1), "yy"))
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	for i, p := range pending {
		res, err := p.Result(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint("async-", i); res.ID != want || len(res.Results) != 2 {
			t.Fatalf("handle %d got result %s with %d results", i, res.ID, len(res.Results))
		}
	}
}

// A job submitted again within the dedup window runs once, and the second
// handle still gets the stored result.
func TestDuplicateSubmissionGetsStoredResult(t *testing.T) {
	e := setup(t, false)
	c, _ := client.New(e.nc, client.Options{Model: "m"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := c.Submit(ctx, job("dup", "a", "bb"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.SubmitAsync(ctx, job("dup", "a", "bb"))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Duplicate() {
		t.Fatal("second submission not recognized as a duplicate")
	}
	again, err := p.Result(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || len(again.Results) != len(first.Results) {
		t.Fatalf("stored result %+v, first %+v", again, first)
	}
	if n, _ := e.r.calls.Load("dup"); *n.(*int) != 1 {
		t.Fatalf("job ran %d times", *n.(*int))
	}
}

func TestSubmitRejectsBeforePublishing(t *testing.T) {
	e := setup(t, true)
	huge := job("huge")
	for i := range 200 {
		huge.Candidates = append(huge.Candidates, schemas.Candidate{ID: fmt.Sprint(i), Text: strings.Repeat("w", 60<<10)})
	}
	for _, tc := range []struct {
		name string
		opts client.Options
		job  *schemas.Job
		want error
	}{
		{"no model", client.Options{}, job("x", "a"), client.ErrNoModel},
		{"over max payload", client.Options{Model: "m"}, huge, client.ErrPayloadTooLarge},
		{"missing query", client.Options{Model: "m"}, &schemas.Job{ID: "x", Candidates: []schemas.Candidate{{ID: "a", Text: "t"}}}, schemas.ErrMissingQuery},
		{"no candidates", client.Options{Model: "m"}, job("x"), schemas.ErrNoCandidates},
		{"job model wins", client.Options{Model: "m"}, &schemas.Job{ID: "x", Model: "other", Query: "q", Candidates: []schemas.Candidate{{ID: "a", Text: "t"}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := client.New(e.nc, tc.opts)
			p, err := c.SubmitAsync(context.Background(), tc.job)
			if p != nil {
				p.Cancel()
			}
			if tc.want == nil {
				// Job.Model wins over Options.Model: published for "other",
				// a model nobody serves, so it is accepted by the stream.
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	info, err := e.js.Stream(context.Background(), schemas.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("%d jobs in the stream, want only the one for model other", n)
	}
}

// Without a worker nothing answers: Result returns when ctx ends.
func TestResultHonoursContext(t *testing.T) {
	e := setup(t, true)
	c, _ := client.New(e.nc, client.Options{Model: "m"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Submit(ctx, job("unanswered", "a"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned after %s", d)
	}
}
