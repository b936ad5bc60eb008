package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/rerank/rerank/schemas"
)

// publishAttempt bounds one publish request; publishing as a whole is
// retried for Config.PublishRetry.
const publishAttempt = 10 * time.Second

// verdict is what happened to a job; settle turns it into the message's fate.
type verdict struct {
	result    *schemas.Result // to publish (success or error result)
	permanent *schemas.Error  // the job is at fault or out of deliveries: dead-letter + Term
	retry     error           // transient: NakWithDelay
	abandon   bool            // shutting down: Nak now for another worker
	stored    bool            // already answered by an earlier delivery: Ack
	// freeSlot, if set, gives back the job's slot. It is called once the
	// answer is stored, before the ack's round trip: the ack is confirmed
	// (DoubleAck) while the slot serves the next job.
	freeSlot func()
}

// settle is the one place a message's fate is decided. ctx bounds the
// publishing retries: when it ends, the job is handed back.
func (w *Worker) settle(ctx context.Context, log *slog.Logger, model string, msg jetstream.Msg, md *jetstream.MsgMetadata, job *schemas.Job, v verdict, start time.Time) {
	queued := start.Sub(md.Timestamp)
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
	case v.stored:
		outcome = OutcomeStored
		w.ack(ctx, log, msg, v.freeSlot)
	default:
		outcome = w.answer(ctx, log, model, msg, md, job, v)
	}
	w.obs.JobDone(model, outcome, md.NumDelivered, queued, time.Since(start))
}

// answer publishes a job's result and acks it, or, for a permanent
// failure, publishes the error result, dead-letters it and terminates it.
// A result too large to publish becomes the permanent result_too_large.
// What cannot be published within PublishRetry is handed back for a later
// delivery, never dropped.
func (w *Worker) answer(ctx context.Context, log *slog.Logger, model string, msg jetstream.Msg, md *jetstream.MsgMetadata, job *schemas.Job, v verdict) string {
	retry := func(what string, err error) string {
		if ctx.Err() != nil {
			_ = msg.Nak()
			return OutcomeAbandoned
		}
		log.Error(what+", will retry", "err", err)
		_ = msg.NakWithDelay(w.cfg.backoff(md.NumDelivered))
		return OutcomeRetry
	}
	if v.permanent == nil {
		out, err := w.resultMsg(msg.Headers(), job, v.result)
		if err == nil {
			if err := w.retrying(ctx, log, "publishing result", func(ctx context.Context) error { return w.publish(ctx, out) }); err != nil {
				return retry("publishing result", err)
			}
			w.ack(ctx, log, msg, v.freeSlot)
			log.Debug("job done", "candidates", len(job.Candidates), "total_ms", v.result.Timing.TotalMS)
			return OutcomeOK
		}
		ce := schemas.AsError(err)
		if ce == nil {
			ce = schemas.Errorf(schemas.CodeInternal, "%v", err)
		}
		v.result, v.permanent = w.errorResult(model, job, md, ce), ce
	}
	// Copy first: on a work-queue stream Term deletes the message.
	stored := storedJob{subject: msg.Subject(), data: msg.Data(), header: msg.Headers()}
	if err := w.reject(ctx, log, model, stored, md, job, v.result, v.permanent); err != nil {
		return retry("answering rejected job", err)
	}
	log.Info("job rejected", "code", v.permanent.Code, "err", v.permanent.Message)
	if err := msg.TermWithReason(string(v.permanent.Code)); err != nil {
		log.Warn("terminating job", "err", err)
	}
	if v.permanent.Code == schemas.CodeInternal {
		return OutcomeFailed
	}
	return OutcomeInvalid
}

// ack acknowledges a job whose answer is stored, after giving back its
// slot (freeSlot, if set): the confirmation's round trip through the
// consumer's replicas no longer holds a slot that the next job can use.
func (w *Worker) ack(ctx context.Context, log *slog.Logger, msg jetstream.Msg, freeSlot func()) {
	if freeSlot != nil {
		freeSlot()
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishAttempt)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		// The result is stored under a dedup id; a redelivery is harmless.
		log.Warn("acknowledging job", "err", err)
	}
}

