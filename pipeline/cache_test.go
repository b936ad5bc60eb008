package pipeline_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/testmodel"
	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/pipeline/paircache"
	"github.com/rerank/rerank/schemas"
)

// digestScorer is fakeScorer with a provenance, so its pairs are cached.
type digestScorer struct {
	*fakeScorer
	digest string
}

func (d digestScorer) Digest() string { return d.digest }

func cachedPipeline(t *testing.T, sc pipeline.Scorer, cache *paircache.Cache) *pipeline.Pipeline {
	t.Helper()
	ic, _ := inject.Preset("ms-marco-MiniLM")
	p, err := pipeline.New(pipeline.Config{Cache: cache}, pipeline.Model{Name: "m", Scorer: sc, Inject: ic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// sharedJob is a job of n pairs that every sharedJob of the same query
// shares: passages "passage 0" … "passage n-1".
func sharedJob(id, query string, lane schemas.Lane, n int) *schemas.Job {
	j := makeJob(id, n)
	j.Query, j.Lane = query, lane
	for c := range j.Candidates {
		j.Candidates[c].Text = fmt.Sprint("passage ", c)
	}
	return j
}

// repeatingJobs is a stream of jobs in which about half the pairs repeat
// earlier ones (and a few repeat within their job).
func repeatingJobs(n int) []*schemas.Job {
	var jobs []*schemas.Job
	for j := range n {
		job := &schemas.Job{ID: fmt.Sprint("j", j), Query: fmt.Sprint("query ", j%3), TopN: 5}
		for c := range 8 {
			text := fmt.Sprintf("passage %d", (j*5+c)%40)
			job.Candidates = append(job.Candidates, schemas.Candidate{ID: fmt.Sprint(c), Text: text})
		}
		job.Candidates = append(job.Candidates, schemas.Candidate{ID: "dup", Text: job.Candidates[0].Text})
		jobs = append(jobs, job)
	}
	return jobs
}

// With the cache, every job's result is the one it gets without (the
// fake scorer is exact, so identical), while repeated pairs are scored
// once: the scorer sees each distinct pair one time.
func TestCacheChangesNoResult(t *testing.T) {
	jobs := repeatingJobs(30)
	off := &fakeScorer{}
	on := &fakeScorer{}
	pOff := cachedPipeline(t, digestScorer{off, "d"}, nil)
	pOn := cachedPipeline(t, digestScorer{on, "d"}, paircache.New(1<<20))
	distinct := map[string]bool{}
	cached := 0
	for _, j := range jobs {
		for _, c := range j.Candidates {
			distinct[j.Query+"\x00"+c.Text] = true
		}
		want, err := pOff.Rerank(context.Background(), "m", j, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := pOn.Rerank(context.Background(), "m", j, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		cached += got.Cached
		if !reflect.DeepEqual(got.Results, want.Results) || got.ModelDigest != want.ModelDigest || got.ModelDigest == "" {
			t.Fatalf("job %s: cached %+v (%s), uncached %+v (%s)", j.ID, got.Results, got.ModelDigest, want.Results, want.ModelDigest)
		}
	}
	total := len(jobs) * len(jobs[0].Candidates)
	if got := on.PairsScored(); got != len(distinct) || cached != total-len(distinct) {
		t.Fatalf("with the cache %d pairs scored and %d reused, want %d distinct scored and %d reused (of %d)", got, cached, len(distinct), total-len(distinct), total)
	}
	if got := off.PairsScored(); got != total {
		t.Fatalf("without the cache %d pairs scored, want %d", got, total)
	}
}

// Jobs needing the same pairs at once score them once: the others wait for
// the one scoring call (single flight).
func TestCacheScoresConcurrentRepeatsOnce(t *testing.T) {
	sc := &fakeScorer{Delay: 50 * time.Millisecond}
	p := cachedPipeline(t, digestScorer{sc, "d"}, paircache.New(1<<20))
	const n = 6
	var wg sync.WaitGroup
	res := make([]*schemas.Result, n)
	for i := range n {
		wg.Go(func() {
			j := sharedJob(fmt.Sprint("same-", i), "one query", schemas.Interactive, 10)
			var err error
			if res[i], err = p.Rerank(context.Background(), "m", j, time.Time{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := sc.PairsScored(); got != 10 {
		t.Fatalf("%d jobs of the same 10 pairs at once: %d pairs scored, want 10", n, got)
	}
	shared := 0
	for _, r := range res {
		shared += r.Cached
		if !reflect.DeepEqual(r.Results, res[0].Results) {
			t.Fatalf("results differ: %+v vs %+v", r.Results, res[0].Results)
		}
	}
	if shared != (n-1)*10 {
		t.Fatalf("%d pairs reused, want %d", shared, (n-1)*10)
	}
}

// When the job scoring a pair fails, the jobs waiting for it score it
// themselves: one job's failure is not another's.
func TestCacheAbandonedFlightIsScoredAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := &fakeScorer{}
		cache := paircache.New(1 << 20)
		p := cachedPipeline(t, blockFirst{digestScorer{sc, "d"}}, cache)
		job := func(id string) *schemas.Job { return sharedJob(id, "common query", schemas.Interactive, 4) }
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		first := make(chan error, 1)
		go func() {
			_, err := p.Rerank(ctx, "m", job("first"), time.Time{})
			first <- err
		}()
		time.Sleep(pipeline.DefaultMaxBatchDelay) // the batcher's wait for batch-mates
		synctest.Wait()
		if n := sc.Calls.Load(); n != 1 {
			t.Fatalf("%d calls once the first job is scoring, want 1", n)
		}
		second := make(chan *schemas.Result, 1)
		go func() {
			r, err := p.Rerank(context.Background(), "m", job("second"), time.Time{})
			if err != nil {
				t.Error(err)
			}
			second <- r
		}()
		synctest.Wait() // the second job waits for the first's flights
		if st := cache.Stats(); st.Misses != 8 || sc.Calls.Load() != 1 {
			t.Fatalf("the second job looked its pairs up: %+v, %d calls; want 8 misses, 1 call", st, sc.Calls.Load())
		}
		cancel()
		if err := <-first; err == nil {
			t.Fatal("the cancelled job succeeded")
		}
		r := <-second
		if r == nil || len(r.Results) != 4 || r.Cached != 0 {
			t.Fatalf("the waiting job: %+v", r)
		}
	})
}

// blockFirst's first scoring call lasts until its context ends.
type blockFirst struct{ digestScorer }

func (b blockFirst) ScoreEncoded(ctx context.Context, encs []wordpiece.Encoding) ([]float32, model.Stats, error) {
	if b.Calls.CompareAndSwap(0, 1) {
		<-ctx.Done()
		return nil, model.Stats{}, ctx.Err()
	}
	return b.fakeScorer.ScoreEncoded(ctx, encs)
}

// A model whose files change under the same name and directory is another
// model: after a restart (a new load, the same cache), its scores are its
// own, never the old files' stored ones. The same holds for a changed
// setting (max_length) with the same files.
func TestCacheServesNoStaleScoreAfterSwap(t *testing.T) {
	rt, err := model.OpenRuntime(testenv.ORTLib(t))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	dir := filepath.Join(t.TempDir(), "m")
	tiny := testfixture.TinyModel(t)
	if err := os.CopyFS(dir, os.DirFS(tiny)); err != nil {
		t.Fatal(err)
	}
	cache := paircache.New(1 << 20)
	job := &schemas.Job{ID: "j", Query: "what is the capital of france",
		Candidates: []schemas.Candidate{{ID: "a", Text: "paris is the capital"}, {ID: "b", Text: "lyon is a city"}}}
	score := func(withCache bool) *schemas.Result {
		t.Helper()
		m, err := rt.Load(dir, model.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		c := cache
		if !withCache {
			c = nil
		}
		ic, _ := inject.Resolve("", m.Config().Raw)
		p, err := pipeline.New(pipeline.Config{Cache: c}, pipeline.Model{Name: "m", Scorer: m, Inject: ic})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		r, err := p.Rerank(context.Background(), "m", job, time.Time{})
		if err != nil || r.Error != nil {
			t.Fatal(err, r.Error)
		}
		return r
	}
	same := func(a, b *schemas.Result) bool {
		for i := range a.Results {
			if a.Results[i].Index != b.Results[i].Index || math.Abs(a.Results[i].RelevanceScore-b.Results[i].RelevanceScore) > 1e-6 {
				return false
			}
		}
		return true
	}
	before := score(true)
	if again := score(true); again.Cached != 2 || again.ModelDigest != before.ModelDigest {
		t.Fatalf("the same files again: %d pairs from the cache (digest %s, was %s), want 2", again.Cached, again.ModelDigest, before.ModelDigest)
	}

	// New weights under the same name.
	spec := testmodel.Tiny
	spec.Seed += 7
	if err := testmodel.WriteONNXFile(filepath.Join(dir, model.ModelFile), spec); err != nil {
		t.Fatal(err)
	}
	swapped, fresh := score(true), score(false)
	if swapped.Cached != 0 || swapped.ModelDigest == before.ModelDigest || !same(swapped, fresh) || same(swapped, before) {
		t.Fatalf("after swapping the weights: %d cached, digest %s (was %s), %+v; fresh %+v; before %+v",
			swapped.Cached, swapped.ModelDigest, before.ModelDigest, swapped.Results, fresh.Results, before.Results)
	}

	// Another max_length, the same files.
	if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), []byte(`{"max_length": 64}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := score(true); r.Cached != 0 || r.ModelDigest == swapped.ModelDigest {
		t.Fatalf("after changing max_length: %d cached, digest %s (was %s)", r.Cached, r.ModelDigest, swapped.ModelDigest)
	}
}

// A job never waits for a pair it needs on a job served after it (an
// interactive job on a bulk one: the bulk lane may be served long after)
// or on a much larger job (which could hold it for the larger job's whole
// scoring): it scores the pair itself.
func TestCacheNeverWaitsOnLaterOrLargerJobs(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ownerLane   schemas.Lane
		ownerPairs  int
		waiterPairs int
		ownerCalls  int64 // its first blocks; the others run beside it
	}{
		{"interactive behind bulk", schemas.Bulk, 3, 3, 1},
		{"small behind large", schemas.Interactive, 60, 2, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sc := &fakeScorer{}
				ic, _ := inject.Preset("ms-marco-MiniLM")
				// Two calls at once: the owner's blocked call does not hold
				// the only call slot.
				p, err := pipeline.New(pipeline.Config{Cache: paircache.New(1 << 20), ConcurrentCalls: 2},
					pipeline.Model{Name: "m", Scorer: blockFirst{digestScorer{sc, "d"}}, Inject: ic})
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				job := func(id string, lane schemas.Lane, n int) *schemas.Job { return sharedJob(id, "common query", lane, n) }
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				owner := make(chan error, 1)
				go func() {
					_, err := p.Rerank(ctx, "m", job("owner", tc.ownerLane, tc.ownerPairs), time.Time{})
					owner <- err
				}()
				time.Sleep(pipeline.DefaultMaxBatchDelay) // the batcher's wait for batch-mates
				synctest.Wait()
				if n := sc.Calls.Load(); n != tc.ownerCalls {
					t.Fatalf("%d calls once the owner is scoring, want %d", n, tc.ownerCalls)
				}
				r, err := p.Rerank(context.Background(), "m", job("waiter", schemas.Interactive, tc.waiterPairs), time.Time{})
				if err != nil || len(r.Results) != tc.waiterPairs || r.Cached != 0 {
					t.Fatalf("the waiter: %v %+v", err, r)
				}
				select {
				case err := <-owner:
					t.Fatalf("the owner ended first: %v", err)
				default:
				}
				cancel()
				<-owner
			})
		})
	}
}

// Entries are a tenant's own: a pair another tenant scored is scored
// again (no tenant learns from cached counts or latency what another
// scored); within a tenant it is reused.
func TestCacheIsPerTenant(t *testing.T) {
	sc := &fakeScorer{}
	p := cachedPipeline(t, digestScorer{sc, "d"}, paircache.New(1<<20))
	for _, c := range []struct {
		tenant string
		cached int
	}{{"a", 0}, {"b", 0}, {"", 0}, {"a", 2}, {"", 2}} {
		j := sharedJob("j", "same query", schemas.Interactive, 2)
		j.Tenant = c.tenant
		r, err := p.Rerank(context.Background(), "m", j, time.Time{})
		if err != nil || r.Cached != c.cached {
			t.Fatalf("tenant %q: %v, %d cached, want %d", c.tenant, err, r.Cached, c.cached)
		}
	}
}

// mapTier is a shared tier in memory; broken, it finds and stores nothing.
type mapTier struct {
	mu     sync.Mutex
	m      map[paircache.Key]float32
	broken bool
	asked  int
}

func (m *mapTier) Get(_ context.Context, keys []paircache.Key) ([]float32, []bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked += len(keys)
	s, f := make([]float32, len(keys)), make([]bool, len(keys))
	for i, k := range keys {
		if !m.broken {
			s[i], f[i] = m.m[k]
		}
	}
	return s, f
}

func (m *mapTier) Put(keys []paircache.Key, scores []float32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range keys {
		if !m.broken {
			m.m[k] = scores[i]
		}
	}
}

// Two workers sharing a tier score each distinct pair once between them,
// whichever gets the job, and every result is the one without any cache;
// the tier is asked only for what a process cache missed. A tier that
// answers nothing (failing) changes no result either: each worker scores
// what its own cache does not hold.
func TestSharedTierChangesNoResult(t *testing.T) {
	jobs := repeatingJobs(30)
	off := cachedPipeline(t, digestScorer{&fakeScorer{}, "d"}, nil)
	for _, broken := range []bool{false, true} {
		tier := &mapTier{m: map[paircache.Key]float32{}, broken: broken}
		var scorers [2]*fakeScorer
		var workers [2]*pipeline.Pipeline
		for w := range workers {
			scorers[w] = &fakeScorer{}
			ic, _ := inject.Preset("ms-marco-MiniLM")
			p, err := pipeline.New(pipeline.Config{Cache: paircache.New(1 << 20), Shared: tier},
				pipeline.Model{Name: "m", Scorer: digestScorer{scorers[w], "d"}, Inject: ic})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			workers[w] = p
		}
		distinct := map[string]bool{}
		perWorker := [2]map[string]bool{{}, {}}
		for n, j := range jobs {
			for _, c := range j.Candidates {
				distinct[j.Query+"\x00"+c.Text] = true
				perWorker[n%2][j.Query+"\x00"+c.Text] = true
			}
			want, err := off.Rerank(context.Background(), "m", j, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := workers[n%2].Rerank(context.Background(), "m", j, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Results, want.Results) {
				t.Fatalf("broken %v, job %s: %+v, without a cache %+v", broken, j.ID, got.Results, want.Results)
			}
		}
		scored := scorers[0].PairsScored() + scorers[1].PairsScored()
		switch {
		case !broken && scored != len(distinct):
			t.Errorf("sharing a tier, the workers scored %d pairs, want the %d distinct", scored, len(distinct))
		case broken && scored != len(perWorker[0])+len(perWorker[1]):
			t.Errorf("with a failing tier, the workers scored %d pairs, want %d (each its own distinct pairs)", scored, len(perWorker[0])+len(perWorker[1]))
		}
		if total := len(jobs) * len(jobs[0].Candidates); tier.asked >= total {
			t.Errorf("the tier was asked for %d of %d pairs: the process caches answered none", tier.asked, total)
		}
	}
}

func TestSharedTierNeedsAProcessCache(t *testing.T) {
	ic, _ := inject.Preset("ms-marco-MiniLM")
	_, err := pipeline.New(pipeline.Config{Shared: &mapTier{}}, pipeline.Model{Name: "m", Scorer: digestScorer{&fakeScorer{}, "d"}, Inject: ic})
	if err == nil {
		t.Fatal("a shared tier without a process cache was accepted")
	}
}
