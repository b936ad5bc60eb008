package eval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rerank/rerank/schemas"
)

// fakeReranker answers like a worker: it scores each candidate with score
// (by candidate id), sorts best first with ties in job order, and answers
// after a random short delay so results arrive out of order.
type fakeReranker struct {
	score func(qid, doc string) float64
	mu    sync.Mutex
	jobs  []*schemas.Job
	fail  func(job *schemas.Job) (*schemas.Result, error)
}

func (f *fakeReranker) Rerank(ctx context.Context, job *schemas.Job) (*schemas.Result, error) {
	f.mu.Lock()
	f.jobs = append(f.jobs, job)
	f.mu.Unlock()
	if err := schemas.Validate(job, "fake", schemas.Limits{}); err != nil {
		return nil, fmt.Errorf("invalid job: %w", err)
	}
	time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
	if f.fail != nil {
		if res, err := f.fail(job); res != nil || err != nil {
			return res, err
		}
	}
	res := &schemas.Result{V: 1, ID: job.ID, Model: "fake"}
	for i, c := range job.Candidates {
		res.Results = append(res.Results, schemas.Ranked{Index: i, ID: c.ID, RelevanceScore: f.score(job.Meta["qid"], c.ID)})
	}
	slices.SortStableFunc(res.Results, func(a, b schemas.Ranked) int {
		switch {
		case a.RelevanceScore > b.RelevanceScore:
			return -1
		case a.RelevanceScore < b.RelevanceScore:
			return 1
		}
		return 0
	})
	return res, nil
}

// fixtureInput is testdata/ with texts and queries for every query.
func fixtureInput(t *testing.T) *Input {
	qrels, run := readFixture(t)
	in := &Input{Qrels: qrels, Run: run, Queries: map[string]string{}, Texts: map[string]string{}}
	for _, qid := range run.Order {
		in.Queries[qid] = "query " + qid
		for _, e := range run.Entries[qid] {
			in.Texts[e.Doc] = "passage " + e.Doc
		}
	}
	return in
}