// stamp records who answered which job message: the worker, the delivery,
// and the message itself (Result.Answers), which readers check.
func (w *Worker) stamp(res *schemas.Result, md *jetstream.MsgMetadata) {
	res.Attempt = int(md.NumDelivered)
	res.Worker = w.cfg.WorkerID
	res.JobStream, res.JobSeq = md.Stream, md.Sequence.Stream
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

// replySubject is where a result goes, in the job's tenant's namespace:
// the job's reply_to when it passes checkReplyTo, else
// rerank.results.<id>.
func (w *Worker) replySubject(job *schemas.Job, id string) string {
	if job == nil {
		return schemas.ResultSubject(id)
	}
	if job.ReplyTo != "" && w.checkReplyTo(job.ReplyTo, job.ID, job.Tenant) == nil {
		return schemas.TenantSubject(job.Tenant, job.ReplyTo)
	}
	return schemas.TenantSubject(job.Tenant, schemas.ResultSubject(id))
}

// checkReplyTo checks a job's reply_to, whatever the caller checked
// before: schemas.CheckReplyTo with the operator's allow-list for the
// shared namespace; for a tenant's job, which answers only into its
// tenant's namespace, a subject under rerank.results. (its own results,
// which the tenant's account imports: nothing else of the service account
// reaches it).
func (w *Worker) checkReplyTo(replyTo, id, tenant string) error {
	if tenant == "" {
		return schemas.CheckReplyTo(replyTo, id, w.cfg.Limits.ReplyAllow)
	}
	if err := schemas.CheckReplyTo(replyTo, id, nil); err != nil {
		return err
	}
	if !strings.HasPrefix(replyTo, schemas.ResultsPrefix) {
		return schemas.Errorf(schemas.CodeInvalidReplyTo, "reply_to %q: a tenant's results go under %s (rerank.results.<id> or rerank.results.<namespace>.<id>)", replyTo, schemas.ResultsPrefix)
	}
	return nil
}

// maxMsgBytes is the most a message the worker publishes may hold, headers
// included: the server's max payload, and the streams' max message size.
func (w *Worker) maxMsgBytes() int {
	limit := int64(DefaultMaxMsgBytes)
	if mp := w.nc.MaxPayload(); mp > 0 {
		limit = min(limit, mp)
	}
	return int(limit)
}

// resultMsg encodes a result in its job's format, addressed to its reply
// subject. A result over maxMsgBytes is the permanent result_too_large.
func (w *Worker) resultMsg(jobHeader nats.Header, job *schemas.Job, res *schemas.Result) (*nats.Msg, error) {
	format, _ := schemas.ParseContentType(jobHeader.Get(schemas.HeaderContentType))
	data, err := schemas.EncodeResult(res, format)
	if err != nil {
		return nil, fmt.Errorf("encoding result: %w", err)
	}
	out := nats.NewMsg(w.replySubject(job, res.ID))
	out.Data = data
	out.Header.Set(schemas.HeaderContentType, format.ContentType())
	out.Header.Set(schemas.HeaderMsgID, ResultMsgID(res.ID, res.JobStream, res.JobSeq))
	out.Header.Set(schemas.HeaderWorker, w.cfg.WorkerID)
	if size, limit := len(data)+headerBytes(out.Header), w.maxMsgBytes(); size > limit {
		return nil, schemas.Errorf(schemas.CodeResultTooLarge,
			"the result is %d bytes, over the %d-byte message limit: ask for fewer results (top_n) or drop return_documents", size, limit)
	}
	return out, nil
}

// publish sends a result. Results under rerank.results. go through
// JetStream (acknowledged, deduplicated by ResultMsgID); other subjects are
// core NATS replies, flushed before the job is acked.
func (w *Worker) publish(ctx context.Context, out *nats.Msg) error {
	ctx, cancel := context.WithTimeout(ctx, publishAttempt)
	defer cancel()
	if schemas.IsResultSubject(out.Subject) {
		if _, err := w.js.PublishMsg(ctx, out); err != nil {
			return fmt.Errorf("publishing result to %s: %w", out.Subject, err)
		}
		return nil
	}
	if err := w.nc.PublishMsg(out); err != nil {
		return fmt.Errorf("publishing result to %s: %w", out.Subject, err)
	}
	if err := w.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("flushing result to %s: %w", out.Subject, err)
	}
	return nil
}

