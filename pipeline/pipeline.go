package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/pipeline/paircache"
	"github.com/rerank/rerank/pipeline/sched"
	"github.com/rerank/rerank/schemas"
)

// Scorer turns text pairs into relevance scores. *model.Model satisfies it.
type Scorer interface {
	Tokenize(pairs []wordpiece.Pair) ([]wordpiece.Encoding, error)
	ScoreEncoded(ctx context.Context, encs []wordpiece.Encoding) ([]float32, model.Stats, error)
}

// Model is one servable model: its scorer and its input format.
type Model struct {
	Name   string
	Scorer Scorer
	Inject *inject.Config
	// BatchPairs is the scorer's own batch size (model.Options.MaxBatchSize):
	// the default size of one scoring call.
	BatchPairs int
}

// Config tunes the pipeline. Zero values mean the defaults.
type Config struct {
	Limits schemas.Limits
	// MaxBatchDelay is how long the batcher waits for more jobs to share an
	// inference call once one arrives; default 2 ms. Negative disables
	// cross-job batching (every job is scored on its own).
	MaxBatchDelay time.Duration
	// MaxBatchPairs is the most pairs one scoring call holds: a job's
	// pairs are cut into chunks of that size, scheduled between the chunks
	// of other jobs (pipeline/sched), so no job holds the model for longer
	// than one call. Default: the model's BatchPairs, else 16.
	MaxBatchPairs int
	// ConcurrentCalls bounds scoring calls in flight per model; default 1.
	ConcurrentCalls int
	// Observer is told of each scoring call, each job's wait for its
	// first call and the chunks in flight; default NopObserver.
	Observer Observer
	// Cache, if set, holds pair scores across jobs (and models: its keys
	// carry each model's digest). Only models whose scorer states a digest
	// (*model.Model) use it.
	Cache *paircache.Cache
	// Shared, if set, is a second tier behind Cache, shared by a fleet of
	// workers (sharedcache.Tier): the pairs Cache misses are looked up
	// there before they are scored, and the pairs scored are stored there.
	// It requires Cache.
	Shared SharedCache
}

// SharedCache is a pair cache shared by workers: a lookup never fails (a
// failure is a miss), a store does not wait.
type SharedCache interface {
	Get(ctx context.Context, keys []paircache.Key) (scores []float32, found []bool)
	Put(keys []paircache.Key, scores []float32)
}

// Defaults.
const (
	DefaultMaxBatchDelay = 2 * time.Millisecond
	DefaultMaxBatchPairs = sched.DefaultBatchPairs
)

// ErrClosed is returned by Rerank after Close.
var ErrClosed = errors.New("pipeline is closed")

// ErrScorerPanic wraps a panic recovered in a scoring call: a transient
// failure of the jobs in that call.
var ErrScorerPanic = errors.New("scorer panicked")

func (c Config) withDefaults() Config {
	if c.MaxBatchDelay == 0 {
		c.MaxBatchDelay = DefaultMaxBatchDelay
	}
	if c.ConcurrentCalls <= 0 {
		c.ConcurrentCalls = 1
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	return c
}

// Validate checks the config.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBatchDelay > time.Second {
		errs = append(errs, fmt.Errorf("max batch delay %s is over 1s", c.MaxBatchDelay))
	}
	if c.Shared != nil && c.Cache == nil {
		errs = append(errs, errors.New("a shared pair cache needs a process cache in front of it"))
	}
	return errors.Join(errs...)
}

// Pipeline re-ranks jobs. Create it with New and stop it with Close.
type Pipeline struct {
	cfg     Config
	models  map[string]*batcher
	names   []string
	closing chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// New starts a pipeline serving models; it owns one batcher goroutine per
// model until Close.
func New(cfg Config, models ...Model) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuring pipeline: %w", err)
	}
	cfg = cfg.withDefaults()
	p := &Pipeline{cfg: cfg, models: map[string]*batcher{}, closing: make(chan struct{})}
	for _, m := range models {
		if m.Name == "" || m.Scorer == nil || m.Inject == nil {
			return nil, fmt.Errorf("configuring pipeline: model %q needs a name, a scorer and an inject config", m.Name)
		}
		if _, dup := p.models[m.Name]; dup {
			return nil, fmt.Errorf("configuring pipeline: model %q given twice", m.Name)
		}
		digest, err := modelDigest(m)
		if err != nil {
			return nil, fmt.Errorf("configuring pipeline: %w", err)
		}
		b := &batcher{p: p, m: m, digest: digest, cacheable: cacheable(m), in: make(chan *request), results: make(chan *call, cfg.ConcurrentCalls)}
		p.models[m.Name] = b
		p.names = append(p.names, m.Name)
		p.wg.Add(1)
		go b.loop()
	}
	slices.Sort(p.names)
	return p, nil
}

// batchPairs is the size of m's scoring calls.
func (p *Pipeline) batchPairs(m Model) int {
	switch {
	case p.cfg.MaxBatchPairs > 0:
		return p.cfg.MaxBatchPairs
	case m.BatchPairs > 0:
		return m.BatchPairs
	}
	return DefaultMaxBatchPairs
}

// Models lists the served model names.
func (p *Pipeline) Models() []string { return slices.Clone(p.names) }

