package worker

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/rerank/rerank/schemas"
)

// Stream limits and sizes.
const (
	DuplicateWindow    = 2 * time.Minute
	ResultsMaxAge      = 24 * time.Hour
	DeadMaxAge         = 7 * 24 * time.Hour
	DefaultMaxMsgBytes = 8 << 20
)

// ConsumerName is the durable consumer all workers of model share for its
// interactive lane (jobs on rerank.jobs.<model>).
func ConsumerName(model string) string { return "rerank-" + model }

// BulkConsumerName is the durable consumer of model's bulk lane (jobs on
// rerank.jobs.<model>.bulk). Model names hold no '_' prefix of this form,
// and interactive consumers all start "rerank-", so no two names collide.
func BulkConsumerName(model string) string { return "rerank_bulk-" + model }

// LaneConsumerName is the consumer of model's lane.
func LaneConsumerName(model string, lane schemas.Lane) string {
	if lane == schemas.Bulk {
		return BulkConsumerName(model)
	}
	return ConsumerName(model)
}

// ResultMsgID is the dedup id of the stored result of the job message seq
// of stream: the same for every delivery of that message, so a redelivered
// job never stores two results, and another for a job id reused after the
// dedup window (a new message), whose result must not be taken for a
// duplicate of the old one.
func ResultMsgID(jobID, stream string, seq uint64) string {
	return jobID + ":result:" + stream + ":" + strconv.FormatUint(seq, 10)
}

// Config tunes a worker. Zero values mean the defaults.
type Config struct {
	// Provision creates or updates the streams and consumers at start. Off
	// for locked-down deployments, where deploy/ holds their definitions.
	Provision bool
	Replicas  int           // stream replicas; default 1
	AckWait   time.Duration // default 30 s
	// MaxDeliver bounds deliveries of one job; default 5.
	MaxDeliver int
	// MaxAckPending bounds unacknowledged jobs per consumer, across all
	// workers of the pool; default 1,000.
	MaxAckPending int
	// Concurrency is the number of jobs this worker runs at once; default 8.
	Concurrency int
	// InteractiveSlots are the slots of Concurrency that only interactive
	// jobs may take: bulk jobs hold at most Concurrency − InteractiveSlots,
	// so an interactive job never waits for a bulk job to finish. Default
	// Concurrency/4, at least 1 (none when Concurrency is 1); negative:
	// none; at most Concurrency − 1.
	InteractiveSlots int
	// Heartbeat is the InProgress interval; default AckWait/3.
	Heartbeat time.Duration
	// ShutdownGrace is how long Run lets jobs in flight finish after its
	// context ends; default 25 s.
	ShutdownGrace time.Duration
	// BackoffBase and BackoffMax bound the NakWithDelay backoff; default 1 s and 30 s.
	BackoffBase, BackoffMax time.Duration
	// FetchWait is how long one pull request waits for jobs; default 2 s.
	FetchWait time.Duration
	// ProvisionTimeout bounds provisioning at start, retries included
	// (a fresh cluster may not answer at first); default 2 min.
	ProvisionTimeout time.Duration
	// SweepInterval is how often the worker looks for jobs that ran out of
	// deliveries while no worker heard the server's advisory; default 1 min.
	SweepInterval time.Duration
	// PublishRetry is how long the worker keeps retrying to publish a
	// finished job's result (or an error result and dead letter), holding
	// the job meanwhile, before it hands the job back for a later delivery;
	// default 5 min. A results-stream outage shorter than this loses no
	// finished work and costs no delivery.
	PublishRetry time.Duration
	// JobsMaxMsgs bounds each lane of each model in each job stream: the
	// jobs waiting on one subject (rerank.jobs.<model>, .bulk, and their
	// partitions' .p<k>), default -1: no bound. A full lane refuses new jobs
	// at publish time (discard new per subject): its producers see
	// client.ErrQueueFull, no accepted job is dropped, and every other
	// model and lane keeps taking jobs, so one model's bulk backfill never
	// closes another's queue, nor its own interactive lane.
	JobsMaxMsgs int64
	// JobsMaxBytes bounds each job stream as a whole (default -1: no
	// bound): the storage backstop, shared by every model and lane (JetStream
	// has no per-subject byte limit). Set it above what the per-lane
	// JobsMaxMsgs bounds already allow, or a backfill that reaches it
	// refuses every lane's jobs.
	JobsMaxBytes int64
	// ResultsMaxBytes bounds the results stream besides its 24 h age; when
	// full the oldest results go first (they were also delivered live).
	// JetStream reserves it on the servers. Default 1 GiB; -1: no bound.
	ResultsMaxBytes int64
	// BacklogInterval is how often the worker reads its consumers' backlog
	// for the Observer (rerank_backlog_jobs); default 15 s, negative: never.
	BacklogInterval time.Duration
	// Partitions, when over 0, spread every model's jobs over that many
	// more job streams (RERANK_JOBS_P0…), each with its own leader, beside
	// RERANK_JOBS (which then holds only the unpartitioned subjects
	// rerank.jobs.<model> and .bulk, still served). Producers that know the
	// count publish to rerank.jobs.<model>.p<N> (client.Options.Partitions);
	// the job limits apply to each stream. docs/scaling.md says when.
	Partitions int
	// Tenants are the clients with namespaces of their own
	// (schemas.TenantPrefix): for each, the worker serves (and provisions)
	// job streams of its own, RERANK_JOBS_T_<tenant> and, with Partitions,
	// RERANK_JOBS_P<k>_T_<tenant>, and answers its jobs in its namespace:
	// results on rerank.tenant.<tenant>.results.<id> (or its reply_to,
	// which must be under rerank.results. as the tenant sees it), dead
	// letters on rerank.tenant.<tenant>.dead.<model>. The results and
	// dead-letter streams hold every tenant's, whatever this list says.
	// docs/operations.md ("Tenants") says how to add one.
	Tenants []string
	// WorkerID names this worker in results and headers; default host:pid.
	WorkerID string
	Limits   schemas.Limits
}

