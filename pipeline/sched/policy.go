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

	next   int    // pairs handed out so far
	mark   int64  // its lane's pairs handed out when it was added
	seq    uint64 // arrival order, for ties
	queued bool
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
	// AgingRate is the priority a request gains per second since it
	// arrived, in pairs; default 10 × BatchPairs. A request's key is its
	// remaining pairs minus its credit (this one and WorkAging's), the
	// smallest first. The credit runs from arrival, not from the
	// request's last chunk, so a big job keeps what it earned while its
	// chunks are served. On its own it would bound a job's time in a
	// saturated lane by 1 + ρ·μ/AgingRate times its run time alone (μ
	// the lane's pairs a second, ρ the offered load), a bound that
	// depends on the model's speed (11 for the reference model's 1,600
	// pairs a second); WorkAging's does not, and with both the bound is
	// WorkAging's, lowered as if WorkAging were AgingRate/μ larger.
	AgingRate float64
	// WorkAging is the priority a request gains per pair its lane hands
	// out after it was added (its own included), in pairs; default 0.5.
	// It bounds starvation whatever the model's speed: under a load that
	// keeps its lane busy, a job of P pairs finishes within
	// K = 1 + ρ/WorkAging + (Q0 + BatchPairs)/P times its run time alone
	// (ρ the offered load, Q0 the pairs waiting when it arrived), 3 at
	// the default and full load, and at most 4 where its pairs are longer
	// than the small jobs' (the package doc derives both). Larger values
	// lower K and let big jobs go before small ones sooner.
	WorkAging float64
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
	DefaultWorkAging  = 0.5
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
	if c.WorkAging <= 0 {
		c.WorkAging = DefaultWorkAging
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
	handed    [2]int64      // per lane, pairs handed out since New
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
	r.mark = p.handed[lane(r.Lane)]
	if r.Arrived.IsZero() {
		r.Arrived = now
	}
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
// little, except that the first half of the call goes in key order:
// without that, a big job whose rest fits the window could lose every call
// to the shorter pairs of jobs behind it; with it, the jobs behind a job
// get no more of a call than the jobs up to it, unless those finish in
// that call (the package doc's bound). It returns the lane and nil chunks
// when nothing waits.
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
	handed := p.handed[lane(l)]
	key := func(r *Request) float64 {
		return float64(r.Remaining()) - p.cfg.AgingRate*now.Sub(r.Arrived).Seconds() -
			p.cfg.WorkAging*float64(handed-r.mark)
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
	// The call: its first half in key order, the rest the shortest next
	// pairs of the window, earlier requests first among equals; each
	// request gives a prefix of what it has left.
	take := make([]int, len(window))
	inOrder := min(total, (p.cfg.BatchPairs+1)/2)
	for i, left := 0, inOrder; left > 0; i++ {
		take[i] = min(window[i].Remaining(), left)
		left -= take[i]
	}
	for range min(p.cfg.BatchPairs, total) - inOrder {
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
		p.pending -= take[i]
		p.handed[lane(l)] += int64(take[i])
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
