package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/schemas"
)

// pull fetches jobs of one source for as long as ctx lives. It asks only
// for the jobs it claimed (slotPool.claim: its share of the slots its lane
// may still fill, or one), and holds no slot while its pull request waits:
// a job takes a slot once it is in hand (handle), so an idle source costs
// the busy ones nothing. A job that must wait for its slot is held with
// InProgress.
func (w *Worker) pull(ctx, jobCtx context.Context, src *source, jobs *sync.WaitGroup) {
	for {
		// The lane's other streams (partitions) pull at the same time:
		// each claims its share, rounded up.
		n := w.slots.claim(ctx, src.lane, src.streams)
		if n == 0 {
			return
		}
		batch, err := src.cons.Fetch(n, jetstream.FetchMaxWait(w.cfg.FetchWait))
		if err != nil {
			w.slots.unclaim(src.lane, n)
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("fetching jobs", "consumer", src.String(), "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			w.slots.arrive(src.lane)
			jobs.Add(1)
			go func() {
				defer jobs.Done()
				w.handle(ctx, jobCtx, src, msg)
			}()
		}
		w.slots.unclaim(src.lane, n-got)
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			// Answered at once with an error (no responders: the consumer
			// is gone or its leader is moving): wait as after a Fetch
			// error instead of re-sending the request in a tight loop.
			w.log.Warn("pulling jobs", "consumer", src.String(), "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
		}
	}
}

// handle answers one delivered job: decode, look for a stored result when
// redelivered, re-rank, and settle. The job is held (InProgress) from the
// start until it is settled, publishing retries included.
func (w *Worker) handle(ctx, jobCtx context.Context, src *source, msg jetstream.Msg) {
	model := src.model
	start := time.Now()
	md, err := msg.Metadata()
	if err != nil {
		w.log.Error("reading message metadata", "subject", msg.Subject(), "err", err)
		w.slots.landed(src.lane)
		_ = msg.Nak()
		return
	}
	log := w.log.With("model", model, "subject", msg.Subject(), "attempt", md.NumDelivered, "stream_seq", md.Sequence.Stream)
	if src.tenant != "" {
		log = log.With("tenant", src.tenant)
	}
	if md.NumDelivered > 1 {
		w.obs.Redelivered(model)
	}
	if ctx.Err() != nil {
		// Pulled after shutdown began: hand it straight back.
		w.slots.landed(src.lane)
		w.settle(jobCtx, log, model, msg, md, nil, verdict{abandon: true}, start)
		return
	}
	cs := src.settings
	stopHB := heartbeat(jobCtx, log, msg, cs.heartbeat(md.NumDelivered, w.cfg.Heartbeat))
	defer stopHB()
	if !w.slots.acquire(ctx, model, src.lane) {
		// Shutting down before a slot came free: hand it back.
		w.settle(jobCtx, log, model, msg, md, nil, verdict{abandon: true}, start)
		return
	}
	freeSlot := sync.OnceFunc(func() { w.slots.release(src.lane); w.obs.InFlight(-1) })
	defer freeSlot()
	w.obs.InFlight(1)
	// Each verdict from here on may give the slot back before its ack.
	settle := func(log *slog.Logger, job *schemas.Job, v verdict) {
		v.freeSlot = freeSlot
		w.settle(jobCtx, log, model, msg, md, job, v, start)
	}

	job, err := w.decode(storedJob{subject: msg.Subject(), data: msg.Data(), header: msg.Headers()})
	if err != nil {
		res := w.errorResult(model, job, md, schemas.AsError(err))
		settle(log.With("job_id", job.ID), job, verdict{result: res, permanent: res.Error})
		return
	}
	log = log.With("job_id", job.ID)
	job.Lane = src.lane // the subject decides, never the job's bytes
	if md.NumDelivered > 1 && w.storedResult(jobCtx, job, md) {
		// An earlier delivery published the result and its ack was lost
		// (a worker died in between): recomputing would at best repeat
		// it, at worst publish a visible duplicate after the dedup window.
		log.Info("redelivered job already answered: acknowledging without recomputing")
		settle(log, job, verdict{stored: true})
		return
	}

	res, err := w.rerank(jobCtx, log, model, job, md.Timestamp)
	var v verdict
	var pe *panicError
	switch {
	case errors.As(err, &pe):
		// A panic is the job's doing as far as anyone can tell: retrying
		// would panic again, once per delivery.
		ce := schemas.Errorf(schemas.CodeInternal, "the worker failed on this job (%v); it was dead-lettered", pe.value)
		v.result, v.permanent = w.errorResult(model, job, md, ce), ce
	case err != nil && jobCtx.Err() != nil:
		v.abandon = true
	case err != nil && cs.last(md.NumDelivered):
		ce := schemas.Errorf(schemas.CodeInternal, "failed on all %d deliveries, last: %v", md.NumDelivered, err)
		v.result, v.permanent = w.errorResult(model, job, md, ce), ce
	case err != nil:
		v.retry = err
	case res.Error != nil:
		w.stamp(res, md)
		v.result, v.permanent = res, res.Error
	default:
		w.stamp(res, md)
		v.result = res
	}
	settle(log, job, v)
}

// panicError is a Go panic recovered while answering one job.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// rerank calls the Reranker, turning a panic into a *panicError so that
// one job's panic fails that job and not the process.
func (w *Worker) rerank(ctx context.Context, log *slog.Logger, model string, job *schemas.Job, enqueued time.Time) (res *schemas.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			w.obs.Panicked(model)
			log.Error("panic while answering job", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res, err = nil, &panicError{value: p}
		}
	}()
	return w.r.Rerank(ctx, model, job, enqueued)
}

// heartbeat sends InProgress every interval until the returned stop is
// called (which waits for the goroutine to end) or ctx ends.
func heartbeat(ctx context.Context, log *slog.Logger, msg jetstream.Msg, interval time.Duration) (stop func()) {
	hbCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					log.Warn("sending in-progress heartbeat", "err", err)
				}
			case <-hbCtx.Done():
				return
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}
