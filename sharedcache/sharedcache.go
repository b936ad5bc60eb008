package sharedcache

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/pipeline/paircache"
)

// Defaults.
const (
	DefaultBucket = "rerank-scores"
	// DefaultTTL: an entry older than a week is dropped (a score never goes
	// stale, its key names the model; the age only recycles space).
	DefaultTTL = 7 * 24 * time.Hour
	// DefaultMaxBytes bounds the bucket; the oldest entries go first. An
	// entry takes ~100 bytes on the server's disk (its subject, headers
	// and the 4-byte score), so 1 GiB holds ~10 M pairs.
	DefaultMaxBytes = 1 << 30
	// DefaultTimeout bounds one key's lookup.
	DefaultTimeout = 250 * time.Millisecond
	// DefaultParallel is how many lookups one job has in flight at once.
	DefaultParallel = 64
	// DefaultBackoff is the pause after a failure, doubled at each failure
	// that follows up to MaxBackoff.
	DefaultBackoff = time.Second
	MaxBackoff     = 30 * time.Second
)

// Config configures the tier.
type Config struct {
	// Bucket is the key-value bucket's name (its stream is KV_<Bucket>).
	Bucket string
	// TTL is how long an entry lives (provisioning only).
	TTL time.Duration
	// MaxBytes bounds the bucket (provisioning only): when full, the oldest
	// entries are discarded to make room, unlike a default nats.go bucket,
	// which would refuse new keys and stop learning.
	MaxBytes int64
	// Replicas of the bucket's stream (provisioning only); default 1.
	Replicas int
	// Timeout bounds one lookup; a slower one is a miss and a failure.
	Timeout time.Duration
	// Parallel is the number of one job's lookups in flight at once.
	Parallel int
	// Backoff is the first pause after a failure.
	Backoff time.Duration
	// OnLookup, if set, is called after each job's lookup with the pairs
	// asked for, those found, and how long it took (for metrics).
	OnLookup func(pairs, hits int, d time.Duration)
}

// withDefaults fills c's zero fields.
func (c Config) withDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Parallel == 0 {
		c.Parallel = DefaultParallel
	}
	if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	return c
}

// ErrConfig is wrapped by Validate's errors.
var ErrConfig = errors.New("invalid shared cache config")

// Validate reports every problem with c (after defaults) at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if !validBucket(c.Bucket) {
		errs = append(errs, fmt.Errorf("%w: bucket %q: letters, digits, '-' and '_' only", ErrConfig, c.Bucket))
	}
	if c.TTL < time.Minute {
		errs = append(errs, fmt.Errorf("%w: TTL %v: at least a minute", ErrConfig, c.TTL))
	}
	if c.MaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("%w: max bytes %d: at least 1 MiB", ErrConfig, c.MaxBytes))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("%w: replicas %d: 1 to 5", ErrConfig, c.Replicas))
	}
	if c.Timeout < 0 || c.Parallel < 0 || c.Backoff < 0 {
		errs = append(errs, fmt.Errorf("%w: timeout, parallel lookups and backoff may not be negative", ErrConfig))
	}
	return errors.Join(errs...)
}

func validBucket(b string) bool {
	if b == "" || len(b) > 64 {
		return false
	}
	for _, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// StreamName is the bucket's stream.
func StreamName(bucket string) string { return "KV_" + bucket }

// StreamConfig is the bucket as a stream: the layout of a nats.go
// key-value bucket (one value per key, direct gets, no deletes), bound by
// age and bytes with the oldest entries discarded first. Any key-value
// client (the nats CLI's `nats kv`) reads it.
func StreamConfig(c Config) jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:              StreamName(c.Bucket),
		Description:       "rerank's shared pair cache: pair scores by key (docs/operations.md, The pair cache)",
		Subjects:          []string{"$KV." + c.Bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxAge:            c.TTL,
		MaxBytes:          c.MaxBytes,
		MaxMsgSize:        1024,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		Replicas:          c.Replicas,
		Duplicates:        min(2*time.Minute, c.TTL),
		AllowDirect:       true,
		AllowRollup:       true,
		DenyDelete:        true,
	}
}