// retrying runs f until it succeeds, ctx ends or PublishRetry has passed,
// waiting 250 ms, then twice as long each time, at most 5 s, in between.
// The caller holds the job (heartbeat) meanwhile, so an outage of the
// results or dead-letter stream shorter than PublishRetry costs no
// delivery and loses no finished work.
func (w *Worker) retrying(ctx context.Context, log *slog.Logger, what string, f func(context.Context) error) error {
	deadline := time.Now().Add(w.cfg.PublishRetry)
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("%s: gave up after %d attempts: %w", what, attempt, err)
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn(what+": retrying", "attempt", attempt, "err", err)
		}
		if !sleep(ctx, delay) {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// storedJob is a job message as JetStream stored it: delivered to the
// worker, or read back from the stream by sequence.
type storedJob struct {
	subject string
	data    []byte
	header  nats.Header
}

// tenant is the tenant whose namespace the job was stored in: the NATS
// server's doing (a tenant's account imports the job subjects into it),
// never the job's.
func (s storedJob) tenant() string {
	t, _ := schemas.TenantOf(s.subject)
	return t
}

// decode decodes a stored job in the format its content-type header names
// and checks what the worker itself relies on to answer it: its id (it
// names the result subject) and its reply_to (where the worker publishes).
// When that fails it returns the error and a job that can address the
// error result safely: what salvageJob recovers, or the decoded job with
// its reply_to cleared.
func (w *Worker) decode(s storedJob) (*schemas.Job, error) {
	format, err := schemas.ParseContentType(s.header.Get(schemas.HeaderContentType))
	var job *schemas.Job
	if err == nil {
		job, err = schemas.DecodeJob(s.data, format, w.cfg.Limits)
	}
	if err != nil {
		return w.salvageJob(s.data, s.header, format, s.tenant()), err
	}
	job.Tenant = s.tenant()
	if err := schemas.CheckID(job.ID); err != nil {
		return w.salvageJob(nil, s.header, format, job.Tenant), err
	}
	if job.ReplyTo != "" {
		if err := w.checkReplyTo(job.ReplyTo, job.ID, job.Tenant); err != nil {
			job.ReplyTo = ""
			return job, err
		}
	}
	return job, nil
}

// salvageJob recovers what it can of an undecodable job to address its
// error result: id and reply_to when they decode and pass their checks,
// else the Nats-Msg-Id header (clients set it to the job id).
func (w *Worker) salvageJob(data []byte, header nats.Header, format schemas.Format, tenant string) *schemas.Job {
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
	job := &schemas.Job{ID: head.ID, ReplyTo: head.ReplyTo, Tenant: tenant}
	if schemas.CheckID(job.ID) != nil {
		job.ID, job.ReplyTo = header.Get(schemas.HeaderMsgID), ""
		if schemas.CheckID(job.ID) != nil {
			job.ID = ""
		}
	}
	if job.ReplyTo != "" && w.checkReplyTo(job.ReplyTo, job.ID, tenant) != nil {
		job.ReplyTo = ""
	}
	return job
}

// storedResult reports whether the result of this job message (md) is
// already in the results stream (its reply subject is a result subject,
// schemas.IsResultSubject). A stored result of an earlier message with the same
// job id (the id reused after the dedup window) does not count: the job is
// computed.
func (w *Worker) storedResult(ctx context.Context, job *schemas.Job, md *jetstream.MsgMetadata) bool {
	subject := w.replySubject(job, job.ID)
	if w.results == nil || !schemas.IsResultSubject(subject) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, publishAttempt)
	defer cancel()
	m, err := w.results.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return false
	}
	f, _ := schemas.ParseContentType(m.Header.Get(schemas.HeaderContentType))
	res, err := schemas.DecodeResult(m.Data, f)
	return err == nil && res.ID == job.ID && res.Answers(md.Stream, md.Sequence.Stream)
}

