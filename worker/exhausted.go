package worker

import (
	"context"
	"encoding/json"
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

// streamMaxDeliveriesAdvisory is the subject on which the server announces
// that a job of the consumer reached its MaxDeliver without being settled.
func streamMaxDeliveriesAdvisory(stream, consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + "." + consumer
}

// exhaustedQueue is the queue group in which one worker of the pool takes
// each advisory.
const exhaustedQueue = "rerank-exhausted"

// maxDeliveriesAdvisory is the part of the server's
// io.nats.jetstream.advisory.v1.max_deliver event the worker reads.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// exhaustedWatch answers jobs that ran out of deliveries without any worker
// settling them: every delivery ended with its worker dying (OOM kill, a
// native crash, a lost node) or handing the job back at shutdown. No
// delivery returns for them, so handle never sees them; the server's
// advisory does. The watch publishes the `internal` error result the
// contract promises, dead-letters the stored bytes and deletes the job from
// the work queue.
//
// The advisory is sent once, over core NATS: when no worker is connected at
// that moment it is lost. So the watch also sweeps, at start and every
// SweepInterval, for delivered jobs still in the work-queue stream while
// their consumer has nothing pending (see untracked).
type exhaustedWatch struct {
	w       *Worker
	sources []*source
	byName  map[string]*source // stream/consumer → its source
	ch      chan *nats.Msg
	subs    []*nats.Subscription
	quit    chan struct{}
	done    sync.WaitGroup
	once    sync.Once
}

// sweepSettle is how long a job the sweep found must stay found before it
// is answered: an acknowledged job leaves the stream a moment after its ack.
const sweepSettle = 2 * time.Second

func (w *Worker) watchExhausted(sources []*source) (*exhaustedWatch, error) {
	x := &exhaustedWatch{w: w, sources: sources, byName: map[string]*source{},
		ch: make(chan *nats.Msg, 256), quit: make(chan struct{})}
	for _, src := range sources {
		x.byName[src.jobStream.name+"/"+src.consumerName()] = src
		sub, err := w.nc.ChanQueueSubscribe(streamMaxDeliveriesAdvisory(src.jobStream.name, src.consumerName()), exhaustedQueue, x.ch)
		if err != nil {
			x.stop()
			return nil, fmt.Errorf("subscribing to max-deliveries advisories of %s: %w", src, err)
		}
		x.subs = append(x.subs, sub)
	}
	x.done.Add(1)
	go x.loop()
	return x, nil
}

func (x *exhaustedWatch) loop() {
	defer x.done.Done()
	x.sweep()
	tick := time.NewTicker(x.w.cfg.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case m := <-x.ch:
			x.handle(m)
		case <-tick.C:
			x.sweep()
		case <-x.quit:
			// Answer what was already handed to this worker.
			for {
				select {
				case m := <-x.ch:
					x.handle(m)
				default:
					return
				}
			}
		}
	}
}

// stop unsubscribes, answers advisories already received, and returns once
// the watch's goroutine is gone. Idempotent.
func (x *exhaustedWatch) stop() {
	x.once.Do(func() {
		for _, s := range x.subs {
			_ = s.Unsubscribe()
		}
		close(x.quit)
	})
	x.done.Wait()
}

// sweep answers the jobs out of deliveries that untracked finds twice,
// sweepSettle apart; at most sweepBatch per model and sweep.
func (x *exhaustedWatch) sweep() {
	const sweepBatch = 100
	for _, src := range x.sources {
		found, maxDeliver := x.untracked(src, sweepBatch)
		if len(found) == 0 {
			continue
		}
		select {
		case <-time.After(sweepSettle):
		case <-x.quit:
			return
		}
		again, _ := x.untracked(src, sweepBatch)
		for _, seq := range found {
			if !slices.Contains(again, seq) {
				continue // removed meanwhile: it was acknowledged
			}
			x.answerRetrying(src, maxDeliveriesAdvisory{Stream: src.jobStream.name, Consumer: src.consumerName(),
				StreamSeq: seq, Deliveries: uint64(maxDeliver)}, "sweep")
		}
	}
}