// Provision creates the bucket, or updates its bounds (the operator's
// step: `rerank provision`).
func Provision(ctx context.Context, js jetstream.JetStream, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	c = c.withDefaults()
	if _, err := js.CreateOrUpdateStream(ctx, StreamConfig(c)); err != nil {
		return fmt.Errorf("provisioning the shared cache bucket %s: %w", c.Bucket, err)
	}
	return nil
}

// Ensure creates the bucket when it does not exist, and leaves an
// existing one as it is (a worker's step: the bounds an operator set are
// not reset by a worker's defaults). It reports whether it created it.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config) (created bool, err error) {
	if err := c.Validate(); err != nil {
		return false, err
	}
	c = c.withDefaults()
	sc := StreamConfig(c)
	if _, err := js.Stream(ctx, sc.Name); err == nil {
		return false, nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, fmt.Errorf("looking for the shared cache bucket %s: %w", c.Bucket, err)
	}
	_, err = js.CreateStream(ctx, sc)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
		return false, nil
	default:
		return false, fmt.Errorf("creating the shared cache bucket %s: %w", c.Bucket, err)
	}
}

// Check binds the bucket now, to say at start that it is missing or
// unreachable (lookups would only find out at the first job); the bucket
// bound is the one lookups use.
func (t *Tier) Check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := t.js.KeyValue(cctx, t.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("binding the shared cache bucket %s: %w", t.cfg.Bucket, err)
	}
	t.mu.Lock()
	t.kv = kv
	t.mu.Unlock()
	return nil
}

// Stats are the tier's counters since it was made, in pairs.
type Stats struct {
	// Lookups are pairs looked up, Hits those found.
	Lookups, Hits int64
	// Skipped are pairs not looked up or not stored because the tier was
	// failing (in its backoff) or the connection down.
	Skipped int64
	// Errors are failed lookups and stores (each starts a backoff), and
	// malformed values read.
	Errors int64
	// Puts are pairs sent to be stored.
	Puts int64
}

// Tier is the shared tier over one connection. It is safe for concurrent
// use.
type Tier struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger
	pre string // $KV.<bucket>.

	mu        sync.Mutex
	kv        jetstream.KeyValue // bound on first use
	downUntil time.Time
	backoff   time.Duration

	lookups, hits, skipped, errs, puts atomic.Int64
}

// New returns the tier over nc: a connection of its own is best, made
// with nats.ReconnectBufSize(-1), so that while it reconnects stores fail
// at once instead of filling a buffer. The bucket is bound on first use
// (and again after a failure), so a bucket created later, or a server
// back from an outage, is picked up.
func New(nc *nats.Conn, c Config, log *slog.Logger) (*Tier, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("opening JetStream for the shared cache: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c = c.withDefaults()
	return &Tier{nc: nc, js: js, cfg: c, log: log, pre: "$KV." + c.Bucket + "."}, nil
}

// Stats returns the tier's counters.
func (t *Tier) Stats() Stats {
	return Stats{Lookups: t.lookups.Load(), Hits: t.hits.Load(), Skipped: t.skipped.Load(), Errors: t.errs.Load(), Puts: t.puts.Load()}
}

// key is k as a bucket key: 32 hex digits.
func key(k paircache.Key) string { return hex.EncodeToString(k[:]) }

// bucket returns the bound bucket, binding it if need be; nil while the
// tier is in its backoff or cannot bind.
func (t *Tier) bucket(ctx context.Context) jetstream.KeyValue {
	t.mu.Lock()
	if time.Now().Before(t.downUntil) {
		t.mu.Unlock()
		return nil
	}
	kv := t.kv
	t.mu.Unlock()
	if kv != nil {
		return kv
	}
	bctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	kv, err := t.js.KeyValue(bctx, t.cfg.Bucket)
	if err != nil {
		if ctx.Err() == nil {
			t.failed(fmt.Errorf("binding the bucket: %w", err))
		}
		return nil
	}
	t.mu.Lock()
	t.kv = kv
	t.mu.Unlock()
	return kv
}

// failed starts or doubles the backoff; the bucket is bound again after it.
func (t *Tier) failed(err error) {
	t.errs.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	if time.Now().Before(t.downUntil) {
		return // a lookup that was in flight: the backoff has begun
	}
	if t.backoff == 0 {
		t.backoff = t.cfg.Backoff
	} else {
		t.backoff = min(2*t.backoff, MaxBackoff)
	}
	t.downUntil = time.Now().Add(t.backoff)
	t.kv = nil
	t.log.Warn("shared pair cache failing: computing every pair here for a while", "bucket", t.cfg.Bucket, "pause", t.backoff, "err", err)
}

// recovered ends a run of failures.
func (t *Tier) recovered() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.backoff != 0 {
		t.backoff = 0
		t.log.Info("shared pair cache answering again", "bucket", t.cfg.Bucket)
	}
}

