package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/pipeline/paircache"
	"github.com/rerank/rerank/schemas"
)

// digester is a Scorer that states its provenance (*model.Model does).
type digester interface{ Digest() string }

// batchInvariant is a Scorer that says whether a pair's score is the same
// whatever pairs share its batch (up to rounding): a dynamically quantized
// graph run with batches over one pair is not, and is never cached.
type batchInvariant interface{ BatchInvariant() bool }

// cacheable reports whether m's scores may be cached.
func cacheable(m Model) bool {
	bi, ok := m.Scorer.(batchInvariant)
	return !ok || bi.BatchInvariant()
}

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
// from it, pairs another job is scoring at this moment are waited for
// (when that job is served no later and is not much larger than this one:
// else this job scores them itself, so that no job waits on a larger or
// later one), the rest are looked up in the shared tier if there is one,
// and only those still missing are scheduled, then stored in both. Entries are
// the tenant's own: no tenant learns from a result's cached count or its
// latency what another scored. It returns the scores in encs order and
// how many did not need scoring here. Without a cache, or for a model
// without a digest or whose scores depend on their batch, it is score.
func (b *batcher) scoreCached(ctx context.Context, tenant string, lane schemas.Lane, encs []wordpiece.Encoding) ([]float32, int, error) {
	c := b.p.cfg.Cache
	if c == nil || b.digest == "" || !b.cacheable {
		s, err := b.score(ctx, lane, encs)
		return s, 0, err
	}
	scope := b.digest + "\x00" + tenant
	me := paircache.Owner{Rank: int(lane), Pairs: len(encs)}
	scores := make([]float32, len(encs))
	keys := make([]paircache.Key, len(encs)) // a SHA-256 each: computed once
	var (
		own     []int // pairs this job scores, and the flights it owns
		flights []*paircache.Flight
		waiting []int // pairs another job scores, and its flights
		shared  []*paircache.Flight
		reused  int
	)
	// Whatever happens, the flights this job owns end: Done below, or
	// abandoned here on a failure (a second end does nothing).
	defer func() {
		for _, f := range flights {
			if f != nil {
				f.Abandon()
			}
		}
	}()
	for i, enc := range encs {
		keys[i] = paircache.KeyOf(scope, enc)
		s, hit, f, owner := c.Lookup(keys[i], me)
		switch {
		case hit:
			scores[i] = s
			reused++
		case owner:
			own, flights = append(own, i), append(flights, f)
		case b.waitFor(f.Owner(), me):
			waiting, shared = append(waiting, i), append(shared, f)
		default:
			own, flights = append(own, i), append(flights, nil) // scored here too, stored below
		}
	}
	keysAt := func(idx []int) []paircache.Key {
		ks := make([]paircache.Key, len(idx))
		for k, i := range idx {
			ks[k] = keys[i]
		}
		return ks
	}
	// The pairs to score here are looked up in the shared tier first;
	// those found there end their flights as if scored.
	if sh := b.p.cfg.Shared; sh != nil && len(own) > 0 {
		got, found := sh.Get(ctx, keysAt(own))
		var rest []int
		var restFl []*paircache.Flight
		for k, i := range own {
			if !found[k] {
				rest, restFl = append(rest, i), append(restFl, flights[k])
				continue
			}
			scores[i] = got[k]
			reused++
			if flights[k] != nil {
				flights[k].Done(got[k])
			} else {
				c.Put(keys[i], got[k])
			}
		}
		own, flights = rest, restFl
	}
	store := func(idx []int, fl []*paircache.Flight) error {
		if len(idx) == 0 {
			return nil
		}
		part := make([]wordpiece.Encoding, len(idx))
		for k, i := range idx {
			part[k] = encs[i]
		}
		got, err := b.score(ctx, lane, part)
		if err != nil {
			return err
		}
		if len(got) != len(part) {
			return fmt.Errorf("%w: %d scores for %d pairs", ErrScorerPanic, len(got), len(part))
		}
		for k, i := range idx {
			scores[i] = got[k]
			if fl != nil && fl[k] != nil {
				fl[k].Done(got[k])
			} else {
				c.Put(keys[i], got[k])
			}
		}
		if sh := b.p.cfg.Shared; sh != nil {
			sh.Put(keysAt(idx), got)
		}
		return nil
	}
	if err := store(own, flights); err != nil {
		return nil, 0, err
	}
	// Pairs in other jobs' flights (or repeated within this job): their
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
	c.CountShared(len(waiting) - len(again))
	if err := store(again, nil); err != nil {
		return nil, 0, err
	}
	return scores, reused, nil
}

// waitFor reports whether a job (me) waits for a flight of owner's rather
// than scoring the pair itself: when the owner's lane is served no later,
// and its job is at most twice this one's size plus a scoring call (its
// pairs are scored within the time this job's would take, give or take).
func (b *batcher) waitFor(owner, me paircache.Owner) bool {
	return owner.Rank <= me.Rank && owner.Pairs <= 2*me.Pairs+b.p.batchPairs(b.m)
}
