package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/schemas"
)

// Reranker answers jobs. *pipeline.Pipeline satisfies it.
//
// A job at fault yields a Result with Error set and a nil error; a nil
// Result with an error is a transient failure worth retrying.
type Reranker interface {
	Rerank(ctx context.Context, model string, job *schemas.Job, enqueued time.Time) (*schemas.Result, error)
	Models() []string
}

// Worker consumes jobs from JetStream and publishes results.
type Worker struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	r   Reranker
	cfg Config
	log *slog.Logger
	obs Observer

	// Set by Run before any job is handled.
	results jetstream.Stream // RERANK_RESULTS, for stored results; nil when unreadable
	slots   *slotPool
}

// New returns a worker on an open connection, which the caller owns (and
// drains after Run returns).
func New(nc *nats.Conn, r Reranker, cfg Config, log *slog.Logger, obs Observer) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("creating JetStream context: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if obs == nil {
		obs = NopObserver{}
	}
	return &Worker{nc: nc, js: js, r: r, cfg: cfg.withDefaults(), log: log, obs: obs}, nil
}

// Ready reports whether JetStream answers (for readiness probes).
func (w *Worker) Ready(ctx context.Context) error {
	if !w.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	_, err := w.js.AccountInfo(ctx)
	return err
}

// stoppedBeforeStart is Run's answer to err from its start-up: nil when
// ctx ended meanwhile (SIGTERM while starting is a clean stop, with no job
// taken yet), else err.
func (w *Worker) stoppedBeforeStart(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		w.log.Info("stopped while starting", "err", err)
		return nil
	}
	return err
}

// Run consumes until ctx ends, then stops pulling, lets jobs in flight finish
// within ShutdownGrace, naks the rest so another worker takes them at once,
// and returns nil. It returns an error only if it cannot start (a ctx that
// ends while it starts is a clean stop: nil).
func (w *Worker) Run(ctx context.Context) error {
	models := w.r.Models()
	if w.cfg.Provision {
		pctx, cancel := context.WithTimeout(ctx, w.cfg.ProvisionTimeout)
		err := provisionRetrying(pctx, w.js, models, w.cfg, w.log)
		cancel()
		if err != nil {
			return w.stoppedBeforeStart(ctx, err)
		}
	}
	// Bind one request at a time, each under its own deadline, retrying
	// what a cluster busy electing leaders leaves unanswered: one lost
	// request must not spend the whole bind budget.
	bctx, cancel := context.WithTimeout(ctx, w.cfg.ProvisionTimeout)
	defer cancel()
	var sources []*source
	err := retryTransient(bctx, w.log, "binding consumers", func(ctx context.Context) (err error) {
		ctx, cancel := context.WithTimeout(ctx, provisionAttempt)
		defer cancel()
		sources, err = lookupConsumers(ctx, w.js, models, w.cfg, w.log)
		return err
	})
	if err == nil {
		// Read to skip recomputing redelivered jobs already answered; a
		// worker that may not read it recomputes them (the dedup window
		// still hides most duplicates).
		rctx, rcancel := context.WithTimeout(bctx, provisionAttempt)
		if w.results, err = w.js.Stream(rctx, schemas.ResultsStream); err != nil {
			w.log.Warn("binding the results stream: redelivered jobs will be recomputed", "err", err)
			w.results, err = nil, nil
		} else if len(w.cfg.Tenants) > 0 && !slices.Contains(w.results.CachedInfo().Config.Subjects, tenantResults) {
			// A results stream provisioned before tenants: their results
			// could never be stored, and their jobs never leave the queue.
			err = fmt.Errorf("binding the results stream: %w: %s does not take tenants' results (%s): run `rerank provision` or the workers with --provision",
				ErrNotProvisioned, schemas.ResultsStream, tenantResults)
		}
		rcancel()
	}
	if err != nil {
		return w.stoppedBeforeStart(ctx, err)
	}
	// Jobs whose every delivery ended with a worker dying are announced by
	// the server, not returned by any delivery: answer them here.
	exhausted, err := w.watchExhausted(sources)
	if err != nil {
		return err
	}
	defer exhausted.stop()
	// jobCtx outlives ctx by the shutdown grace: jobs in flight keep
	// running after ctx ends, until they finish or the grace runs out.
	jobCtx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	w.slots = newSlotPool(w.cfg.Concurrency, w.cfg.InteractiveSlots)
	var jobs sync.WaitGroup
	var pullers sync.WaitGroup
	lanes := make([]string, 0, len(sources))
	for _, src := range sources {
		lanes = append(lanes, src.String())
		pullers.Add(1)
		go func() {
			defer pullers.Done()
			w.pull(ctx, jobCtx, src, &jobs)
		}()
	}
	if w.cfg.BacklogInterval > 0 {
		pullers.Add(1)
		go func() {
			defer pullers.Done()
			w.reportBacklog(ctx, sources)
		}()
	}
	w.log.Info("worker started", "models", models, "consumers", lanes, "concurrency", w.cfg.Concurrency, "interactive_slots", w.cfg.InteractiveSlots, "worker", w.cfg.WorkerID)
	<-ctx.Done()
	pullers.Wait()
	w.log.Info("worker stopping: finishing jobs in flight", "grace", w.cfg.ShutdownGrace.String())
	done := make(chan struct{})
	go func() { jobs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.ShutdownGrace):
		w.log.Warn("shutdown grace over: handing unfinished jobs back")
		abandon()
		<-done
	}
	w.log.Info("worker stopped")
	return nil
}

// reportBacklog reads each lane consumer's pending and unacknowledged
// counts every BacklogInterval until ctx ends. Every worker of a pool
// reports the same consumer: aggregate with max, not sum.
func (w *Worker) reportBacklog(ctx context.Context, sources []*source) {
	type backlog struct {
		pending, unacked uint64
		failed           bool // a partial sum would under-report the lane
	}
	for {
		// A lane's consumers (one per job stream) add up.
		lanes := map[laneModel]*backlog{}
		var order []laneModel
		for _, src := range sources {
			k := laneModel{src.lane, src.model}
			b := lanes[k]
			if b == nil {
				b = &backlog{}
				lanes[k] = b
				order = append(order, k)
			}
			ictx, cancel := context.WithTimeout(ctx, backlogRead)
			info, err := src.cons.Info(ictx)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					w.log.Debug("reading the consumer backlog", "consumer", src.String(), "err", err)
				}
				b.failed = true
				continue
			}
			b.pending += info.NumPending
			b.unacked += uint64(info.NumAckPending)
		}
		for _, k := range order {
			if b := lanes[k]; !b.failed {
				w.obs.Backlog(k.model, k.lane.String(), b.pending, b.unacked)
			}
		}
		if !sleep(ctx, w.cfg.BacklogInterval) {
			return
		}
	}
}

// sleep waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
