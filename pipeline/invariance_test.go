package pipeline_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

// A job's scores do not depend on how the scheduler cut it into chunks or
// which other jobs shared its calls: the tiny model scores a job the same,
// within 1e-5, alone in one call and chunked between other jobs' pairs.
func TestScoresIndependentOfScheduling(t *testing.T) {
	rt, err := model.OpenRuntime(testenv.ORTLib(t))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	m, err := rt.Load(testfixture.TinyModel(t), model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ic, _ := inject.Preset("ms-marco-MiniLM")
	words := strings.Fields("the quick brown fox jumps over a lazy dog while paris remains the capital of france")
	job := func(id string, n int) *schemas.Job {
		j := &schemas.Job{ID: id, Query: "what is the capital of france"}
		for i := range n {
			text := strings.Join(words[:1+(i*7)%len(words)], " ")
			j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprint(i), Text: text})
		}
		return j
	}
	target := job("target", 37)
	alone, err := pipeline.New(pipeline.Config{MaxBatchDelay: -1}, pipeline.Model{Name: "m", Scorer: m, Inject: ic})
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	want, err := alone.Rerank(context.Background(), "m", target, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	chunked, err := pipeline.New(pipeline.Config{MaxBatchPairs: 4, MaxBatchDelay: 5 * time.Millisecond}, pipeline.Model{Name: "m", Scorer: m, Inject: ic})
	if err != nil {
		t.Fatal(err)
	}
	defer chunked.Close()
	jobs := []*schemas.Job{target, job("a", 3), job("b", 11), job("c", 2)}
	jobs[1].Lane = schemas.Bulk
	out := chunked.RerankBatch(context.Background(), "m", jobs)
	if out[0].Err != nil {
		t.Fatal(out[0].Err)
	}
	score := map[int]float64{}
	for _, r := range want.Results {
		score[r.Index] = r.RelevanceScore
	}
	for _, r := range out[0].Result.Results {
		if d := math.Abs(r.RelevanceScore - score[r.Index]); d > 1e-5 {
			t.Fatalf("candidate %d: %v chunked, %v alone (|Δ| %g)", r.Index, r.RelevanceScore, score[r.Index], d)
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testfixture.Cleanup(false)
	os.Exit(code)
}
