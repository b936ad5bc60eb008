package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/rerank/rerank/model"
)

type request struct {
	ctx  context.Context
	encs []model.Encoding
	done chan response // buffered, capacity 1
}

type response struct {
	scores []float32
	err    error
}

// batcher gathers the requests of concurrent jobs for one model into shared
// scoring calls. Its loop is owned by the Pipeline (started in New, stopped
// by Close); each call runs in a goroutine the loop tracks in Pipeline.wg.
type batcher struct {
	p     *Pipeline
	m     Model
	in    chan *request
	slots chan struct{} // scoring calls in flight
}

// score submits encs and waits for their scores.
func (b *batcher) score(ctx context.Context, encs []model.Encoding) ([]float32, error) {
	if b.p.cfg.MaxBatchDelay < 0 {
		return b.call(ctx, encs, 1)
	}
	r := &request{ctx: ctx, encs: encs, done: make(chan response, 1)}
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

func (b *batcher) loop() {
	defer b.p.wg.Done()
	maxPairs := b.p.cfg.MaxBatchPairs
	for {
		var batch []*request
		pairs := 0
		select {
		case r := <-b.in:
			batch, pairs = append(batch, r), len(r.encs)
		case <-b.p.closing:
			return
		}
		timer := time.NewTimer(b.p.cfg.MaxBatchDelay)
	gather:
		for pairs < maxPairs {
			select {
			case r := <-b.in:
				batch, pairs = append(batch, r), pairs+len(r.encs)
			case <-timer.C:
				break gather
			case <-b.p.closing:
				break gather
			}
		}
		timer.Stop()
		// Wait for a free scoring slot; while the model is busy, keep
		// gathering (up to 4× the batch size) so batches grow with load.
	acquire:
		for {
			in := b.in
			if pairs >= 4*maxPairs {
				in = nil
			}
			select {
			case b.slots <- struct{}{}:
				break acquire
			case r := <-in:
				batch, pairs = append(batch, r), pairs+len(r.encs)
			case <-b.p.closing:
				for _, r := range batch {
					r.done <- response{err: ErrClosed}
				}
				return
			}
		}
		b.p.wg.Add(1)
		go b.run(batch, pairs)
	}
}

// run scores one gathered batch of requests and answers each.
func (b *batcher) run(batch []*request, pairs int) {
	defer b.p.wg.Done()
	defer func() { <-b.slots }()
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- response{err: err}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	encs := make([]model.Encoding, 0, pairs)
	for _, r := range live {
		encs = append(encs, r.encs...)
	}
	// The shared call ends only when every job sharing it has given up.
	ctx, cancel := allDone(live)
	defer cancel()
	scores, err := b.call(ctx, encs, len(live))
	if err != nil && len(live) > 1 {
		// One job's pairs can fail a call they share (a malformed input
		// the model rejects): score each job on its own, so only the
		// guilty one fails.
		for _, r := range live {
			s, err := b.call(r.ctx, r.encs, 1)
			if err != nil {
				err = fmt.Errorf("scoring %d pairs alone, after a shared call of %d jobs failed: %w", len(r.encs), len(live), err)
			}
			r.done <- response{scores: s, err: err}
		}
		return
	}
	off := 0
	for _, r := range live {
		if err != nil {
			r.done <- response{err: fmt.Errorf("scoring %d pairs: %w", len(encs), err)}
			continue
		}
		r.done <- response{scores: scores[off : off+len(r.encs)]}
		off += len(r.encs)
	}
}

// call runs one scoring call, reporting it to OnScore; a panic in the
// scorer becomes the call's error rather than the end of the process.
func (b *batcher) call(ctx context.Context, encs []model.Encoding, jobs int) (scores []float32, err error) {
	defer func() {
		if p := recover(); p != nil {
			scores, err = nil, fmt.Errorf("%w: %v", ErrScorerPanic, p)
		}
	}()
	scores, st, err := b.m.Scorer.ScoreEncoded(ctx, encs)
	if b.p.cfg.OnScore != nil {
		b.p.cfg.OnScore(b.m.Name, jobs, st)
	}
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
