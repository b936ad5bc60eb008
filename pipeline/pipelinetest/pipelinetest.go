// Package pipelinetest holds the pipeline's stand-in model for tests of
// the pipeline and of the packages above it (worker, client): a scorer
// whose every pair has a stable score of its own, with knobs that make its
// calls slow, gated, hung or failing, and counters of what it was asked.
//
// It imports model (for model.Stats), model/wordpiece and the standard
// library; only tests import it.
package pipelinetest

import (
	"context"
	"errors"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/wordpiece"
)

// ErrDeviceLost is what a failing HashScorer's calls return.
var ErrDeviceLost = errors.New("device lost")

// PairHash is the hash a pair's encoding carries: 0 to 9,999.
func PairHash(a, b string) int64 {
	h := fnv.New32a()
	h.Write([]byte(a + "\x00" + b))
	return int64(h.Sum32() % 10000)
}

// PairScore is a pair's score: its hash / 100.
func PairScore(a, b string) float32 { return float32(PairHash(a, b)) / 100 }

// HashScorer is a pipeline.Scorer (and Tokenizer) for tests. The zero
// value scores at once; it is safe for concurrent use.
type HashScorer struct {
	Delay  time.Duration // each call waits this long (on the caller's clock: a synctest bubble's inside one)
	Gate   chan struct{} // if set, each call waits for it to close
	Hang   atomic.Bool   // calls wait until their context ends
	Fail   atomic.Bool   // calls fail with ErrDeviceLost
	Calls  atomic.Int64  // calls made
	Active atomic.Int64  // calls running now

	mu    sync.Mutex
	sizes []int
}

// Tokenize encodes each pair as [CLS] hash [SEP].
func (s *HashScorer) Tokenize(pairs []wordpiece.Pair) ([]wordpiece.Encoding, error) {
	encs := make([]wordpiece.Encoding, len(pairs))
	for i, p := range pairs {
		encs[i] = wordpiece.Encoding{IDs: []int64{101, PairHash(p.A, p.B), 102}, TypeIDs: []int64{0, 0, 0}}
	}
	return encs, nil
}

// ScoreEncoded scores each encoding as PairScore of its pair, after the
// waits its knobs ask for.
func (s *HashScorer) ScoreEncoded(ctx context.Context, encs []wordpiece.Encoding) ([]float32, model.Stats, error) {
	s.Calls.Add(1)
	s.Active.Add(1)
	defer s.Active.Add(-1)
	s.mu.Lock()
	s.sizes = append(s.sizes, len(encs))
	s.mu.Unlock()
	if s.Gate != nil {
		select {
		case <-s.Gate:
		case <-ctx.Done():
			return nil, model.Stats{}, ctx.Err()
		}
	}
	wait := s.Delay
	if s.Hang.Load() {
		wait = time.Hour
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, model.Stats{}, ctx.Err()
		}
	}
	if s.Fail.Load() {
		return nil, model.Stats{}, ErrDeviceLost
	}
	out := make([]float32, len(encs))
	for i, e := range encs {
		out[i] = float32(e.IDs[1]) / 100
	}
	return out, model.Stats{Pairs: len(encs), Batches: 1}, nil
}

// Sizes are the pairs of each call, in the order they began.
func (s *HashScorer) Sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.sizes...)
}

// PairsScored is the pairs of all calls.
func (s *HashScorer) PairsScored() int {
	n := 0
	for _, k := range s.Sizes() {
		n += k
	}
	return n
}
