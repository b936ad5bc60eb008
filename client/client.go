package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/schemas"
)

// Errors.
var (
	// ErrPayloadTooLarge: the encoded job exceeds the server's max payload.
	// Split the candidates over several jobs.
	ErrPayloadTooLarge = errors.New("job exceeds the server's max payload")
	ErrNoModel         = errors.New("no model: set Job.Model or Options.Model")
	// ErrIDConflict: with Options.Track, the job id names a job already
	// accepted with other content (another query, candidates or options):
	// nothing was published. An id is one job; use a new one.
	ErrIDConflict = errors.New("job id already used for another job")
	// ErrQueueFull: the job stream is at its limit (max_bytes or max_msgs,
	// discard new) and refused the job, which was not queued. The error
	// also matches the coded schemas.CodeQueueFull. Retry after a while.
	ErrQueueFull = errors.New("job queue full")
)

// Options configure a Client.
type Options struct {
	// Model is used for jobs that do not name one.
	Model string
	// Format encodes jobs; default msgpack.
	Format schemas.Format
	// Limits are checked before publishing; zero means the defaults.
	Limits schemas.Limits
	// Lane is the priority class of the jobs: Interactive (the default,
	// rerank.jobs.<model>) or Bulk (rerank.jobs.<model>.bulk), for
	// backfills and evaluations that must not delay interactive traffic.
	Lane schemas.Lane
	// Partitions is the workers' --partitions: when over 0, each job is
	// published to its partition's subject, rerank.jobs.<model>.p<N> with N
	// = schemas.PartitionOf(job id, Partitions), spreading jobs over that
	// many streams. 0 publishes to rerank.jobs.<model>, which partitioned
	// workers serve as well.
	Partitions int
	// Track records each submitted job in the AcceptedBucket (reserved
	// before it is published, its message recorded after), for Accepted;
	// ProvisionTracking creates the bucket. A
	// tracked job id is then one job for as long as its record lives (the
	// results' 24 h), not only for JetStream's 2-minute dedup window: a
	// later SubmitAsync of the same id publishes nothing and waits for the
	// recorded job's result, as an Idempotency-Key promises.
	Track bool
	// Tenant, when set, submits in that tenant's namespace
	// (schemas.TenantPrefix): jobs to rerank.tenant.<tenant>.jobs.…,
	// results read on rerank.tenant.<tenant>.results.…, job ids and
	// tracking records apart from every other tenant's. It is for trusted
	// services in the workers' account that submit on tenants' behalf (the
	// HTTP gateway); a tenant's own client, in the tenant's NATS account,
	// leaves it empty: its account's imports put it in its namespace.
	Tenant string
}

// Client submits jobs. It is safe for concurrent use.
type Client struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	opts    Options
	ignored atomic.Int64
	// trackErrors counts jobs queued whose Track record failed.
	trackErrors atomic.Int64
}

// Ignored counts the messages this client received or read on a result
// subject and dropped because they were not its job's result: another id,
// or entries that do not point at the job's candidates (see
// schemas.CheckResult). Each such message is ignored and the client keeps
// waiting for the real result.
func (c *Client) Ignored() int64 { return c.ignored.Load() }

