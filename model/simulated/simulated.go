package simulated

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/wordpiece"
)

// Cost is what one scoring call costs: PerCall once, plus PerPair for each
// pair it scores.
type Cost struct {
	PerPair, PerCall time.Duration
}

// Of is the cost of a call scoring pairs pairs.
func (c Cost) Of(pairs int) time.Duration { return c.PerCall + time.Duration(pairs)*c.PerPair }

// ErrInvalidSpec reports a --test-simulated-model value that does not parse.
var ErrInvalidSpec = errors.New("invalid simulated model spec")

// ParseSpec parses NAME:PER_PAIR:PER_CALL, e.g. "sim:500us:2ms" (a call of
// 16 pairs then takes 10 ms: 1,600 pairs/s).
func ParseSpec(s string) (name string, c Cost, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" {
		return "", Cost{}, fmt.Errorf("%w %q: want NAME:PER_PAIR:PER_CALL, e.g. sim:500us:2ms", ErrInvalidSpec, s)
	}
	if c.PerPair, err = time.ParseDuration(parts[1]); err != nil || c.PerPair < 0 {
		return "", Cost{}, fmt.Errorf("%w %q: per-pair cost %q", ErrInvalidSpec, s, parts[1])
	}
	if c.PerCall, err = time.ParseDuration(parts[2]); err != nil || c.PerCall < 0 {
		return "", Cost{}, fmt.Errorf("%w %q: per-call cost %q", ErrInvalidSpec, s, parts[2])
	}
	if c.PerPair > time.Second || c.PerCall > time.Minute {
		return "", Cost{}, fmt.Errorf("%w %q: costs over 1s a pair or 1m a call", ErrInvalidSpec, s)
	}
	return parts[0], c, nil
}

// Model is a simulated cross-encoder. It satisfies pipeline.Scorer and is
// safe for concurrent use.
type Model struct {
	cost Cost
}

// New returns a simulated model with the given cost.
func New(c Cost) *Model { return &Model{cost: c} }

// Cost is the model's cost.
func (m *Model) Cost() Cost { return m.cost }

// Tokenize "encodes" each pair as two tokens: hashes of its two texts. Two
// pairs with the same text get the same encoding, hence the same score.
func (m *Model) Tokenize(pairs []wordpiece.Pair) ([]wordpiece.Encoding, error) {
	out := make([]wordpiece.Encoding, len(pairs))
	for i, p := range pairs {
		out[i] = wordpiece.Encoding{IDs: []int64{hash(p.A), hash(p.B)}, TypeIDs: []int64{0, 1}}
	}
	return out, nil
}

func hash(s string) int64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return int64(h.Sum64() >> 1)
}

// ScoreEncoded waits for the cost of scoring encs, or until ctx ends, and
// returns each pair's score: a number in [-8, 8) fixed by its encoding alone
// (so a pair's score never depends on its batch).
func (m *Model) ScoreEncoded(ctx context.Context, encs []wordpiece.Encoding) ([]float32, model.Stats, error) {
	start := time.Now()
	st := model.Stats{Pairs: len(encs)}
	if len(encs) == 0 {
		return nil, st, nil
	}
	for i, e := range encs {
		if len(e.IDs) != 2 {
			return nil, st, fmt.Errorf("scoring pair %d: not a simulated model's encoding (%d tokens)", i, len(e.IDs))
		}
	}
	t := time.NewTimer(m.cost.Of(len(encs)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, st, fmt.Errorf("scoring %d pairs: %w", len(encs), ctx.Err())
	}
	scores := make([]float32, len(encs))
	for i, e := range encs {
		h := uint64(e.IDs[0])*0x9E3779B97F4A7C15 ^ uint64(e.IDs[1])
		scores[i] = float32(h>>40)/float32(1<<24)*16 - 8
		st.RealTokens += 2
		st.PaddedTokens += 2
	}
	st.Batches = 1
	st.BatchSizes = []int{len(encs)}
	st.InferenceTime = time.Since(start)
	return scores, st, nil
}