func TestRunnerRerankWritesAndScores(t *testing.T) {
	in := fixtureInput(t)
	// The fake model puts query 1's relevant d3 (rel 2) first, then ties
	// d1, d2 and d5 at 1.0, then d4; query 5's g11 first; query 2 reversed.
	scores := map[string]float64{"d3": 4, "d1": 1, "d2": 1, "d5": 1, "d4": 0.5, "g11": 3, "e1": 1, "e2": 2}
	fake := &fakeReranker{score: func(qid, doc string) float64 { return float64(float32(scores[doc])) }}
	var out bytes.Buffer
	var progress []Progress
	r := &Runner{Reranker: fake, Inflight: 3, Out: &out, IDPrefix: "eval-test-", Model: "fake",
		Progress: func(p Progress) { progress = append(progress, p) }}
	rep, err := r.Run(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	// Query 3 has no qrels: not re-ranked by default.
	if len(fake.jobs) != 3 || rep.Reranked != 3 || rep.Pairs != 5+2+12 || !slices.Equal(rep.Queries, []string{"1", "2", "5"}) {
		t.Fatalf("jobs %d, report %+v", len(fake.jobs), rep)
	}
	for _, j := range fake.jobs {
		if !strings.HasPrefix(j.ID, "eval-test-") {
			t.Fatalf("job id %q", j.ID)
		}
	}
	// The written run: queries in run order; query 1 by score, the 1.0 tie
	// in first-stage order (d2 rank 1, d1 rank 3, d5 rank 5).
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 19 {
		t.Fatalf("%d lines written:\n%s", len(lines), out.String())
	}
	wantQ1 := []string{"1 Q0 d3 1 4 rerank", "1 Q0 d2 2 1 rerank", "1 Q0 d1 3 1 rerank", "1 Q0 d5 4 1 rerank", "1 Q0 d4 5 0.5 rerank"}
	if !slices.Equal(lines[:5], wantQ1) {
		t.Fatalf("query 1 written as\n%s\nwant\n%s", strings.Join(lines[:5], "\n"), strings.Join(wantQ1, "\n"))
	}
	if lines[5] != "2 Q0 e2 1 2 rerank" || lines[7] != "5 Q0 g11 1 3 rerank" {
		t.Fatalf("later queries: %q, %q", lines[5], lines[7])
	}
	// 2 adjacent exact ties in query 1 (d2=d1, d1=d5), and 10 in query 5
	// (g01..g12 except g11 all score 0: 11 passages, 10 adjacent pairs).
	if rep.Ties != 12 {
		t.Fatalf("ties %d, want 12", rep.Ties)
	}
	// First stage as in TestFixtureMetrics.
	checkScores(t, "first stage", rep.FirstMean, Scores{MRR10: 1.0 / 9, NDCG10: 0.4348079399079101 / 3, MAP: 0.12289562289562288, Recall100: 5.0 / 9, Recall1000: 5.0 / 9})
	// Re-ranked, as trec_eval ranks the written file (ties by docno descending):
	//   query 1: d3(2) d5 d2(0) d1(1) d4 — relevant d3, d1, d9 (3):
	//     MRR 1/1; MAP (1/1 + 2/4)/3 = 0.5; recall 2/3;
	//     nDCG: DCG = 2/log2(2) + 1/log2(5) = 2 + 0.4306765581 = 2.4306765581,
	//           ideal 3.1309297536 → 0.7763461...
	//   query 2: nothing relevant → 0.
	//   query 5: g11 first → MRR 1, MAP 1, recall 1, nDCG 1.
	q1NDCG := 2.4306765580733931 / 3.1309297535714578
	checkScores(t, "re-ranked", rep.RerankMean, Scores{MRR10: 2.0 / 3, NDCG10: (q1NDCG + 1) / 3, MAP: 1.5 / 3, Recall100: 5.0 / 9, Recall1000: 5.0 / 9})
	// Reading the written run back and scoring it gives the same numbers.
	written, err := ReadRun(strings.NewReader(out.String()), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkScores(t, "written run", Evaluate(in.Qrels, written, 0, 1).Mean, rep.RerankMean)
	// Recall cannot change when the whole depth is re-ranked: p = 1.
	if rep.Tests[Recall1000].P != 1 {
		t.Fatalf("recall test %+v", rep.Tests[Recall1000])
	}
	// Progress: a first call at 0, one per answer, the last complete.
	if len(progress) != 4 || progress[0].Done != 0 || progress[3].Done != 3 || progress[3].Pairs != 19 || progress[3].TotalPairs != 19 {
		t.Fatalf("progress %+v", progress)
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3 queries evaluated", "MRR@10", "nDCG@10", "MAP", "R@100", "R@1000", "0.1111", "0.6667", "p-value", "df 2"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if s := rep.Summary(); !strings.Contains(s, "3 queries") || strings.Contains(s, "\n") {
		t.Errorf("summary %q", s)
	}
	t.Logf("\n%s", table.String())
}

func TestRunnerOptions(t *testing.T) {
	in := fixtureInput(t)
	fake := &fakeReranker{score: func(_, doc string) float64 { return float64(len(doc)) }}
	var out bytes.Buffer
	// Unjudged queries are re-ranked and written, never scored; depth cuts.
	rep, err := (&Runner{Reranker: fake, Options: Options{Depth: 2, RerankUnjudged: true}, Out: &out, Tag: "mine"}).Run(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Reranked != 4 || len(rep.Queries) != 3 || rep.Pairs != 2+2+1+2 || strings.Count(out.String(), " mine\n") != 7 {
		t.Fatalf("report %+v\n%s", rep, out.String())
	}
	// The first stage is scored at the same depth (trec_eval -M 2).
	// Query 1 top 2: d2 (rel 0), d4 (unjudged): nothing relevant, so all 0.
	if rep.First[0] != (Scores{}) {
		t.Fatalf("query 1 at depth 2: %v", rep.First[0])
	}
	// MaxQueries keeps the first N selected.
	fake.jobs = nil
	rep, err = (&Runner{Reranker: fake, Options: Options{MaxQueries: 2}}).Run(context.Background(), in)
	if err != nil || len(fake.jobs) != 2 || !slices.Equal(rep.Queries, []string{"1", "2"}) {
		t.Fatalf("max queries: %v %+v", err, rep)
	}
	if _, err := (&Runner{Reranker: fake, Tag: "two words"}).Run(context.Background(), in); err == nil {
		t.Fatal("tag with a space accepted")
	}
	delete(in.Queries, "5")
	if _, err := (&Runner{Reranker: fake}).Run(context.Background(), in); err == nil || !strings.Contains(err.Error(), "5") {
		t.Fatalf("missing query text: %v", err)
	}
}

func TestRunnerStopsOnFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(job *schemas.Job) (*schemas.Result, error)
		want string
	}{
		{"rejected job", func(job *schemas.Job) (*schemas.Result, error) {
			return &schemas.Result{ID: job.ID, Error: schemas.CandidateErrorf(schemas.CodeMissingScore, 0, job.Candidates[0].ID, "no dpr")}, nil
		}, "missing_score"},
		{"transport error", func(*schemas.Job) (*schemas.Result, error) { return nil, errors.New("connection lost") }, "connection lost"},
		{"result of another job", func(job *schemas.Job) (*schemas.Result, error) {
			return &schemas.Result{ID: job.ID + "x"}, nil
		}, "result of job"},
		{"candidates missing", func(job *schemas.Job) (*schemas.Result, error) {
			return &schemas.Result{ID: job.ID, Results: []schemas.Ranked{{Index: 0, ID: job.Candidates[0].ID}}}, nil
		}, "candidates ranked"},
		{"unknown candidate", func(job *schemas.Job) (*schemas.Result, error) {
			res := &schemas.Result{ID: job.ID}
			for i := range job.Candidates {
				res.Results = append(res.Results, schemas.Ranked{Index: i, ID: "zz"})
			}
			return res, nil
		}, "not in the job"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := fixtureInput(t)
			fake := &fakeReranker{score: func(string, string) float64 { return 0 }, fail: func(job *schemas.Job) (*schemas.Result, error) {
				if job.Meta["qid"] != "2" {
					return nil, nil
				}
				return tc.fail(job)
			}}
			var out bytes.Buffer
			_, err := (&Runner{Reranker: fake, Out: &out}).Run(context.Background(), in)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "query 2") {
				t.Fatalf("err %v, want it to name query 2 and %q", err, tc.want)
			}
		})
	}
	// A cancelled context ends the run with its error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fake := &fakeReranker{score: func(string, string) float64 { return 0 }, fail: func(*schemas.Job) (*schemas.Result, error) {
		return nil, context.Canceled
	}}
	if _, err := (&Runner{Reranker: fake}).Run(ctx, fixtureInput(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestFormatProgress(t *testing.T) {
	got := FormatProgress(Progress{Done: 5, Total: 20, Pairs: 250, TotalPairs: 1000, Elapsed: 5 * time.Second}, 20)
	// 25% of the pairs: 5 of 20 cells; 50 pairs/s; 750 pairs left → 15 s.
	if want := "[====>               ] 5/20 queries  25%  50 pairs/s  ETA 15s"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	got = FormatProgress(Progress{Done: 20, Total: 20, Pairs: 1000, TotalPairs: 1000, Elapsed: 3723 * time.Second}, 10)
	if want := "[==========] 20/20 queries 100%  0 pairs/s  done in 1h02m"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	var buf bytes.Buffer
	b := NewBar(&buf)
	b.Status("loading")
	b.Update(Progress{Done: 1, Total: 1, Pairs: 3, TotalPairs: 3, Elapsed: time.Second})
	b.Finish()
	if s := buf.String(); !strings.HasPrefix(s, "\rloading") || !strings.Contains(s, "1/1 queries") || !strings.HasSuffix(s, "\r") {
		t.Fatalf("bar wrote %q", s)
	}
}
