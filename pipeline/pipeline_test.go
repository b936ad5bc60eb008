package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/pipeline/pipelinetest"
	"github.com/rerank/rerank/schemas"
)

// fakeScorer scores a pair by a hash of its text, so results are checkable
// without a model, and records how it was called.
type fakeScorer = pipelinetest.HashScorer

var pairScore = pipelinetest.PairScore

func newPipeline(t *testing.T, cfg pipeline.Config, sc *fakeScorer, preset string) *pipeline.Pipeline {
	t.Helper()
	ic, err := inject.Preset(preset)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(cfg, pipeline.Model{Name: "m", Scorer: sc, Inject: ic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func f64(v float64) *float64 { return &v }

func makeJob(id string, n int) *schemas.Job {
	j := &schemas.Job{ID: id, Query: "query " + id, Meta: map[string]string{"k": id}}
	for i := range n {
		j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprintf("c%d", i), Text: fmt.Sprintf("passage %d of %s", i, id), BM25: f64(float64(i % 60))})
	}
	return j
}

func TestRerankSortsAndKeepsEveryCandidateOnce(t *testing.T) {
	sc := &fakeScorer{}
	p := newPipeline(t, pipeline.Config{}, sc, "ms-marco-MiniLM")
	job := makeJob("big", 1000)
	res, err := p.Rerank(context.Background(), "m", job, time.Now().Add(-time.Second))
	if err != nil || res.Error != nil {
		t.Fatalf("Rerank: %v %v", err, res.Error)
	}
	if len(res.Results) != 1000 {
		t.Fatalf("%d results", len(res.Results))
	}
	seen := map[int]bool{}
	for k, r := range res.Results {
		if seen[r.Index] {
			t.Fatalf("candidate %d twice", r.Index)
		}
		seen[r.Index] = true
		c := job.Candidates[r.Index]
		if r.ID != c.ID || float32(r.RelevanceScore) != pairScore(job.Query, c.Text) {
			t.Fatalf("result %d: %+v does not match candidate %+v", k, r, c)
		}
		if k > 0 && r.RelevanceScore > res.Results[k-1].RelevanceScore {
			t.Fatalf("not sorted at %d", k)
		}
		if k > 0 && r.RelevanceScore == res.Results[k-1].RelevanceScore && r.Index < res.Results[k-1].Index {
			t.Fatalf("tie at %d does not keep job order", k)
		}
		if r.Document != nil {
			t.Fatal("document returned without return_documents")
		}
	}
	if res.Meta["k"] != "big" || res.ID != "big" || res.Model != "m" || res.V != 1 {
		t.Fatalf("envelope wrong: %+v", res)
	}
	if res.Timing.QueuedMS < 999 || res.Timing.TotalMS <= 0 {
		t.Fatalf("timing wrong: %+v", res.Timing)
	}
}

func TestTopNAndDocuments(t *testing.T) {
	p := newPipeline(t, pipeline.Config{}, &fakeScorer{}, "ms-marco-MiniLM")
	job := makeJob("j", 20)
	job.TopN, job.ReturnDocuments = 3, true
	res, _ := p.Rerank(context.Background(), "m", job, time.Time{})
	if len(res.Results) != 3 {
		t.Fatalf("%d results, want 3", len(res.Results))
	}
	for _, r := range res.Results {
		if r.Document == nil || *r.Document != job.Candidates[r.Index].Text {
			t.Fatalf("document of %s wrong", r.ID)
		}
	}
	job.TopN = 50
	res, _ = p.Rerank(context.Background(), "m", job, time.Time{})
	if len(res.Results) != 20 {
		t.Fatalf("top_n above the candidate count: %d results", len(res.Results))
	}
}

func TestJobErrorsAreResultsNotFailures(t *testing.T) {
	p := newPipeline(t, pipeline.Config{}, &fakeScorer{}, "all-MiniLM-L12-v3-bm25")
	missing := makeJob("missing", 3)
	missing.Candidates[2].BM25 = nil
	tests := []struct {
		name  string
		model string
		job   *schemas.Job
		want  error
	}{
		{"invalid", "m", &schemas.Job{ID: "x", Candidates: []schemas.Candidate{{ID: "a"}}}, schemas.ErrMissingQuery},
		{"unknown model", "nope", makeJob("u", 1), schemas.ErrUnknownModel},
		{"mismatch", "m", func() *schemas.Job { j := makeJob("mm", 1); j.Model = "other"; return j }(), schemas.ErrModelMismatch},
		{"missing score", "m", missing, schemas.ErrMissingScore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := p.Rerank(context.Background(), tt.model, tt.job, time.Time{})
			if err != nil {
				t.Fatalf("a job at fault is not a transient error: %v", err)
			}
			if res.Error == nil || !errors.Is(res.Error, tt.want) {
				t.Fatalf("got %+v, want %v", res.Error, tt.want)
			}
			if res.ID != tt.job.ID || len(res.Results) != 0 {
				t.Fatalf("error result envelope wrong: %+v", res)
			}
		})
	}
}

