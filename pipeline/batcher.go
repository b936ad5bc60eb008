package pipeline

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/pipeline/sched"
	"github.com/rerank/rerank/schemas"
)

// request is one job's tokenized pairs on their way through the batcher.
type request struct {
	ctx    context.Context
	encs   []wordpiece.Encoding
	order  []int // encs by length: chunks are ranges of it
	scores []float32
	sr     sched.Request
	scored int           // pairs scored so far
	failed bool          // answered with an error; the rest is dropped
	done   chan response // buffered, capacity 1
}

type response struct {
	scores []float32
	err    error
}

// call is one scoring call: chunks of one lane, maybe of several jobs.
type call struct {
	lane   schemas.Lane
	chunks []sched.Chunk
	reqs   []*request // chunks[i] is reqs[i]'s
	// Set by run:
	scores [][]float32 // per chunk
	errs   []error     // per chunk
}

// batcher schedules the pairs of one model's jobs over its scoring calls.
// Its loop goroutine owns the policy and every request's state; scoring
// calls run in goroutines it starts (at most ConcurrentCalls at once) and
// report back on results. Both are tracked by the Pipeline's WaitGroup.
type batcher struct {
	p      *Pipeline
	m      Model
	digest string // the model's provenance (modelDigest)
	// cacheable: the model's pair scores may be cached (cacheable).
	cacheable bool
	in        chan *request
	results   chan *call
}