// untracked lists the stream sequences of model's jobs that the consumer
// delivered and no longer tracks: with nothing pending (no job in flight,
// none waiting for redelivery), a job still in the work-queue stream at or
// below the last delivered sequence was neither acknowledged (that removes
// it) nor is it due again. In a busy moment it lists nothing; a later sweep
// finds the job idle.
func (x *exhaustedWatch) untracked(src *source, limit int) ([]uint64, int) {
	model, cons := src.model, src.cons
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ci, err := cons.Info(ctx)
	if err != nil {
		x.w.log.Warn("sweeping for jobs out of deliveries: reading consumer", "model", model, "err", err)
		return nil, 0
	}
	if ci.NumAckPending != 0 {
		return nil, 0
	}
	last := ci.Delivered.Stream
	var out []uint64
	for seq := uint64(1); seq <= last && len(out) < limit; seq++ {
		raw, err := src.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(src.subject()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			x.w.log.Warn("sweeping for jobs out of deliveries: reading job", "model", model, "err", err)
			break
		}
		if raw.Sequence > last {
			break
		}
		out = append(out, raw.Sequence)
		seq = raw.Sequence
	}
	return out, ci.Config.MaxDeliver
}

func (x *exhaustedWatch) handle(m *nats.Msg) {
	w := x.w
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(m.Data, &adv); err != nil {
		w.log.Warn("decoding max-deliveries advisory", "subject", m.Subject, "err", err)
		return
	}
	src, ok := x.byName[adv.Stream+"/"+adv.Consumer]
	if !ok || adv.StreamSeq == 0 {
		w.log.Warn("ignoring max-deliveries advisory", "stream", adv.Stream, "consumer", adv.Consumer, "stream_seq", adv.StreamSeq)
		return
	}
	x.answerRetrying(src, adv, "advisory")
}

// answerRetrying answers one exhausted job, with a few tries: the advisory
// is not sent again (a later sweep would find the job, though).
func (x *exhaustedWatch) answerRetrying(src *source, adv maxDeliveriesAdvisory, via string) {
	w := x.w
	log := w.log.With("model", src.model, "stream", src.jobStream.name, "stream_seq", adv.StreamSeq, "attempt", adv.Deliveries, "found_by", via)
	start := time.Now()
	var err error
	for try := range 3 {
		if try > 0 {
			select {
			case <-time.After(time.Duration(try) * time.Second):
			case <-x.quit:
			}
		}
		var done bool
		done, err = x.answer(log, src, adv, start)
		if done || err == nil {
			return
		}
		log.Warn("answering job out of deliveries, will retry", "err", err)
	}
	log.Error("answering job out of deliveries: giving up for now (the next sweep tries again)", "err", err)
}

// answer settles one exhausted job; done reports that nothing is left to do
// (answered, or already gone).
func (x *exhaustedWatch) answer(log *slog.Logger, src *source, adv maxDeliveriesAdvisory, start time.Time) (done bool, err error) {
	w, model := x.w, src.model
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := src.stream.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		log.Debug("job out of deliveries already settled")
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading job %d: %w", adv.StreamSeq, err)
	}
	stored := storedJob{subject: raw.Subject, data: raw.Data, header: raw.Header}
	job, _ := w.decode(stored) // undecodable: salvaged, to address the result
	log = log.With("job_id", job.ID)
	md := &jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Stream: raw.Sequence},
		NumDelivered: adv.Deliveries,
		Timestamp:    raw.Time,
		Stream:       src.jobStream.name,
		Consumer:     adv.Consumer,
	}
	ce := schemas.Errorf(schemas.CodeInternal,
		"failed on all %d deliveries: each worker stopped (crashed, was killed or shut down) before finishing it", adv.Deliveries)
	res := w.errorResult(model, job, md, ce)
	// Dead letter first: deleting the job before would lose it.
	if err := w.reject(ctx, log, model, stored, md, job, res, ce); err != nil {
		return false, err
	}
	if err := src.stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		log.Warn("deleting job out of deliveries", "err", err)
	}
	log.Warn("job out of deliveries: answered with an error and dead-lettered", "code", ce.Code)
	w.obs.JobDone(model, OutcomeFailed, adv.Deliveries, start.Sub(raw.Time), time.Since(start))
	return true, nil
}