// One bad job never fails its batch-mates.
func TestRerankBatchIsolatesBadJobs(t *testing.T) {
	sc := &fakeScorer{}
	p := newPipeline(t, pipeline.Config{MaxBatchDelay: 20 * time.Millisecond}, sc, "all-MiniLM-L12-v3-bm25")
	jobs := []*schemas.Job{makeJob("a", 5), makeJob("b", 5), makeJob("c", 5)}
	jobs[1].Candidates[0].BM25 = nil
	out := p.RerankBatch(context.Background(), "m", jobs)
	if out[0].Err != nil || out[0].Result.Error != nil || len(out[0].Result.Results) != 5 {
		t.Fatalf("job a: %+v", out[0])
	}
	if out[1].Err != nil || !errors.Is(out[1].Result.Error, schemas.ErrMissingScore) {
		t.Fatalf("job b: %+v", out[1])
	}
	if out[2].Err != nil || out[2].Result.Error != nil || len(out[2].Result.Results) != 5 {
		t.Fatalf("job c: %+v", out[2])
	}
}

// Jobs that arrive together share scoring calls; with batching off each
// job has its own. Under testing/synctest's clock every job reaches the
// batcher before its 20 ms wait ends, so the counts are exact.
func TestCrossJobBatchingSharesCalls(t *testing.T) {
	jobs := make([]*schemas.Job, 50)
	for i := range jobs {
		jobs[i] = makeJob(fmt.Sprintf("j%d", i), 10)
	}
	for _, tc := range []struct {
		name  string
		cfg   pipeline.Config
		calls int64
	}{
		{"batched, room for every pair", pipeline.Config{MaxBatchDelay: 20 * time.Millisecond, MaxBatchPairs: 1000}, 1},
		{"batched, 100 pairs a call", pipeline.Config{MaxBatchDelay: 20 * time.Millisecond, MaxBatchPairs: 100}, 5},
		{"batching off", pipeline.Config{MaxBatchDelay: -1, MaxBatchPairs: 1000}, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sc := &fakeScorer{Delay: 5 * time.Millisecond}
				p := newPipeline(t, tc.cfg, sc, "ms-marco-MiniLM")
				out := p.RerankBatch(context.Background(), "m", jobs)
				for i, o := range out {
					if o.Err != nil || o.Result.Error != nil || len(o.Result.Results) != 10 {
						t.Fatalf("job %d: %+v", i, o)
					}
					// Each job's scores are its own, whatever it shared a call with.
					for _, r := range o.Result.Results {
						if float32(r.RelevanceScore) != pairScore(jobs[i].Query, jobs[i].Candidates[r.Index].Text) {
							t.Fatalf("job %d got another job's score", i)
						}
					}
				}
				if calls := sc.Calls.Load(); calls != tc.calls {
					t.Fatalf("%d scorer calls for 50 concurrent jobs of 10 pairs, want %d", calls, tc.calls)
				}
			})
		})
	}
}

func TestScorerFailureIsTransient(t *testing.T) {
	sc := &fakeScorer{}
	sc.Fail.Store(true)
	p := newPipeline(t, pipeline.Config{}, sc, "ms-marco-MiniLM")
	res, err := p.Rerank(context.Background(), "m", makeJob("j", 3), time.Time{})
	if err == nil || res != nil {
		t.Fatalf("got %+v, %v; want a transient error", res, err)
	}
}

func TestContextAndClose(t *testing.T) {
	sc := &fakeScorer{Delay: time.Second}
	p := newPipeline(t, pipeline.Config{}, sc, "ms-marco-MiniLM")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := p.Rerank(ctx, "m", makeJob("j", 3), time.Time{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Fatal("Rerank did not return when its context ended")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := p.Rerank(context.Background(), "m", makeJob("k", 1), time.Time{}); !errors.Is(err, pipeline.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestNewRejectsBadModels(t *testing.T) {
	ic, _ := inject.Preset("ms-marco-MiniLM")
	if _, err := pipeline.New(pipeline.Config{}, pipeline.Model{Name: "a", Scorer: &fakeScorer{}, Inject: ic}, pipeline.Model{Name: "a", Scorer: &fakeScorer{}, Inject: ic}); err == nil {
		t.Fatal("duplicate model accepted")
	}
	if _, err := pipeline.New(pipeline.Config{}, pipeline.Model{Name: "a"}); err == nil {
		t.Fatal("model without scorer accepted")
	}
}