// New returns a client on an open connection, which the caller owns.
func New(nc *nats.Conn, opts Options) (*Client, error) {
	if opts.Partitions < 0 || opts.Partitions > schemas.MaxPartitions {
		return nil, fmt.Errorf("creating client: partitions %d (0 to %d)", opts.Partitions, schemas.MaxPartitions)
	}
	if opts.Tenant != "" {
		if err := schemas.CheckTenant(opts.Tenant); err != nil {
			return nil, fmt.Errorf("creating client: %w", err)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("creating JetStream context: %w", err)
	}
	return &Client{nc: nc, js: js, opts: opts}, nil
}

// lookupTimeout bounds one read of the results stream (and of the
// accepted-jobs bucket). JetStream requests take their deadline from the
// context: under the whole wait's context, one request whose answer was
// lost (its server killed mid-request) held a Pending for the rest of its
// wait, with its result stored and its live message unread.
const lookupTimeout = 5 * time.Second

// resultBuffer is how many messages a pending job's subscription holds
// before the server counts it a slow consumer and drops messages: enough
// that forged messages ahead of the real result (see Ignored) cannot crowd
// it out.
const resultBuffer = 256

// Pending is a submitted job whose result has not been read yet.
type Pending struct {
	c       *Client
	job     *schemas.Job
	subject string
	sub     *nats.Subscription
	ch      chan *nats.Msg
	dup     bool
	// stream and seq name the job message this submission is (the publish
	// ack's, or the tracked record's): only a result that answers it is
	// taken (schemas.Result.Answers).
	stream string
	seq    uint64
}

// Submit publishes job and waits for its result until ctx ends. A job
// rejected by the worker is not an error here: it is a Result with Error set.
func (c *Client) Submit(ctx context.Context, job *schemas.Job) (*schemas.Result, error) {
	p, err := c.SubmitAsync(ctx, job)
	if err != nil {
		return nil, err
	}
	return p.Result(ctx)
}

// SubmitAsync publishes job and returns at once; many may be in flight.
// Call Result (or Cancel) on each handle.
func (c *Client) SubmitAsync(ctx context.Context, job *schemas.Job) (*Pending, error) {
	model := job.Model
	if model == "" {
		model = c.opts.Model
	}
	if model == "" {
		return nil, ErrNoModel
	}
	if err := schemas.Validate(job, model, c.opts.Limits); err != nil {
		return nil, fmt.Errorf("validating job %s: %w", job.ID, err)
	}
	data, err := schemas.EncodeJob(job, c.opts.Format)
	if err != nil {
		return nil, fmt.Errorf("encoding job %s: %w", job.ID, err)
	}
	if max := c.nc.MaxPayload(); max > 0 && int64(len(data)) > max {
		return nil, fmt.Errorf("submitting job %s: %w: %d bytes, server max %d (split the candidates over several jobs)",
			job.ID, ErrPayloadTooLarge, len(data), max)
	}
	if c.opts.Tenant != "" && job.ReplyTo != "" && !strings.HasPrefix(job.ReplyTo, schemas.ResultsPrefix) {
		return nil, fmt.Errorf("validating job %s: %w", job.ID, schemas.Errorf(schemas.CodeInvalidReplyTo,
			"reply_to %q: a tenant's results go under %s", job.ReplyTo, schemas.ResultsPrefix))
	}
	p := &Pending{c: c, job: job, subject: job.ReplyTo, ch: make(chan *nats.Msg, resultBuffer)}
	if p.subject == "" {
		p.subject = schemas.ResultSubject(job.ID)
	}
	p.subject = schemas.TenantSubject(c.opts.Tenant, p.subject)
	// Subscribe before publishing so the result cannot slip past.
	p.sub, err = c.nc.ChanSubscribe(p.subject, p.ch)
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", p.subject, err)
	}
	var t tracking
	if c.opts.Track {
		if t, err = c.track(ctx, p, job); err != nil || !t.publish {
			if err != nil {
				p.sub.Unsubscribe()
				return nil, err
			}
			return p, nil
		}
	}
	ack, err := c.publish(ctx, job, model, data)
	if err != nil {
		p.sub.Unsubscribe()
		if queueFull(err) {
			c.unreserve(ctx, t)
			return nil, fmt.Errorf("publishing job %s: %w: %w", job.ID, ErrQueueFull,
				schemas.Errorf(schemas.CodeQueueFull, "the job queue is full (%v); the job was not queued: retry later", err))
		}
		return nil, fmt.Errorf("publishing job %s: %w", job.ID, err)
	}
	p.dup, p.stream, p.seq = ack.Duplicate, ack.Stream, ack.Sequence
	if c.opts.Track {
		c.published(ctx, p, job, t, ack.Duplicate)
	}
	return p, nil
}

// publish publishes a job's encoded data on its lane's (or partition's)
// subject of model, its id the msg-id.
func (c *Client) publish(ctx context.Context, job *schemas.Job, model string, data []byte) (*jetstream.PubAck, error) {
	subject := schemas.LaneSubject(model, c.opts.Lane)
	if c.opts.Partitions > 0 {
		subject = schemas.PartitionSubject(model, c.opts.Lane, schemas.PartitionOf(job.ID, c.opts.Partitions))
	}
	msg := nats.NewMsg(schemas.TenantSubject(c.opts.Tenant, subject))
	msg.Data = data
	msg.Header.Set(schemas.HeaderContentType, c.opts.Format.ContentType())
	return c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(job.ID))
}

