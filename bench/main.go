// Command bench measures the re-ranking pipeline on the MiniLM-L12-shape
// generated model and prints one line per figure, `name: value unit`, with
// medians of several runs and ratios measured in the same run. `make bench`
// runs it; BENCHMARKS.md records the figures.
package main

import (
	"context"
	"flag"
	"fmt"

	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

type config struct {
	modelDir, tinyDir, ortLib, rerankBin, jsDir, device string
	int8Dir                                             string
	coldRuns, gatewayRuns                               int
	runs, intraOp, interOp, concurrentRuns              int
	maxBatchSize, maxBatchTokens, natsRuns, smallRuns   int
	fairnessRuns, idleRuns, backfillRuns                int
	only                                                string
	sweep, sweepBatch, compareCPU                       bool
}

func main() {
	var c config
	flag.StringVar(&c.modelDir, "model", ".cache/models/demo", "MiniLM-L12-shape model directory")
	flag.StringVar(&c.int8Dir, "int8-model", ".cache/models/demo-int8", "the model's int8 copy (rerank quantize), for the int8 and cold-start figures")
	flag.IntVar(&c.gatewayRuns, "gateway-runs", 3, "interleaved runs of gateway_vs_nats (200 jobs of 10 candidates each way)")
	flag.IntVar(&c.coldRuns, "cold-runs", 3, "worker starts per model for cold_start_s (the median is printed)")
	flag.StringVar(&c.ortLib, "ort-lib", "", "libonnxruntime path (default: model.DefaultLibraryPath)")
	flag.StringVar(&c.rerankBin, "rerank", "bin/rerank", "rerank binary, for the NATS worker figures")
	flag.StringVar(&c.jsDir, "js", ".cache/bench-js", "where bench/transformersjs is installed (empty: skip the peer)")
	flag.StringVar(&c.device, "device", "cpu", "cpu, cuda or cuda:N")
	flag.IntVar(&c.runs, "runs", 3, "runs per figure (the median is printed)")
	flag.IntVar(&c.intraOp, "intra-op-threads", 0, "ORT intra-op threads (0 = CPUs)")
	flag.IntVar(&c.interOp, "inter-op-threads", 1, "ORT inter-op threads")
	flag.IntVar(&c.concurrentRuns, "concurrent-runs", 1, "ORT runs in flight")
	flag.IntVar(&c.maxBatchSize, "max-batch-size", 0, "pairs per ORT run (0 = the model package's default)")
	flag.IntVar(&c.maxBatchTokens, "max-batch-tokens", 0, "padded tokens per ORT run (0 = the model package's default)")
	flag.IntVar(&c.natsRuns, "nats-runs", 1, "interleaved runs of nats_vs_pipeline (2 × 1,000 candidates each)")
	flag.IntVar(&c.smallRuns, "small-runs", 2, "interleaved runs of small_jobs_batching_gain (200 jobs of 10 each)")
	flag.IntVar(&c.fairnessRuns, "fairness-runs", 2, "runs of the latency-under-bulk figures (a 4,000-candidate bulk job each; odd runs in reverse order)")
	flag.IntVar(&c.idleRuns, "idle-runs", 3, "interleaved runs of idle_models_throughput_ratio")
	flag.IntVar(&c.backfillRuns, "backfill-runs", 2, "interleaved runs of interactive_under_bulk_backfill_ratio (12 bulk jobs of 150 candidates each)")
	flag.StringVar(&c.only, "only", "", "comma-separated figure names to run (default all)")
	flag.BoolVar(&c.sweep, "sweep-threads", false, "measure thread settings instead of the figures")
	flag.BoolVar(&c.sweepBatch, "sweep-batch", false, "measure batch sizes × token budgets on --device instead of the figures")
	flag.BoolVar(&c.compareCPU, "compare-cpu", false, "also score one job on the CPU and print <device>_vs_cpu_max_abs_diff")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (c config) want(name string) bool {
	return c.only == "" || slices.Contains(strings.Split(c.only, ","), name)
}

func (c config) options() (model.Options, error) {
	dev, err := model.ParseDevice(c.device)
	return model.Options{Device: dev, IntraOpThreads: c.intraOp, InterOpThreads: c.interOp, ConcurrentRuns: c.concurrentRuns,
		MaxBatchSize: c.maxBatchSize, MaxBatchTokens: c.maxBatchTokens}, err
}

// line prints one figure.
func line(name string, value float64, unit string) {
	fmt.Printf("%s: %.3f %s\n", name, value, unit)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// measure runs f runs times and returns the median pairs/s.
func measure(runs, pairs int, f func() error) (float64, error) {
	var rates []float64
	for range runs {
		start := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		rates = append(rates, float64(pairs)/time.Since(start).Seconds())
	}
	return median(rates), nil
}

func run(c config) error {
	fmt.Printf("# machine: %s/%s, %d CPUs, %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuName())
	rt, err := model.OpenRuntime(c.ortLib)
	if err != nil {
		return err
	}
	defer rt.Close()
	opts, err := c.options()
	if err != nil {
		return err
	}
	fmt.Printf("# model: %s, onnxruntime %s, device %s, runs per figure %d\n", c.modelDir, rt.Version(), c.device, c.runs)
	if c.sweep {
		return sweepThreads(c, rt)
	}
	if c.sweepBatch {
		return sweepBatch(c, rt)
	}
	m, err := rt.Load(c.modelDir, opts)
	if err != nil {
		return err
	}
	defer m.Close()
	r := rand.New(rand.NewPCG(42, 1))
	ctx := context.Background()
	if c.compareCPU {
		if err := compareCPU(ctx, c, rt, m); err != nil {
			return err
		}
	}

	if c.want("tokenize") {
		if err := benchTokenizer(m); err != nil {
			return err
		}
	}
	if c.want("pipeline_vs_raw_ort") {
		job := makeJob(r, "raw", 128, 75)
		if err := benchPipelineVsRaw(ctx, c, rt, m, job); err != nil {
			return err
		}
	}
	if c.want("bucketing_gain") {
		if err := benchBucketing(ctx, c, rt, makeJob(r, "bucket", 1000, 75)); err != nil {
			return err
		}
	}
	if c.want("small_jobs_batching_gain") {
		if err := benchSmallJobs(ctx, c, m, r); err != nil {
			return err
		}
	}
	if c.want("cache_speedup") {
		if err := benchCache(ctx, c, m, r); err != nil {
			return err
		}
	}
	if c.want("shared_cache_speedup_50") {
		if err := benchSharedCache(ctx, c, m, r); err != nil {
			return err
		}
	}
	if c.want("nats_vs_pipeline") {
		if err := benchNATS(ctx, c, m, r); err != nil {
			return err
		}
	}
	if c.want("idle_models_throughput_ratio") {
		if err := benchIdleModels(ctx, c, r); err != nil {
			return err
		}
	}
	if c.want("small_job_latency_under_bulk_ratio") {
		if err := benchLatencyUnderBulk(ctx, c, m, r); err != nil {
			return err
		}
	}
	if c.want("interactive_under_bulk_backfill_ratio") {
		if err := benchBackfill(ctx, c, r); err != nil {
			return err
		}
	}
	if c.want("gateway_vs_nats") {
		if err := benchGateway(ctx, c, r); err != nil {
			return err
		}
	}
	if c.want("int8_vs_fp32") {
		if err := benchInt8(ctx, c, rt, m, makeJob(r, "int8", 1000, 75)); err != nil {
			return err
		}
	}
	if c.want("cold_start_s") {
		if err := benchColdStart(ctx, c, r); err != nil {
			return err
		}
	}
	if c.want("vs_transformers_js") && c.jsDir != "" {
		if err := benchTransformersJS(ctx, c, m, makeJob(r, "peer", 1000, 75)); err != nil {
			return err
		}
	}
	return nil
}

func runtimeCPUs() int { return runtime.GOMAXPROCS(0) }

func cpuName() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			_, v, _ := strings.Cut(l, ":")
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// answered is a job's outcome as one error: the call's, else the job's own
// (a result that carries an error is a failed job to a benchmark).
func answered(res *schemas.Result, err error) (*schemas.Result, error) {
	if err == nil && res.Error != nil {
		err = res.Error
	}
	return res, err
}

// firstErr is the first non-nil error sent on errs, which is closed.
func firstErr(errs <-chan error) error {
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// newPipeline serves m under the name "bench" with a plain preset.
func newPipeline(m *model.Model, cfg pipeline.Config) (*pipeline.Pipeline, error) {
	ic, err := inject.Preset("ms-marco-MiniLM")
	if err != nil {
		return nil, err
	}
	return pipeline.New(cfg, pipeline.Model{Name: "bench", Scorer: m, Inject: ic, BatchPairs: m.Options().MaxBatchSize})
}

func pairsOf(job *schemas.Job) []wordpiece.Pair {
	out := make([]wordpiece.Pair, len(job.Candidates))
	for i, c := range job.Candidates {
		out[i] = wordpiece.Pair{A: job.Query, B: c.Text}
	}
	return out
}

func benchTokenizer(m *model.Model) error {
	r := rand.New(rand.NewPCG(7, 7))
	job := makeJob(r, "tok", 2000, 75)
	tok := m.Tokenizer()
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	var enc wordpiece.Encoding
	rate, err := measure(5, len(job.Candidates), func() error {
		for _, c := range job.Candidates {
			if err := tok.AppendPair(&enc, job.Query, c.Text, 512, wordpiece.LongestFirst); err != nil {
				return err
			}
		}
		return nil
	})
	line("tokenize_pairs_per_s_per_core", rate, "pairs/s")
	return err
}

func benchPipelineVsRaw(ctx context.Context, c config, rt *model.Runtime, m *model.Model, job *schemas.Job) error {
	p, err := newPipeline(m, pipeline.Config{MaxBatchDelay: -1})
	if err != nil {
		return err
	}
	defer p.Close()
	n := len(job.Candidates)
	encs, err := m.Tokenize(pairsOf(job))
	if err != nil {
		return err
	}
	raw, err := newRawSession(c, m)
	if err != nil {
		return err
	}
	defer raw.close()
	batches, err := raw.prepare(encs, m.Plan(encs), m.Tokenizer().PadID())
	if err != nil {
		return err
	}
	defer batches.destroy()
	// Interleaved runs, so that both sides see the same machine; the ratio
	// is of the medians.
	var pipeRates, rawRates []float64
	for range c.runs {
		pr, err := measure(1, n, func() error {
			res, err := p.Rerank(ctx, "bench", job, time.Time{})
			if err == nil && res.Error != nil {
				err = res.Error
			}
			return err
		})
		if err != nil {
			return err
		}
		rr, err := measure(1, n, func() error { return raw.run(batches) })
		if err != nil {
			return err
		}
		pipeRates, rawRates = append(pipeRates, pr), append(rawRates, rr)
	}
	line("pipeline_pairs_per_s", median(pipeRates), "pairs/s")
	line("raw_ort_pairs_per_s", median(rawRates), "pairs/s")
	line("pipeline_vs_raw_ort", median(pipeRates)/median(rawRates), "ratio")
	return nil
}

func benchBucketing(ctx context.Context, c config, rt *model.Runtime, job *schemas.Job) error {
	opts, _ := c.options()
	sorted, err := rt.Load(c.modelDir, opts)
	if err != nil {
		return err
	}
	defer sorted.Close()
	opts.NoLengthSort = true
	arrival, err := rt.Load(c.modelDir, opts)
	if err != nil {
		return err
	}
	defer arrival.Close()
	encs, err := sorted.Tokenize(pairsOf(job))
	if err != nil {
		return err
	}
	// Padding over the whole 1,000-candidate list; throughput on a
	// random quarter of it per run, to fit the time budget.
	_, stSorted := planStats(sorted, encs)
	_, stArrival := planStats(arrival, encs)
	r := rand.New(rand.NewPCG(5, 5))
	sample := func() []wordpiece.Encoding {
		idx := r.Perm(len(encs))[:len(encs)/4]
		out := make([]wordpiece.Encoding, len(idx))
		for i, k := range idx {
			out[i] = encs[k]
		}
		return out
	}
	var rs, ra []float64
	for range c.runs {
		s := sample()
		for _, x := range []struct {
			m   *model.Model
			out *[]float64
		}{{sorted, &rs}, {arrival, &ra}} {
			start := time.Now()
			if _, _, err := x.m.ScoreEncoded(ctx, s); err != nil {
				return err
			}
			*x.out = append(*x.out, float64(len(s))/time.Since(start).Seconds())
		}
	}
	line("padded_per_real_tokens_sorted", stSorted, "ratio")
	line("padded_per_real_tokens_arrival", stArrival, "ratio")
	line("sorted_pairs_per_s", median(rs), "pairs/s")
	line("arrival_pairs_per_s", median(ra), "pairs/s")
	line("bucketing_gain", median(rs)/median(ra), "ratio")
	return nil
}

// planStats computes padded/real tokens of m's batch plan without running it.
func planStats(m *model.Model, encs []wordpiece.Encoding) (int, float64) {
	real, padded := 0, 0
	plan := m.Plan(encs)
	for _, b := range plan {
		longest := 0
		for _, i := range b {
			real += len(encs[i].IDs)
			longest = max(longest, len(encs[i].IDs))
		}
		padded += longest * len(b)
	}
	return len(plan), float64(padded) / float64(real)
}

// statsScorer is a model whose every call's stats are handed to add.
type statsScorer struct {
	*model.Model
	add func(model.Stats)
}

func (s statsScorer) ScoreEncoded(ctx context.Context, encs []wordpiece.Encoding) ([]float32, model.Stats, error) {
	scores, st, err := s.Model.ScoreEncoded(ctx, encs)
	s.add(st)
	return scores, st, err
}

func benchSmallJobs(ctx context.Context, c config, m *model.Model, r *rand.Rand) error {
	jobs := make([]*schemas.Job, 200)
	pairs := 0
	for i := range jobs {
		jobs[i] = makeJob(r, fmt.Sprintf("small-%d", i), 10, 40)
		pairs += len(jobs[i].Candidates)
	}
	type mode struct {
		name                  string
		cfg                   pipeline.Config
		p                     *pipeline.Pipeline
		rates                 []float64
		real, padded, batches atomic.Int64
	}
	with := &mode{name: "batched", cfg: pipeline.Config{}}
	without := &mode{name: "unbatched", cfg: pipeline.Config{MaxBatchDelay: -1}}
	for _, x := range []*mode{with, without} {
		ic, err := inject.Preset("ms-marco-MiniLM")
		if err != nil {
			return err
		}
		sc := statsScorer{Model: m, add: func(st model.Stats) {
			x.real.Add(int64(st.RealTokens))
			x.padded.Add(int64(st.PaddedTokens))
			x.batches.Add(int64(st.Batches))
		}}
		p, err := pipeline.New(x.cfg, pipeline.Model{Name: "bench", Scorer: sc, Inject: ic, BatchPairs: m.Options().MaxBatchSize})
		if err != nil {
			return err
		}
		defer p.Close()
		x.p = p
	}
	// Interleaved runs, so that both modes see the same machine.
	for range c.smallRuns {
		for _, x := range []*mode{with, without} {
			rate, err := measure(1, pairs, func() error {
				for _, o := range x.p.RerankBatch(ctx, "bench", jobs) {
					if o.Err != nil {
						return o.Err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			x.rates = append(x.rates, rate)
		}
	}
	for _, x := range []*mode{with, without} {
		line("small_jobs_pairs_per_s_"+x.name, median(x.rates), "pairs/s")
		line("small_jobs_pairs_per_batch_"+x.name, float64(pairs*c.smallRuns)/float64(x.batches.Load()), "pairs")
		line("small_jobs_padded_per_real_tokens_"+x.name, float64(x.padded.Load())/float64(x.real.Load()), "ratio")
	}
	line("small_jobs_batching_gain", median(with.rates)/median(without.rates), "ratio")
	return nil
}

func benchTransformersJS(ctx context.Context, c config, m *model.Model, job *schemas.Job) error {
	script := filepath.Join(c.jsDir, "bench.mjs")
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("transformers.js peer not installed at %s (make bench installs it): %w", c.jsDir, err)
	}
	in, err := os.CreateTemp("", "rerank-peer-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(in.Name())
	b, _ := schemas.EncodeJob(job, schemas.JSON)
	in.Write(b)
	in.Close()
	p, err := newPipeline(m, pipeline.Config{MaxBatchDelay: -1})
	if err != nil {
		return err
	}
	defer p.Close()
	ours, err := measure(1, len(job.Candidates), func() error {
		_, err := p.Rerank(ctx, "bench", job, time.Time{})
		return err
	})
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(c.modelDir)
	cmd := exec.CommandContext(ctx, "node", script, abs, in.Name(), "32")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("running the transformers.js peer: %w", err)
	}
	var peer float64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "pairs_per_s: %g", &peer); err != nil {
		return fmt.Errorf("reading the peer's output %q: %w", out, err)
	}
	line("ours_1000_pairs_per_s", ours, "pairs/s")
	line("transformers_js_pairs_per_s", peer, "pairs/s")
	line("vs_transformers_js", ours/peer, "ratio")
	return nil
}