// reject dead-letters the stored job, then publishes its error result if
// it has an id to go to: what a permanent failure does before the job
// leaves the stream (Term for a delivered job, a delete for one out of
// deliveries). The dead letter goes first: a stored error result is what a
// redelivery takes for "answered" (storedResult), so a worker that dies
// between the two must leave the dead letter, never the result alone. Both
// are retried as results are; an error means the job must stay in the
// stream for a later try (the dedup ids make the repeat harmless).
func (w *Worker) reject(ctx context.Context, log *slog.Logger, model string, s storedJob, md *jetstream.MsgMetadata, job *schemas.Job, res *schemas.Result, ce *schemas.Error) error {
	var out *nats.Msg
	if res != nil && res.ID != "" {
		var err error
		if out, err = w.resultMsg(s.header, job, res); err != nil {
			return err
		}
	}
	dead := w.deadLetterMsg(model, s, md, ce)
	if err := w.retrying(ctx, log, "dead-lettering job", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, publishAttempt)
		defer cancel()
		_, err := w.js.PublishMsg(ctx, dead, jetstream.WithMsgID(DeadLetterMsgID(md.Stream, md.Sequence.Stream)))
		return err
	}); err != nil {
		return fmt.Errorf("publishing dead letter to %s: %w", dead.Subject, err)
	}
	if out != nil {
		if err := w.retrying(ctx, log, "publishing error result", func(ctx context.Context) error { return w.publish(ctx, out) }); err != nil {
			return err
		}
	}
	w.obs.DeadLettered(model, string(ce.Code))
	return nil
}

// DeadLetterMsgID is the dedup id of the dead letter of message seq of job
// stream stream: every job stream (RERANK_JOBS and each partition's)
// numbers its messages from 1, and all dead-letter into RERANK_DEAD.
func DeadLetterMsgID(stream string, seq uint64) string {
	return "dead:" + stream + ":" + strconv.FormatUint(seq, 10)
}

// deadLetterMsg is the stored job's payload, with reason headers, for
// rerank.dead.<model> in the job's tenant's namespace. When payload and headers together exceed
// maxMsgBytes, the job's own headers are dropped and the payload cut to
// fit, with schemas.HeaderTrimmed, HeaderOriginalSize and
// HeaderOriginalSHA256 saying so: a dead letter must always be storable, or the job could never
// leave the queue.
func (w *Worker) deadLetterMsg(model string, s storedJob, md *jetstream.MsgMetadata, ce *schemas.Error) *nats.Msg {
	out := nats.NewMsg(schemas.TenantSubject(s.tenant(), schemas.DeadPrefix+model))
	out.Data = s.data
	for k, vs := range s.header {
		if k == schemas.HeaderMsgID || strings.HasPrefix(k, "Nats-") {
			continue
		}
		for _, v := range vs {
			out.Header.Add(k, v)
		}
	}
	reason := func(h nats.Header) {
		h.Set(schemas.HeaderErrorCode, string(ce.Code))
		h.Set(schemas.HeaderError, truncate(ce.Error(), 1024))
		h.Set(schemas.HeaderJobSubject, truncate(s.subject, 1024))
		h.Set(schemas.HeaderJobSequence, strconv.FormatUint(md.Sequence.Stream, 10))
		h.Set(schemas.HeaderAttempt, strconv.FormatUint(md.NumDelivered, 10))
		h.Set(schemas.HeaderWorker, w.cfg.WorkerID)
		if id := s.header.Get(schemas.HeaderMsgID); id != "" {
			h.Set(schemas.HeaderJobMsgID, truncate(id, 1024))
		}
	}
	reason(out.Header)
	limit := w.maxMsgBytes()
	if len(out.Data)+headerBytes(out.Header) <= limit {
		return out
	}
	sum := sha256.Sum256(s.data)
	trimmed := nats.NewMsg(out.Subject)
	reason(trimmed.Header)
	if ct := s.header.Get(schemas.HeaderContentType); ct != "" {
		trimmed.Header.Set(schemas.HeaderContentType, truncate(ct, 256))
	}
	trimmed.Header.Set(schemas.HeaderTrimmed, "true")
	trimmed.Header.Set(schemas.HeaderOriginalSize, strconv.Itoa(len(s.data)))
	trimmed.Header.Set(schemas.HeaderOriginalSHA256, hex.EncodeToString(sum[:]))
	const slack = 1 << 10 // the protocol's own framing
	room := max(limit-headerBytes(trimmed.Header)-slack, 0)
	trimmed.Data = s.data[:min(len(s.data), room)]
	return trimmed
}

// headerBytes is the size of h on the wire.
func headerBytes(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}