// queueFull reports the server's refusal of a message by a stream at its
// limits with discard new.
func queueFull(err error) bool {
	// nats-server answers JSStreamStoreFailedF (10077) with the store's
	// reason; only its limit reasons mean "full".
	const storeFailed jetstream.ErrorCode = 10077
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != storeFailed {
		return false
	}
	d := apiErr.Description
	return strings.Contains(d, "maximum messages") || strings.Contains(d, "maximum bytes")
}

// Duplicate reports whether JetStream recognized the job id as already
// submitted within the dedup window.
func (p *Pending) Duplicate() bool { return p.dup }

// Result waits for the job's result until ctx ends. For results on the
// default subject it also looks in the results stream, so a result stored
// before the client listened (a duplicate submission, a reconnect) is found.
// Only the result of this submission's job message is taken: a stored
// result of an earlier job with the same id (reused after the dedup
// window) is ignored, and so is a result that does not name its job
// message (from a worker before Result.JobSeq) unless it arrives live.
func (p *Pending) Result(ctx context.Context) (*schemas.Result, error) {
	defer p.Cancel()
	stored := p.job.ReplyTo == ""
	if stored && p.dup {
		if r, err := p.lookup(ctx); err == nil {
			return r, nil
		}
	}
	poll := time.NewTicker(5 * time.Second)
	defer poll.Stop()
	for {
		select {
		case m := <-p.ch:
			if r, ok := p.take(m); ok {
				return r, nil
			}
		case <-poll.C:
			// Messages that came during the last lookup go first: select
			// would pick between them and the tick at random.
			if r, ok := p.received(); ok {
				return r, nil
			}
			if stored {
				if r, err := p.lookup(ctx); err == nil {
					return r, nil
				}
			}
		case <-ctx.Done():
			if stored {
				lctx, cancel := context.WithTimeout(context.Background(), time.Second)
				r, err := p.lookup(lctx)
				cancel()
				if err == nil {
					return r, nil
				}
			}
			return nil, fmt.Errorf("waiting for the result of job %s: %w", p.job.ID, ctx.Err())
		}
	}
}

// received takes the first message waiting on the subscription that is
// this job's result, without waiting.
func (p *Pending) received() (*schemas.Result, bool) {
	for {
		select {
		case m := <-p.ch:
			if r, ok := p.take(m); ok {
				return r, true
			}
		default:
			return nil, false
		}
	}
}

// take decodes a message received on the subscription and reports whether
// it is this job's result (anything else is counted as ignored).
func (p *Pending) take(m *nats.Msg) (*schemas.Result, bool) {
	r, err := decode(m)
	r, err = p.accept(r, err, true)
	return r, err == nil
}

// Cancel stops listening for the result. Idempotent.
func (p *Pending) Cancel() {
	if p.sub != nil {
		p.sub.Unsubscribe()
	}
}

func (p *Pending) lookup(ctx context.Context) (*schemas.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	r, err := p.c.storedResult(ctx, p.subject)
	if err != nil && !errors.Is(err, errUndecodable) {
		return nil, err
	}
	return p.accept(r, err, false) // an undecodable message is counted as ignored
}

// errOtherInstance: a result of the job id that answers another job message.
var errOtherInstance = errors.New("the result answers another job message with this id")

// accept passes a decoded result that answers this job message, and counts
// and refuses anything else. live: the message arrived on the subscription
// after the job was published (not read back from the stream).
func (p *Pending) accept(r *schemas.Result, err error, live bool) (*schemas.Result, error) {
	if err == nil {
		err = schemas.CheckResult(p.job, r)
	}
	if err == nil && !r.Answers(p.stream, p.seq) && (r.JobSeq != 0 || !live) {
		err = fmt.Errorf("%w: %s #%d, not %s #%d", errOtherInstance, r.JobStream, r.JobSeq, p.stream, p.seq)
	}
	if err != nil {
		p.c.ignored.Add(1)
		return nil, fmt.Errorf("ignoring a message on %s: %w", p.subject, err)
	}
	return r, nil
}

func decode(m *nats.Msg) (*schemas.Result, error) {
	f, err := schemas.ParseContentType(m.Header.Get(schemas.HeaderContentType))
	if err != nil {
		return nil, fmt.Errorf("reading result: %w", err)
	}
	return schemas.DecodeResult(m.Data, f)
}
