package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/pipeline/paircache"
	"github.com/rerank/rerank/schemas"
)

// digester is a Scorer that states its provenance (*model.Model does).
type digester interface{ Digest() string }

// modelDigest is m's provenance: its scorer's digest with its injection
// config; "" when the scorer states none (its pairs are never cached).
func modelDigest(m Model) (string, error) {
	d, ok := m.Scorer.(digester)
	if !ok || d.Digest() == "" {
		return "", nil
	}
	ic, err := json.Marshal(m.Inject)
	if err != nil {
		return "", fmt.Errorf("digesting model %s's injection config: %w", m.Name, err)
	}
	h := sha256.New()
	h.Write([]byte(d.Digest()))
	h.Write([]byte{0})
	h.Write(ic)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// scoreCached scores encs through the pair cache: cached pairs are taken
// from it, pairs another job is scoring at this moment are waited for,
// and only the rest are scheduled, then stored. It returns the scores in
// encs order and how many did not need scoring here. Without a cache, or
// for a model without a digest, it is score.
func (b *batcher) scoreCached(ctx context.Context, lane schemas.Lane, encs []wordpiece.Encoding) ([]float32, int, error) {
	c := b.p.cfg.Cache
	if c == nil || b.digest == "" {
		s, err := b.score(ctx, lane, encs)
		return s, 0, err
	}
	scores := make([]float32, len(encs))
	var (
		own      []int // pairs this job scores, and their flights
		flights  []*paircache.Flight
		waiting  []int // pairs another job scores
		shared   []*paircache.Flight
		reused   int
		finished bool
	)
	defer func() {
		if !finished { // a failure: the flights this job owns end unscored
			for _, f := range flights {
				f.Abandon()
			}
		}
	}()
	var alone []int // pairs in flights of a later lane: scored here too
	for i, enc := range encs {
		s, hit, f, owner := c.Lookup(paircache.KeyOf(b.digest, enc), int(lane))
		switch {
		case hit:
			scores[i] = s
			reused++
		case owner:
			own, flights = append(own, i), append(flights, f)
		case f.Rank() > int(lane):
			// A bulk job scoring it may be served long after this
			// interactive job: waiting would make the lane wait for it.
			alone = append(alone, i)
		default:
			waiting, shared = append(waiting, i), append(shared, f)
		}
	}
	if len(own)+len(alone) > 0 {
		idx := append(slices.Clip(own), alone...)
		part := make([]wordpiece.Encoding, len(idx))
		for k, i := range idx {
			part[k] = encs[i]
		}
		got, err := b.score(ctx, lane, part)
		if err != nil {
			return nil, 0, err
		}
		for k, i := range idx {
			scores[i] = got[k]
			if k < len(own) {
				flights[k].Done(got[k])
			} else {
				c.Put(paircache.KeyOf(b.digest, encs[i]), got[k])
			}
		}
	}
	finished = true
	// Pairs in other jobs' flights (or a repeat within this job): their
	// scores, or, where a flight was abandoned, this job scores them.
	var again []int
	for k, i := range waiting {
		s, ok, err := shared[k].Wait(ctx)
		if err != nil {
			return nil, 0, err
		}
		if !ok {
			again = append(again, i)
			continue
		}
		scores[i] = s
		reused++
	}
	if len(again) > 0 {
		part := make([]wordpiece.Encoding, len(again))
		for k, i := range again {
			part[k] = encs[i]
		}
		got, err := b.score(ctx, lane, part)
		if err != nil {
			return nil, 0, err
		}
		for k, i := range again {
			scores[i] = got[k]
			c.Put(paircache.KeyOf(b.digest, encs[i]), got[k])
		}
	}
	return scores, reused, nil
}
