package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/schemas"
)

// StreamConfigs returns the definitions of the three streams with the
// default limits, as the worker provisions them (deploy/ holds the same as
// JSON for the nats CLI).
func StreamConfigs(replicas int) []jetstream.StreamConfig {
	return streamConfigs(Config{Replicas: replicas})
}

// StreamConfigsFor returns the definitions of the streams c provisions:
// StreamConfigs with c's replicas, limits, partitions and tenants.
func StreamConfigsFor(c Config) []jetstream.StreamConfig { return streamConfigs(c) }

// streamConfigs is StreamConfigs with c's replicas and limits. The job
// stream discards new messages when full, per lane: a job queue pushes
// back on the producers of the full lane (client.ErrQueueFull) instead of
// dropping the oldest jobs or refusing everyone's.
func streamConfigs(c Config) []jetstream.StreamConfig {
	c = c.withDefaults()
	replicas := c.Replicas
	out := []jetstream.StreamConfig{
		{
			Name:        schemas.JobsStream,
			Description: "re-ranking jobs, one subject per model",
			// Exactly the lanes' subjects (not rerank.jobs.>): a job on any
			// other subject is refused at publish time instead of stored
			// where no consumer reads it, and the partitions' subjects
			// (rerank.jobs.<model>.p<k>) never overlap, whatever
			// --partitions each worker of a rollout runs with.
			Subjects:   mainStream.subjects(),
			Retention:  jetstream.WorkQueuePolicy,
			Storage:    jetstream.FileStorage,
			Replicas:   replicas,
			Duplicates: DuplicateWindow,
			MaxMsgSize: DefaultMaxMsgBytes,
			MaxBytes:   c.JobsMaxBytes,
			MaxMsgs:    -1,
			// Per lane (subject), not per stream: a full lane refuses
			// only its own producers.
			MaxMsgsPerSubject:    c.JobsMaxMsgs,
			DiscardNewPerSubject: c.JobsMaxMsgs > 0,
			Discard:              jetstream.DiscardNew,
		},
		{
			Name:        schemas.ResultsStream,
			Description: "re-ranking results by job id",
			// The shared namespace's and every tenant's, whatever
			// --tenants a worker of a rollout runs with.
			Subjects:   []string{schemas.ResultsPrefix + ">", schemas.TenantSubject("*", schemas.ResultsPrefix+">")},
			Retention:  jetstream.LimitsPolicy,
			Storage:    jetstream.FileStorage,
			Replicas:   replicas,
			Duplicates: DuplicateWindow,
			MaxAge:     ResultsMaxAge,
			MaxBytes:   c.ResultsMaxBytes,
			MaxMsgSize: DefaultMaxMsgBytes,
		},
		{
			Name:        schemas.DeadStream,
			Description: "dead-lettered jobs: original bytes with reason headers",
			Subjects:    []string{schemas.DeadPrefix + ">", schemas.TenantSubject("*", schemas.DeadPrefix+">")},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  DuplicateWindow,
			MaxAge:      DeadMaxAge,
			MaxMsgSize:  DefaultMaxMsgBytes + 64<<10,
		},
	}
	for _, js := range jobStreams(c)[1:] {
		ps := out[0]
		ps.Name = js.name
		ps.Description = "re-ranking jobs"
		if js.tenant != "" {
			ps.Description += " of tenant " + js.tenant
		}
		if js.partition >= 0 {
			ps.Description += fmt.Sprintf(", partition %d of %d", js.partition, c.Partitions)
		}
		ps.Subjects = js.subjects()
		out = append(out, ps)
	}
	return out
}

// tenantResults is the results stream's subject for every tenant's results.
var tenantResults = schemas.TenantSubject("*", schemas.ResultsPrefix+">")

// jobStream is one stream of jobs: RERANK_JOBS (partition -1, no tenant),
// a partition's, or a tenant's (and its partitions').
type jobStream struct {
	name      string
	partition int
	tenant    string
}

var mainStream = jobStream{name: schemas.JobsStream, partition: -1}

// jobStreams lists the job streams: RERANK_JOBS, the partitions', then
// each tenant's likewise.
func jobStreams(c Config) []jobStream {
	var out []jobStream
	for _, t := range append([]string{""}, c.Tenants...) {
		for p := -1; p < c.Partitions; p++ {
			out = append(out, jobStream{name: schemas.TenantJobsStream(t, p), partition: p, tenant: t})
		}
	}
	return out
}