// score submits encs and waits for their scores, in encs order.
func (b *batcher) score(ctx context.Context, lane schemas.Lane, encs []wordpiece.Encoding) ([]float32, error) {
	if b.p.cfg.MaxBatchDelay < 0 {
		return b.call(ctx, lane, encs, 1)
	}
	order := make([]int, len(encs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int { return len(encs[x].IDs) - len(encs[y].IDs) })
	lengths := make([]int, len(order))
	for i, k := range order {
		lengths[i] = len(encs[k].IDs)
	}
	r := &request{ctx: ctx, encs: encs, order: order, scores: make([]float32, len(encs)),
		sr: sched.Request{Lane: lane, Pairs: len(encs), Arrived: time.Now(), Lengths: lengths}, done: make(chan response, 1)}
	select {
	case b.in <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.p.closing:
		return nil, ErrClosed
	}
	select {
	case resp := <-r.done:
		return resp.scores, resp.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// loop adds arriving requests to the policy and starts a scoring call
// whenever a slot is free and the policy has pairs to hand out. A request
// never started waits MaxBatchDelay for company, unless a full call's worth
// of pairs waits already.
func (b *batcher) loop() {
	defer b.p.wg.Done()
	pol := sched.New(sched.Config{BatchPairs: b.p.batchPairs(b.m)})
	reqs := map[*sched.Request]*request{}
	free := b.p.cfg.ConcurrentCalls
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	for {
		for free > 0 && pol.Pending() > 0 {
			now := time.Now()
			if oldest := oldestNotStarted(reqs); !oldest.IsZero() && pol.Pending() < pol.BatchPairs() && !startedWaiting(reqs) {
				if wait := oldest.Add(b.p.cfg.MaxBatchDelay).Sub(now); wait > 0 {
					if !armed {
						timer.Reset(wait)
						armed = true
					}
					break
				}
			}
			lane, chunks := pol.Next(now)
			c := &call{lane: lane}
			for _, ch := range chunks {
				r := reqs[ch.Req]
				if r.failed {
					continue
				}
				if err := r.ctx.Err(); err != nil {
					b.fail(pol, reqs, r, err)
					continue
				}
				if ch.Lo == 0 {
					b.p.cfg.Observer.ObserveLaneWait(b.m.Name, lane.String(), now.Sub(r.sr.Arrived))
				}
				c.chunks, c.reqs = append(c.chunks, ch), append(c.reqs, r)
			}
			if len(c.chunks) == 0 {
				continue
			}
			free--
			b.p.wg.Add(1)
			go b.run(c)
		}
		select {
		case r := <-b.in:
			reqs[&r.sr] = r
			pol.Add(&r.sr, r.sr.Arrived)
		case c := <-b.results:
			free++
			b.apply(pol, reqs, c)
		case <-timer.C:
			armed = false // the oldest request's wait is over: the loop above dispatches
		case <-b.p.closing:
			for _, r := range reqs {
				r.done <- response{err: ErrClosed}
			}
			// Calls in flight report on results (buffered): nobody waits.
			return
		}
	}
}

// startedWaiting reports whether a request already under way has pairs
// left: its next chunk does not wait for company.
func startedWaiting(reqs map[*sched.Request]*request) bool {
	for sr := range reqs {
		if sr.Started() && sr.Remaining() > 0 {
			return true
		}
	}
	return false
}

func oldestNotStarted(reqs map[*sched.Request]*request) time.Time {
	var t time.Time
	for sr := range reqs {
		if !sr.Started() && (t.IsZero() || sr.Arrived.Before(t)) {
			t = sr.Arrived
		}
	}
	return t
}

// apply hands a finished call's scores to its requests, answering each
// request whose last pair is scored, or whose chunk failed.
func (b *batcher) apply(pol *sched.Policy, reqs map[*sched.Request]*request, c *call) {
	for i, ch := range c.chunks {
		r := c.reqs[i]
		if r.failed {
			continue
		}
		if err := c.errs[i]; err != nil {
			b.fail(pol, reqs, r, err)
			continue
		}
		for k, s := range c.scores[i] {
			r.scores[r.order[ch.Lo+k]] = s
		}
		r.scored += ch.Hi - ch.Lo
		if r.scored == len(r.encs) {
			r.done <- response{scores: r.scores}
			delete(reqs, &r.sr)
		}
	}
}

// fail answers r with err and drops the rest of its pairs.
func (b *batcher) fail(pol *sched.Policy, reqs map[*sched.Request]*request, r *request, err error) {
	r.failed = true
	pol.Remove(&r.sr)
	r.done <- response{err: err}
	delete(reqs, &r.sr)
}

// run scores one call and reports it on results. When a call shared by
// several jobs fails, each job's chunk is scored again on its own, so that
// only the job whose input broke it fails.
func (b *batcher) run(c *call) {
	defer b.p.wg.Done()
	obs := b.p.cfg.Observer
	obs.ChunksInFlight(b.m.Name, len(c.chunks))
	defer obs.ChunksInFlight(b.m.Name, -len(c.chunks))
	c.scores, c.errs = make([][]float32, len(c.chunks)), make([]error, len(c.chunks))
	var encs []wordpiece.Encoding
	for i, ch := range c.chunks {
		for _, k := range c.reqs[i].order[ch.Lo:ch.Hi] {
			encs = append(encs, c.reqs[i].encs[k])
		}
	}
	ctx, cancel := allDone(c.reqs)
	defer cancel()
	jobs := distinct(c.reqs)
	scores, err := b.call(ctx, c.lane, encs, jobs)
	off := 0
	for i, ch := range c.chunks {
		n := ch.Hi - ch.Lo
		switch {
		case err == nil:
			c.scores[i] = scores[off : off+n]
		case jobs > 1:
			part := encs[off : off+n]
			c.scores[i], c.errs[i] = b.call(c.reqs[i].ctx, c.lane, part, 1)
			if c.errs[i] != nil {
				c.errs[i] = fmt.Errorf("scoring %d pairs alone, after a call shared by %d jobs failed: %w", n, jobs, c.errs[i])
			}
		default:
			c.errs[i] = fmt.Errorf("scoring %d pairs: %w", len(encs), err)
		}
		off += n
	}
	b.results <- c
}

func distinct(reqs []*request) int {
	n := 0
	for i, r := range reqs {
		if !slices.Contains(reqs[:i], r) {
			n++
		}
	}
	return n
}

// call runs one scoring call, reporting it to the Observer; a panic in the
// scorer becomes the call's error rather than the end of the process.
func (b *batcher) call(ctx context.Context, lane schemas.Lane, encs []wordpiece.Encoding, jobs int) (scores []float32, err error) {
	defer func() {
		if p := recover(); p != nil {
			scores, err = nil, fmt.Errorf("%w: %v", ErrScorerPanic, p)
		}
	}()
	scores, st, err := b.m.Scorer.ScoreEncoded(ctx, encs)
	b.p.cfg.Observer.ObserveScore(b.m.Name, lane.String(), jobs, st.Pairs, st.BatchSizes, st.PaddingRatio(), st.InferenceTime)
	return scores, err
}

// allDone returns a context cancelled once every request's context is.
func allDone(reqs []*request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for _, r := range reqs {
			select {
			case <-r.ctx.Done():
			case <-ctx.Done():
				return
			}
		}
		cancel()
	}()
	return ctx, cancel
}
