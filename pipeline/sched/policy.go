package sched

import (
	"math"
	"slices"
	"time"

	"github.com/rerank/rerank/schemas"
)

// Request is one job's pairs waiting to be scored, in the order the caller
// sorted them (by length, so that each chunk pads little).
type Request struct {
	Lane    schemas.Lane
	Pairs   int       // pairs in all
	Arrived time.Time // when it was added
	// Lengths, when set, are the pairs' token counts in the request's
	// order (ascending): Next fills a call with the shortest pairs of the
	// requests it takes from, so that calls shared by several jobs pad
	// little. Nil means all pairs are alike.
	Lengths []int

	next       int       // pairs handed out so far
	lastServed time.Time // when it last got a chunk (Arrived until then)
	seq        uint64    // arrival order, for ties
	queued     bool
}

// Remaining is the number of pairs not yet handed out.
func (r *Request) Remaining() int { return r.Pairs - r.next }

// Started reports whether any chunk of r was handed out.
func (r *Request) Started() bool { return r.next > 0 }

// Chunk is the pairs [Lo, Hi) of one request.
type Chunk struct {
	Req    *Request
	Lo, Hi int
}

// Config tunes a Policy. Zero values mean the defaults.
type Config struct {
	// BatchPairs is the most pairs one call holds; default 16.
	BatchPairs int
	// BulkShare is the share of calls the bulk lane gets while both lanes
	// have work; default 0.1 (every tenth call).
	BulkShare float64
	// AgingRate is the priority a request gains per second since it was
	// last served, in pairs; default 10 × BatchPairs. A request's key is
	// its remaining pairs minus that credit, the smallest first.
	AgingRate float64
	// Window is how many pairs, of the requests first in key order, one
	// call may choose from; default 16 × BatchPairs. A wider window pads
	// less (the shortest pairs go together) and lets a small job wait
	// behind more pairs of the jobs before it. A request with more pairs
	// left than Window joins only when it is first.
	Window int
}

// Defaults.
const (
	DefaultBatchPairs = 16
	DefaultBulkShare  = 0.1
)

func (c Config) withDefaults() Config {
	if c.BatchPairs <= 0 {
		c.BatchPairs = DefaultBatchPairs
	}
	if c.BulkShare <= 0 || c.BulkShare > 1 {
		c.BulkShare = DefaultBulkShare
	}
	if c.AgingRate <= 0 {
		c.AgingRate = 10 * float64(c.BatchPairs)
	}
	if c.Window <= 0 {
		c.Window = 16 * c.BatchPairs
	}
	return c
}

// Policy orders the waiting requests of one model. It is not safe for
// concurrent use: one goroutine (the batcher's loop) owns it.
type Policy struct {
	cfg       Config
	queues    [2][]*Request // per lane, unordered; Next sorts
	pending   int           // pairs not handed out, all lanes
	sinceBulk int           // calls given to interactive while bulk waited
	bulkEvery int           // 1/BulkShare
	seq       uint64
}

// New returns an empty policy.
func New(cfg Config) *Policy {
	cfg = cfg.withDefaults()
	return &Policy{cfg: cfg, bulkEvery: max(1, int(math.Round(1/cfg.BulkShare)))}
}

// BatchPairs is the most pairs Next hands out at once.
func (p *Policy) BatchPairs() int { return p.cfg.BatchPairs }

// Add queues r on its lane.
func (p *Policy) Add(r *Request, now time.Time) {
	if r.Pairs <= 0 || r.queued {
		return
	}
	p.seq++
	r.seq, r.queued, r.next = p.seq, true, 0
	if r.Arrived.IsZero() {
		r.Arrived = now
	}
	r.lastServed = r.Arrived
	p.queues[lane(r.Lane)] = append(p.queues[lane(r.Lane)], r)
	p.pending += r.Pairs
}

// Remove drops what is left of r (cancelled, or failed). Idempotent.
func (p *Policy) Remove(r *Request) {
	if !r.queued {
		return
	}
	q := p.queues[lane(r.Lane)]
	if i := slices.Index(q, r); i >= 0 {
		p.queues[lane(r.Lane)] = slices.Delete(q, i, i+1)
	}
	p.pending -= r.Remaining()
	r.queued = false
}

// Pending is the number of pairs not yet handed out.
func (p *Policy) Pending() int { return p.pending }

// Waiting reports whether a lane has pairs not yet handed out.
func (p *Policy) Waiting(l schemas.Lane) bool { return len(p.queues[lane(l)]) > 0 }

// Next hands out the pairs of the next call, at most BatchPairs, all of one
// lane: interactive, unless only bulk waits or bulk's floor share is due.
// Within the lane requests go in key order (fewest remaining pairs, minus
// aging credit; arrival breaks ties); the call takes the shortest next
// pairs of the requests in the window, so small jobs share calls and pad
// little. It returns the lane and nil chunks when nothing waits.
func (p *Policy) Next(now time.Time) (schemas.Lane, []Chunk) {
	hasI, hasB := p.Waiting(schemas.Interactive), p.Waiting(schemas.Bulk)
	var l schemas.Lane
	switch {
	case !hasI && !hasB:
		return schemas.Interactive, nil
	case hasB && (!hasI || p.sinceBulk+1 >= p.bulkEvery):
		l, p.sinceBulk = schemas.Bulk, 0
	default:
		l = schemas.Interactive
		if hasB {
			p.sinceBulk++
		}
	}
	q := p.queues[lane(l)]
	key := func(r *Request) float64 {
		return float64(r.Remaining()) - p.cfg.AgingRate*now.Sub(r.lastServed).Seconds()
	}
	slices.SortFunc(q, func(a, b *Request) int {
		ka, kb := key(a), key(b)
		switch {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	// The window: requests in key order while their pairs fit.
	window := q[:1]
	total := q[0].Remaining()
	for _, r := range q[1:] {
		if total+r.Remaining() > p.cfg.Window {
			break
		}
		window = append(window, r)
		total += r.Remaining()
	}
	// The call: the shortest next pairs of the window, earlier requests
	// first among equals; each request gives a prefix of what it has left.
	take := make([]int, len(window))
	for range min(p.cfg.BatchPairs, total) {
		best := -1
		for i, r := range window {
			if take[i] == r.Remaining() {
				continue
			}
			if best < 0 || r.length(r.next+take[i]) < window[best].length(window[best].next+take[best]) {
				best = i
			}
		}
		take[best]++
	}
	var out []Chunk
	for i, r := range window {
		if take[i] == 0 {
			continue
		}
		out = append(out, Chunk{Req: r, Lo: r.next, Hi: r.next + take[i]})
		r.next += take[i]
		r.lastServed = now
		p.pending -= take[i]
	}
	kept := q[:0]
	for _, r := range q {
		if r.Remaining() > 0 {
			kept = append(kept, r)
		} else {
			r.queued = false
		}
	}
	clear(q[len(kept):])
	p.queues[lane(l)] = kept
	return l, out
}

// length is the token count of pair i, 0 when unknown.
func (r *Request) length(i int) int {
	if i < len(r.Lengths) {
		return r.Lengths[i]
	}
	return 0
}

func lane(l schemas.Lane) int {
	if l == schemas.Bulk {
		return 1
	}
	return 0
}
