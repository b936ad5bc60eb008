package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

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

// Observer receives the worker's events, for metrics. Every method must be
// cheap and safe for concurrent use; NopObserver ignores them all.
type Observer interface {
	JobDone(model, outcome string, attempt uint64, queued, total time.Duration)
	Redelivered(model string)
	DeadLettered(model, code string)
	InFlight(delta int)
}

// Job outcomes reported to the Observer.
const (
	OutcomeOK        = "ok"
	OutcomeInvalid   = "invalid"
	OutcomeRetry     = "retry"
	OutcomeFailed    = "failed"
	OutcomeAbandoned = "abandoned" // nak'd at shutdown for another worker
)

// NopObserver ignores events.
type NopObserver struct{}

func (NopObserver) JobDone(string, string, uint64, time.Duration, time.Duration) {}
func (NopObserver) Redelivered(string)                                           {}
func (NopObserver) DeadLettered(string, string)                                  {}
func (NopObserver) InFlight(int)                                                 {}

// Worker consumes jobs from JetStream and publishes results.
type Worker struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	r   Reranker
	cfg Config
	log *slog.Logger
	obs Observer
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

// Run consumes until ctx ends, then stops pulling, lets jobs in flight finish
// within ShutdownGrace, naks the rest so another worker takes them at once,
// and returns nil. It returns an error only if it cannot start.
func (w *Worker) Run(ctx context.Context) error {
	models := w.r.Models()
	if w.cfg.Provision {
		pctx, cancel := context.WithTimeout(ctx, w.cfg.ProvisionTimeout)
		err := provisionRetrying(pctx, w.js, models, w.cfg, w.log)
		cancel()
		if err != nil {
			return err
		}
	}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	consumers, err := lookupConsumers(bctx, w.js, models)
	var jobsStream jetstream.Stream
	if err == nil {
		jobsStream, err = w.js.Stream(bctx, JobsStream)
		if err != nil {
			err = fmt.Errorf("binding stream %s: %w", JobsStream, err)
		}
	}
	cancel()
	if err != nil {
		return err
	}
	// Jobs whose every delivery ended with a worker dying are announced by
	// the server, not returned by any delivery: answer them here.
	exhausted, err := w.watchExhausted(jobsStream, consumers)
	if err != nil {
		return err
	}
	defer exhausted.stop()
	// jobCtx outlives ctx by the shutdown grace: jobs in flight keep
	// running after ctx ends, until they finish or the grace runs out.
	jobCtx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	slots := make(chan struct{}, w.cfg.Concurrency)
	var jobs sync.WaitGroup
	var pullers sync.WaitGroup
	for _, m := range models {
		pullers.Add(1)
		go func() {
			defer pullers.Done()
			w.pull(ctx, jobCtx, m, consumers[m], slots, &jobs)
		}()
	}
	w.log.Info("worker started", "models", models, "concurrency", w.cfg.Concurrency, "worker", w.cfg.WorkerID)
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

// pull fetches only as many jobs as there are free slots, so no job waits
// in a client-side buffer while its AckWait clock runs.
func (w *Worker) pull(ctx, jobCtx context.Context, model string, cons jetstream.Consumer, slots chan struct{}, jobs *sync.WaitGroup) {
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	more:
		for n < cap(slots) {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(w.cfg.FetchWait))
		if err != nil {
			for range n {
				<-slots
			}
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("fetching jobs", "model", model, "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			jobs.Add(1)
			w.obs.InFlight(1)
			go func() {
				defer func() { <-slots; w.obs.InFlight(-1); jobs.Done() }()
				w.handle(ctx, jobCtx, model, msg)
			}()
		}
		for range n - got {
			<-slots
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			// Answered at once with an error (no responders: the consumer
			// is gone or its leader is moving): wait as after a Fetch
			// error instead of re-sending the request in a tight loop.
			w.log.Warn("pulling jobs", "model", model, "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
		}
	}
}

// verdict is what happened to a job; settle turns it into the message's fate.
type verdict struct {
	result    *schemas.Result // to publish (success or error result)
	permanent *schemas.Error  // the job is at fault or out of deliveries: dead-letter + Term
	retry     error           // transient: NakWithDelay
	abandon   bool            // shutting down: Nak now for another worker
}

func (w *Worker) handle(ctx, jobCtx context.Context, model string, msg jetstream.Msg) {
	start := time.Now()
	md, err := msg.Metadata()
	if err != nil {
		w.log.Error("reading message metadata", "subject", msg.Subject(), "err", err)
		_ = msg.Nak()
		return
	}
	log := w.log.With("model", model, "subject", msg.Subject(), "attempt", md.NumDelivered, "stream_seq", md.Sequence.Stream)
	if md.NumDelivered > 1 {
		w.obs.Redelivered(model)
	}
	if ctx.Err() != nil {
		// Pulled after shutdown began: hand it straight back.
		w.settle(log, model, msg, md, nil, verdict{abandon: true}, start)
		return
	}
	stored := storedJob{subject: msg.Subject(), data: msg.Data(), header: msg.Headers()}
	job, err := w.decode(stored)
	if err != nil {
		res := w.errorResult(model, job, md, schemas.AsError(err))
		w.settle(log.With("job_id", job.ID), model, msg, md, job, verdict{result: res, permanent: res.Error}, start)
		return
	}
	log = log.With("job_id", job.ID)

	// Heartbeat while the job runs so it is not redelivered past AckWait.
	hbCtx, stopHB := context.WithCancel(jobCtx)
	var hb sync.WaitGroup
	hb.Add(1)
	go func() {
		defer hb.Done()
		t := time.NewTicker(w.cfg.Heartbeat)
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
	res, err := w.r.Rerank(jobCtx, model, job, md.Timestamp)
	stopHB()
	hb.Wait()

	var v verdict
	switch {
	case err != nil && jobCtx.Err() != nil:
		v.abandon = true
	case err != nil && md.NumDelivered >= uint64(w.cfg.MaxDeliver):
		ce := schemas.Errorf(schemas.CodeInternal, "failed on all %d deliveries, last: %v", md.NumDelivered, err)
		v.result = w.errorResult(model, job, md, ce)
		v.permanent = ce
	case err != nil:
		v.retry = err
	case res.Error != nil:
		w.stamp(res, md)
		v.result, v.permanent = res, res.Error
	default:
		w.stamp(res, md)
		v.result = res
	}
	w.settle(log, model, msg, md, job, v, start)
}

// settle is the one place a message's fate is decided.
func (w *Worker) settle(log *slog.Logger, model string, msg jetstream.Msg, md *jetstream.MsgMetadata, job *schemas.Job, v verdict, start time.Time) {
	queued := start.Sub(md.Timestamp)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	outcome := OutcomeOK
	switch {
	case v.abandon:
		outcome = OutcomeAbandoned
		if err := msg.Nak(); err != nil {
			log.Warn("handing job back", "err", err)
		}
	case v.retry != nil:
		outcome = OutcomeRetry
		delay := w.cfg.backoff(md.NumDelivered)
		log.Warn("job failed, will retry", "err", v.retry, "delay", delay.String())
		if err := msg.NakWithDelay(delay); err != nil {
			log.Warn("naking job", "err", err)
		}
	case v.permanent != nil:
		outcome = OutcomeInvalid
		if v.permanent.Code == schemas.CodeInternal {
			outcome = OutcomeFailed
		}
		// Copy first: on a work-queue stream Term deletes the message.
		stored := storedJob{subject: msg.Subject(), data: msg.Data(), header: msg.Headers()}
		if err := w.reject(ctx, log, model, stored, md, job, v.result, v.permanent); err != nil {
			log.Error("dead-lettering job, will retry", "err", err)
			_ = msg.NakWithDelay(w.cfg.backoff(md.NumDelivered))
			outcome = OutcomeRetry
			break
		}
		log.Info("job rejected", "code", v.permanent.Code, "err", v.permanent.Message)
		if err := msg.TermWithReason(string(v.permanent.Code)); err != nil {
			log.Warn("terminating job", "err", err)
		}
	default:
		if err := w.publishResult(ctx, msg.Headers(), job, v.result); err != nil {
			outcome = OutcomeRetry
			log.Warn("publishing result, will retry", "err", err)
			_ = msg.NakWithDelay(w.cfg.backoff(md.NumDelivered))
			break
		}
		if err := msg.DoubleAck(ctx); err != nil {
			// The result is stored under a dedup id; a redelivery is harmless.
			log.Warn("acknowledging job", "err", err)
		}
		log.Debug("job done", "candidates", len(job.Candidates), "total_ms", v.result.Timing.TotalMS)
	}
	w.obs.JobDone(model, outcome, md.NumDelivered, queued, time.Since(start))
}

func (w *Worker) stamp(res *schemas.Result, md *jetstream.MsgMetadata) {
	res.Attempt = int(md.NumDelivered)
	res.Worker = w.cfg.WorkerID
}

func (w *Worker) errorResult(model string, job *schemas.Job, md *jetstream.MsgMetadata, ce *schemas.Error) *schemas.Result {
	if ce == nil {
		ce = schemas.Errorf(schemas.CodeInternal, "unknown failure")
	}
	res := &schemas.Result{V: schemas.Version, ID: job.ID, Model: model, Results: []schemas.Ranked{}, Error: ce, Meta: job.Meta}
	w.stamp(res, md)
	res.Timing.QueuedMS = float64(time.Since(md.Timestamp).Microseconds()) / 1000
	return res
}

// publishResult sends the result to the job's reply_to, else to
// rerank.results.<id>. Results under rerank.results. go through JetStream
// (acknowledged, deduplicated by ResultMsgID); other subjects are core NATS
// replies, published before the job is acked on the same connection.
// The result has the job's format, from its content-type header.
func (w *Worker) publishResult(ctx context.Context, jobHeader nats.Header, job *schemas.Job, res *schemas.Result) error {
	format, _ := schemas.ParseContentType(jobHeader.Get(HeaderContentType))
	data, err := schemas.EncodeResult(res, format)
	if err != nil {
		return fmt.Errorf("encoding result: %w", err)
	}
	subject := ResultSubject(res.ID)
	if job != nil && job.ReplyTo != "" && (res.Error == nil || res.Error.Code != schemas.CodeInvalidReplyTo) {
		subject = job.ReplyTo
	}
	out := nats.NewMsg(subject)
	out.Data = data
	out.Header.Set(HeaderContentType, format.ContentType())
	out.Header.Set(HeaderMsgID, ResultMsgID(res.ID))
	out.Header.Set(HeaderWorker, w.cfg.WorkerID)
	if strings.HasPrefix(subject, ResultsPrefix) {
		if _, err := w.js.PublishMsg(ctx, out); err != nil {
			return fmt.Errorf("publishing result to %s: %w", subject, err)
		}
		return nil
	}
	if err := w.nc.PublishMsg(out); err != nil {
		return fmt.Errorf("publishing result to %s: %w", subject, err)
	}
	return nil
}

// storedJob is a job message as JetStream stored it: delivered to the
// worker, or read back from the stream by sequence.
type storedJob struct {
	subject string
	data    []byte
	header  nats.Header
}

// decode decodes a stored job in the format its content-type header names.
// When that fails it returns the error and what salvageJob recovers, to
// address the error result.
func (w *Worker) decode(s storedJob) (*schemas.Job, error) {
	format, err := schemas.ParseContentType(s.header.Get(HeaderContentType))
	var job *schemas.Job
	if err == nil {
		job, err = schemas.DecodeJob(s.data, format, w.cfg.Limits)
	}
	if err != nil {
		return salvageJob(s.data, s.header, format), err
	}
	return job, nil
}

// reject dead-letters a stored job and publishes its error result, if it
// has an id to go to: what a permanent failure does before the job leaves
// the stream (Term for a delivered job, a delete for one out of
// deliveries). An error means nothing was dead-lettered.
func (w *Worker) reject(ctx context.Context, log *slog.Logger, model string, s storedJob, md *jetstream.MsgMetadata, job *schemas.Job, res *schemas.Result, ce *schemas.Error) error {
	if err := w.deadLetter(ctx, model, s, md, ce); err != nil {
		return err
	}
	w.obs.DeadLettered(model, string(ce.Code))
	if res != nil && res.ID != "" {
		if err := w.publishResult(ctx, s.header, job, res); err != nil {
			log.Warn("publishing error result", "err", err)
		}
	}
	return nil
}

// deadLetter copies the stored job's payload, with reason headers, to
// rerank.dead.<model>.
func (w *Worker) deadLetter(ctx context.Context, model string, s storedJob, md *jetstream.MsgMetadata, ce *schemas.Error) error {
	out := nats.NewMsg(DeadPrefix + model)
	out.Data = s.data
	for k, vs := range s.header {
		if k == HeaderMsgID || strings.HasPrefix(k, "Nats-") {
			continue
		}
		for _, v := range vs {
			out.Header.Add(k, v)
		}
	}
	out.Header.Set(HeaderErrorCode, string(ce.Code))
	out.Header.Set(HeaderError, truncate(ce.Error(), 1024))
	out.Header.Set(HeaderJobSubject, s.subject)
	out.Header.Set(HeaderJobSequence, strconv.FormatUint(md.Sequence.Stream, 10))
	out.Header.Set(HeaderAttempt, strconv.FormatUint(md.NumDelivered, 10))
	out.Header.Set(HeaderWorker, w.cfg.WorkerID)
	if id := s.header.Get(HeaderMsgID); id != "" {
		out.Header.Set("Rerank-Job-Msg-Id", id)
	}
	_, err := w.js.PublishMsg(ctx, out, jetstream.WithMsgID("dead:"+strconv.FormatUint(md.Sequence.Stream, 10)))
	if err != nil {
		return fmt.Errorf("publishing dead letter to %s: %w", out.Subject, err)
	}
	return nil
}

// salvageJob recovers what it can of an undecodable job to address its
// error result: id and reply_to when they decode, else the Nats-Msg-Id
// header (clients set it to the job id).
func salvageJob(data []byte, header nats.Header, format schemas.Format) *schemas.Job {
	var head struct {
		ID      string `msgpack:"id" json:"id"`
		ReplyTo string `msgpack:"reply_to" json:"reply_to"`
	}
	if len(data) <= schemas.DefaultMaxPayloadBytes {
		if format == schemas.JSON {
			_ = json.Unmarshal(data, &head)
		} else if schemas.CheckMsgpack(data) == nil {
			_ = msgpack.Unmarshal(data, &head)
		}
	}
	job := &schemas.Job{ID: head.ID, ReplyTo: head.ReplyTo}
	if job.ReplyTo != "" && schemas.CheckReplyTo(job.ReplyTo) != nil {
		job.ReplyTo = ""
	}
	if schemas.CheckID(job.ID) != nil {
		job.ID, job.ReplyTo = header.Get(HeaderMsgID), ""
		if schemas.CheckID(job.ID) != nil {
			job.ID = ""
		}
	}
	return job
}

// sleep waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-time.After(d):
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