// Digest is the provenance of model name's scores (schemas.Result's
// ModelDigest); "" for a model without one, or not served.
func (p *Pipeline) Digest(name string) string {
	if b, ok := p.models[name]; ok {
		return b.digest
	}
	return ""
}

// Close stops the batchers after the calls in flight; Rerank calls made
// afterwards return ErrClosed. Idempotent.
func (p *Pipeline) Close() error {
	p.once.Do(func() { close(p.closing) })
	p.wg.Wait()
	return nil
}

// Outcome is one job's answer: Result is set unless Err is a transient
// failure (the job may succeed if retried).
type Outcome struct {
	Result *schemas.Result
	Err    error
}

// RerankBatch re-ranks jobs for one model concurrently, sharing inference
// batches; outcomes are in job order, and each job's failure is its own.
func (p *Pipeline) RerankBatch(ctx context.Context, modelName string, jobs []*schemas.Job) []Outcome {
	out := make([]Outcome, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Result, out[i].Err = p.Rerank(ctx, modelName, j, time.Time{})
		}()
	}
	wg.Wait()
	return out
}

// Rerank re-ranks one job for the model named by the subject it arrived on
// (modelName; "" means the job's own model field). enqueued, if not zero, is
// when the job was queued, for timing.queued_ms.
//
// A job at fault (invalid, unknown model, missing score) gets a Result with
// Error set and a nil error. A nil Result with a non-nil error is a
// transient failure (scoring failed, ctx ended, pipeline closed): retry it.
func (p *Pipeline) Rerank(ctx context.Context, modelName string, job *schemas.Job, enqueued time.Time) (*schemas.Result, error) {
	start := time.Now()
	res := &schemas.Result{V: schemas.Version, ID: job.ID, Model: modelName, Meta: job.Meta, Results: []schemas.Ranked{}}
	if !enqueued.IsZero() {
		res.Timing.QueuedMS = ms(start.Sub(enqueued))
	}
	fail := func(err error) (*schemas.Result, error) {
		ce := schemas.AsError(err)
		if ce == nil {
			ce = schemas.Errorf(schemas.CodeInternal, "%v", err)
		}
		res.Error = ce
		res.Timing.TotalMS = ms(time.Since(start))
		return res, nil
	}
	if err := schemas.Validate(job, modelName, p.cfg.Limits); err != nil {
		return fail(err)
	}
	if modelName == "" {
		modelName = job.Model
		res.Model = modelName
	}
	b, ok := p.models[modelName]
	if !ok {
		return fail(schemas.Errorf(schemas.CodeUnknownModel, "no model %q here (serving: %v)", modelName, p.names))
	}
	pairs, err := b.m.Inject.Render(job)
	if err != nil {
		return fail(err)
	}
	t0 := time.Now()
	encs, err := b.m.Scorer.Tokenize(pairs)
	if err != nil {
		return fail(tokenizeError(job, err))
	}
	res.Timing.TokenizeMS = ms(time.Since(t0))

	res.ModelDigest = b.digest
	t1 := time.Now()
	scores, reused, err := b.scoreCached(ctx, job.Tenant, job.Lane, encs)
	if err != nil {
		return nil, fmt.Errorf("scoring job %s: %w", job.ID, err)
	}
	res.Cached = reused
	res.Timing.InferenceMS = ms(time.Since(t1))
	res.Results = rank(job, scores)
	res.Timing.TotalMS = ms(time.Since(start))
	return res, nil
}

// tokenizeError codes a tokenizer failure. One caused by the job's input
// (a query that leaves no room for the passage under only_second
// truncation) is the job's fault: input_too_long, naming the candidate.
// Anything else is the worker's.
func tokenizeError(job *schemas.Job, err error) error {
	var pe *model.PairError
	if errors.As(err, &pe) && errors.Is(err, wordpiece.ErrSequenceTooShort) && pe.Index >= 0 && pe.Index < len(job.Candidates) {
		return schemas.CandidateErrorf(schemas.CodeInputTooLong, pe.Index, job.Candidates[pe.Index].ID,
			"the query leaves no room for the passage within the model's max_length: %v", pe.Err)
	}
	return fmt.Errorf("tokenizing: %w", err)
}

// rank sorts candidates best first (ties keep job order, NaN last) and
// applies top_n and return_documents.
func rank(job *schemas.Job, scores []float32) []schemas.Ranked {
	order := make([]int, len(scores))
	for i := range order {
		order[i] = i
	}
	key := func(i int) float64 {
		if s := float64(scores[i]); !math.IsNaN(s) {
			return s
		}
		return math.Inf(-1)
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ka, kb := key(a), key(b)
		switch {
		case ka > kb:
			return -1
		case ka < kb:
			return 1
		}
		return 0
	})
	if job.TopN > 0 && job.TopN < len(order) {
		order = order[:job.TopN]
	}
	out := make([]schemas.Ranked, len(order))
	for k, i := range order {
		c := &job.Candidates[i]
		out[k] = schemas.Ranked{Index: i, ID: c.ID, RelevanceScore: float64(scores[i])}
		if job.ReturnDocuments {
			text := c.Text
			out[k].Document = &text
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