// subject is the subject of model's lane in this stream.
func (s jobStream) subject(model string, lane schemas.Lane) string {
	subject := schemas.LaneSubject(model, lane)
	if s.partition >= 0 {
		subject = schemas.PartitionSubject(model, lane, s.partition)
	}
	return schemas.TenantSubject(s.tenant, subject)
}

// subjects are the stream's subjects: its lanes' for every model.
func (s jobStream) subjects() []string {
	return []string{s.subject("*", schemas.Interactive), s.subject("*", schemas.Bulk)}
}

// ConsumerConfig is the durable pull consumer all workers of model share
// for its interactive lane.
func ConsumerConfig(model string, c Config) jetstream.ConsumerConfig {
	return LaneConsumerConfig(model, schemas.Interactive, c)
}

// LaneConsumerConfig is the durable pull consumer of model's lane. Each
// lane has its own, so that a backlog of bulk jobs never stands in front of
// an interactive job in one consumer's delivery order.
func LaneConsumerConfig(model string, lane schemas.Lane, c Config) jetstream.ConsumerConfig {
	c = c.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:       LaneConsumerName(model, lane),
		Description:   "re-ranking workers for model " + model + ", " + lane.String() + " lane",
		FilterSubject: schemas.LaneSubject(model, lane),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      0, // inherit the stream's
	}
}

// streamConsumerConfig is LaneConsumerConfig for the lane's subject in
// job stream s (a partition's, or RERANK_JOBS's).
func streamConsumerConfig(s jobStream, model string, lane schemas.Lane, c Config) jetstream.ConsumerConfig {
	cc := LaneConsumerConfig(model, lane, c)
	cc.FilterSubject = s.subject(model, lane)
	if s.tenant != "" {
		cc.Description += ", tenant " + s.tenant
	}
	if s.partition >= 0 {
		cc.Description += fmt.Sprintf(", partition %d", s.partition)
	}
	return cc
}

// ErrNotProvisioned means a stream or consumer the worker needs is missing
// and provisioning is off.
var ErrNotProvisioned = errors.New("stream or consumer not provisioned")

// Provision creates or updates the streams and the models' consumers.
func Provision(ctx context.Context, js jetstream.JetStream, models []string, c Config) error {
	return provision(ctx, js, models, c, 0)
}

func provision(ctx context.Context, js jetstream.JetStream, models []string, c Config, perCall time.Duration) error {
	for _, sc := range streamConfigs(c) {
		cctx, cancel := callCtx(ctx, perCall)
		_, err := js.CreateOrUpdateStream(cctx, sc)
		cancel()
		if err != nil {
			return fmt.Errorf("provisioning stream %s: %w", sc.Name, err)
		}
	}
	for _, stream := range jobStreams(c) {
		for _, m := range models {
			for _, lane := range schemas.Lanes {
				cctx, cancel := callCtx(ctx, perCall)
				_, err := js.CreateOrUpdateConsumer(cctx, stream.name, streamConsumerConfig(stream, m, lane, c))
				cancel()
				if err != nil {
					return fmt.Errorf("provisioning consumer %s on %s: %w", LaneConsumerName(m, lane), stream.name, err)
				}
			}
		}
	}
	return nil
}

// provisionAttempt bounds one request at start, provisioning or binding:
// on a fresh cluster a stream create racing another worker's update, or an
// info request during a leader election, may go unanswered, and a retry a
// moment later succeeds.
const provisionAttempt = 5 * time.Second

// backlogRead bounds one read of a consumer's backlog (Config.BacklogInterval).
const backlogRead = 5 * time.Second

// provisionRetrying runs Provision, one request at a time under its own
// timeout, retrying transient failures with backoff until ctx ends. An error
// the server gives for the definition itself (400, other than a concurrent
// create) is returned at once.
func provisionRetrying(ctx context.Context, js jetstream.JetStream, models []string, c Config, log *slog.Logger) error {
	return retryTransient(ctx, log, "provisioning", func(ctx context.Context) error {
		return provision(ctx, js, models, c, provisionAttempt)
	})
}

