package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

// poisonScorer fails any call that holds a pair of a passage containing
// "poison" (as ONNX Runtime fails a whole batch over one bad input), and
// fails tokenizing a pair whose query is "too long" as the tokenizer does
// under only_second truncation.
type poisonScorer struct {
	fakeScorer
	failedPairs atomic.Int64 // pairs in the largest failed call
}

func (p *poisonScorer) Tokenize(pairs []wordpiece.Pair) ([]wordpiece.Encoding, error) {
	encs, err := p.fakeScorer.Tokenize(pairs)
	for i, pr := range pairs {
		if strings.Contains(pr.A, "too long") {
			return nil, &model.PairError{Index: i, Err: wordpiece.ErrSequenceTooShort}
		}
		if strings.Contains(pr.B, "poison") {
			encs[i].IDs[1] = -1
		}
	}
	return encs, err
}

func (p *poisonScorer) ScoreEncoded(ctx context.Context, encs []wordpiece.Encoding) ([]float32, model.Stats, error) {
	for _, e := range encs {
		if e.IDs[1] == -1 {
			p.Calls.Add(1)
			if n := int64(len(encs)); n > p.failedPairs.Load() {
				p.failedPairs.Store(n)
			}
			return nil, model.Stats{}, errors.New("ORT: index out of range")
		}
	}
	return p.fakeScorer.ScoreEncoded(ctx, encs)
}

func simpleJob(id, query string, texts ...string) *schemas.Job {
	j := &schemas.Job{ID: id, Query: query}
	for i, s := range texts {
		j.Candidates = append(j.Candidates, schemas.Candidate{ID: string(rune('a' + i)), Text: s})
	}
	return j
}

// 7. A scoring call that fails over one job's pairs fails that job only:
// its batch-mates are scored again on their own.
func TestFailedSharedCallFailsOnlyTheGuiltyJob(t *testing.T) {
	sc := &poisonScorer{}
	ic, _ := inject.Preset("ms-marco-MiniLM")
	// The delay lets all three jobs' goroutines reach the batcher, even on
	// a loaded machine, so the guilty job shares its call.
	p, err := pipeline.New(pipeline.Config{MaxBatchDelay: 250 * time.Millisecond}, pipeline.Model{Name: "m", Scorer: sc, Inject: ic})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out := p.RerankBatch(context.Background(), "m", []*schemas.Job{
		simpleJob("healthy-1", "q", "one", "two"),
		simpleJob("guilty", "q", "fine", "poison pill"),
		simpleJob("healthy-2", "q", "three"),
	})
	if sc.failedPairs.Load() < 3 {
		t.Fatalf("the guilty job never shared a call (largest failed call: %d pairs)", sc.failedPairs.Load())
	}
	for i, id := range []string{"healthy-1", "guilty", "healthy-2"} {
		o := out[i]
		if id == "guilty" {
			if o.Err == nil {
				t.Errorf("the guilty job succeeded")
			}
			continue
		}
		if o.Err != nil || o.Result == nil || o.Result.Error != nil {
			t.Errorf("%s failed with its batch-mate: %v", id, o.Err)
		}
	}
}

// 8. A tokenizer failure caused by the job's input is the job's fault:
// input_too_long naming the candidate, never internal.
func TestTokenizerFailureOfTheInputIsInputTooLong(t *testing.T) {
	sc := &poisonScorer{}
	ic, _ := inject.Preset("ms-marco-MiniLM")
	p, err := pipeline.New(pipeline.Config{}, pipeline.Model{Name: "m", Scorer: sc, Inject: ic})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	res, err := p.Rerank(context.Background(), "m", simpleJob("long", "a query far too long", "x", "y"), time.Time{})
	if err != nil || res.Error == nil {
		t.Fatalf("got %v, %+v", err, res)
	}
	if !errors.Is(res.Error, schemas.ErrInputTooLong) || res.Error.Candidate == nil || res.Error.Candidate.ID != "a" {
		t.Fatalf("error %v, want input_too_long naming candidate a", res.Error)
	}
	if !res.Error.Code.Permanent() {
		t.Fatalf("input_too_long must be permanent")
	}
}