// Get looks keys up, Parallel at a time: found[i] reports whether
// scores[i] was found. It never fails: a key not found, a lookup that
// fails or times out, and a malformed value are misses (a failure starts
// the backoff, during which Get looks nothing up).
func (t *Tier) Get(ctx context.Context, keys []paircache.Key) (scores []float32, found []bool) {
	scores, found = make([]float32, len(keys)), make([]bool, len(keys))
	if len(keys) == 0 {
		return scores, found
	}
	kv := t.bucket(ctx)
	if kv == nil {
		t.skipped.Add(int64(len(keys)))
		return scores, found
	}
	start := time.Now()
	var (
		next      atomic.Int64
		hits      atomic.Int64
		broken    atomic.Bool
		wg        sync.WaitGroup
		firstErr  error
		errOnce   sync.Once
		malformed atomic.Int64
	)
	for range min(t.cfg.Parallel, len(keys)) {
		wg.Go(func() {
			for !broken.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(keys) {
					return
				}
				lctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
				e, err := kv.Get(lctx, key(keys[i]))
				cancel()
				switch {
				case err == nil:
					v := e.Value()
					if len(v) != 4 {
						malformed.Add(1)
						continue
					}
					scores[i] = math.Float32frombits(binary.LittleEndian.Uint32(v))
					found[i] = true
					hits.Add(1)
				case errors.Is(err, jetstream.ErrKeyNotFound):
				case ctx.Err() != nil:
					return // the job's end, not the tier's failure
				default:
					errOnce.Do(func() { firstErr = err })
					broken.Store(true)
				}
			}
		})
	}
	wg.Wait()
	looked := min(int(next.Load()), len(keys))
	t.lookups.Add(int64(looked))
	t.skipped.Add(int64(len(keys) - looked))
	t.hits.Add(hits.Load())
	t.errs.Add(malformed.Load())
	if firstErr != nil {
		t.failed(fmt.Errorf("looking pairs up: %w", firstErr))
	} else if ctx.Err() == nil {
		t.recovered()
	}
	if t.cfg.OnLookup != nil {
		t.cfg.OnLookup(len(keys), int(hits.Load()), time.Since(start))
	}
	return scores, found
}

// Put stores scores[i] under keys[i], without waiting for the server: a
// store lost on the way costs one pair scored again later. Nothing is
// sent during the backoff or while the connection is down.
func (t *Tier) Put(keys []paircache.Key, scores []float32) {
	t.mu.Lock()
	down := time.Now().Before(t.downUntil)
	t.mu.Unlock()
	if down || !t.nc.IsConnected() {
		t.skipped.Add(int64(len(keys)))
		return
	}
	var v [4]byte
	for i, k := range keys {
		binary.LittleEndian.PutUint32(v[:], math.Float32bits(scores[i]))
		if err := t.nc.Publish(t.pre+key(k), v[:]); err != nil {
			t.skipped.Add(int64(len(keys) - i))
			t.failed(fmt.Errorf("storing pairs: %w", err))
			return
		}
		t.puts.Add(1)
	}
}