// Defaults.
const (
	DefaultAckWait       = 30 * time.Second
	DefaultMaxDeliver    = 5
	DefaultMaxAckPending = 1000
	DefaultConcurrency   = 8
	DefaultShutdownGrace = 25 * time.Second
	DefaultPublishRetry  = 5 * time.Minute
	// DefaultResultsMaxBytes bounds RERANK_RESULTS: a result costs ~45 bytes
	// a ranked candidate plus ~300 (msgpack, without documents), so 1 GiB
	// holds ~20,000 results of 1,000 candidates or ~1.4 M of 10
	// (docs/operations.md, Sizing).
	DefaultResultsMaxBytes = 1 << 30
	// DefaultBacklogInterval: one consumer-info request per lane and worker.
	DefaultBacklogInterval = 15 * time.Second
)

// ErrInvalidConfig reports a bad Config.
var ErrInvalidConfig = errors.New("invalid worker config")

func (c Config) withDefaults() Config {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	switch {
	case c.InteractiveSlots == 0 && c.Concurrency > 1:
		c.InteractiveSlots = max(c.Concurrency/4, 1)
	case c.InteractiveSlots < 0:
		c.InteractiveSlots = 0
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = c.AckWait / 3
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Minute
	}
	if c.ProvisionTimeout <= 0 {
		c.ProvisionTimeout = 2 * time.Minute
	}
	if c.FetchWait <= 0 {
		c.FetchWait = 2 * time.Second
	}
	if c.PublishRetry <= 0 {
		c.PublishRetry = DefaultPublishRetry
	}
	if c.JobsMaxBytes == 0 {
		c.JobsMaxBytes = -1
	}
	if c.JobsMaxMsgs == 0 {
		c.JobsMaxMsgs = -1
	}
	if c.ResultsMaxBytes == 0 {
		c.ResultsMaxBytes = DefaultResultsMaxBytes
	}
	if c.BacklogInterval == 0 {
		c.BacklogInterval = DefaultBacklogInterval
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		c.WorkerID = host + ":" + strconv.Itoa(os.Getpid())
	}
	return c
}

// Validate reports every problem of the config after defaults at once
// (joined, each wrapping ErrInvalidConfig).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	add := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	if c.Replicas > 5 {
		add("replicas %d (at most 5)", c.Replicas)
	}
	if c.Heartbeat >= c.AckWait {
		add("heartbeat %s must be shorter than ack wait %s", c.Heartbeat, c.AckWait)
	}
	if c.InteractiveSlots >= c.Concurrency && c.Concurrency > 1 {
		add("interactive slots %d must leave the bulk lane one of the %d", c.InteractiveSlots, c.Concurrency)
	}
	if c.MaxAckPending < c.Concurrency {
		add("max ack pending %d is below concurrency %d", c.MaxAckPending, c.Concurrency)
	}
	if c.Partitions < 0 || c.Partitions > schemas.MaxPartitions {
		add("partitions %d (0 to %d)", c.Partitions, schemas.MaxPartitions)
	}
	if c.FetchWait < 100*time.Millisecond {
		add("fetch wait %s under 100ms", c.FetchWait)
	}
	seen := make(map[string]bool, len(c.Tenants))
	for _, t := range c.Tenants {
		if err := schemas.CheckTenant(t); err != nil {
			add("%w", err)
		} else if seen[t] {
			add("tenant %s listed twice", t)
		}
		seen[t] = true
	}
	return errors.Join(errs...)
}

// backoff is the NakWithDelay delay after the given delivery failed.
func (c Config) backoff(delivered uint64) time.Duration {
	d := c.BackoffBase
	for i := uint64(1); i < delivered && d < c.BackoffMax; i++ {
		d *= 2
	}
	return min(d, c.BackoffMax)
}