// retryTransient runs attempt until it succeeds, fails for good (a missing
// stream or consumer, a definition the server refuses) or ctx ends,
// waiting 250 ms, doubling to 4 s, between tries. Provisioning and binding
// at start share it.
func retryTransient(ctx context.Context, log *slog.Logger, what string, attempt func(context.Context) error) error {
	delay := 250 * time.Millisecond
	for n := 1; ; n++ {
		err := attempt(ctx)
		if err == nil || errors.Is(err, ErrNotProvisioned) || !provisionRetryable(err) || ctx.Err() != nil {
			return err
		}
		log.Warn(what+", will retry", "attempt", n, "delay", delay.String(), "err", err)
		if !sleep(ctx, delay) {
			return fmt.Errorf("%w (gave up after %d attempts: %w)", err, n, ctx.Err())
		}
		delay = min(2*delay, 4*time.Second)
	}
}

// callCtx bounds one request by perCall, when set.
func callCtx(ctx context.Context, perCall time.Duration) (context.Context, context.CancelFunc) {
	if perCall > 0 {
		return context.WithTimeout(ctx, perCall)
	}
	return ctx, func() {}
}

func provisionRetryable(err error) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) || ae.Code != 400 {
		return true // timeouts, no responders, cluster not ready (503), leader moving
	}
	switch ae.ErrorCode {
	case jetstream.JSErrCodeStreamNameInUse, jetstream.JSErrCodeConsumerExists,
		jetstream.JSErrCodeConsumerAlreadyExists, jetstream.JSErrCodeConsumerNameExists:
		return true // another worker created it at the same moment
	}
	return false
}

// source is one consumer a worker pulls from: a model's lane in one job
// stream (RERANK_JOBS or a partition's).
type source struct {
	model string
	lane  schemas.Lane
	// streams is how many job streams serve the lane (1 + partitions):
	// each of their pullers asks for its share of the free slots, so that
	// partitions do not multiply the jobs a worker holds waiting.
	streams int
	jobStream
	stream   jetstream.Stream
	cons     jetstream.Consumer
	settings consumerSettings
}

func (s *source) consumerName() string { return LaneConsumerName(s.model, s.lane) }
func (s *source) subject() string      { return s.jobStream.subject(s.model, s.lane) }

// String names the source in logs: the consumer, after its stream when
// that is a partition's.
func (s *source) String() string {
	if s.jobStream.name == schemas.JobsStream {
		return s.consumerName()
	}
	return s.jobStream.name + "/" + s.consumerName()
}

// lookupConsumers binds every model's lane consumers. A missing interactive
// consumer is an error; a missing bulk consumer (a deployment that
// predates lanes, provisioning off) is logged and its lane not served.
func lookupConsumers(ctx context.Context, js jetstream.JetStream, models []string, c Config, log *slog.Logger) ([]*source, error) {
	var out []*source
	streams := jobStreams(c)
	for _, home := range streams {
		sn := home.name
		stream, err := js.Stream(ctx, sn)
		if err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil, fmt.Errorf("binding stream %s: %w (run with --provision or apply deploy/nats definitions): %v", sn, ErrNotProvisioned, err)
			}
			return nil, fmt.Errorf("binding stream %s: %w", sn, err)
		}
		for _, m := range models {
			for _, lane := range schemas.Lanes {
				name := LaneConsumerName(m, lane)
				cons, err := stream.Consumer(ctx, name)
				if err != nil {
					missing := errors.Is(err, jetstream.ErrConsumerNotFound)
					if missing && lane == schemas.Bulk {
						log.Warn("no bulk consumer: this model's bulk lane is not served (run with --provision or apply deploy/nats definitions)",
							"model", m, "consumer", name, "stream", sn)
						continue
					}
					if missing {
						return nil, fmt.Errorf("binding consumer %s on stream %s: %w (run with --provision or apply deploy/nats definitions): %v",
							name, sn, ErrNotProvisioned, err)
					}
					return nil, fmt.Errorf("binding consumer %s: %w", name, err)
				}
				out = append(out, &source{model: m, lane: lane, streams: len(streams), jobStream: home, stream: stream,
					cons: cons, settings: settingsOf(cons, c)})
			}
		}
	}
	return out, nil
}
