package scale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/eval"
	"github.com/rerank/rerank/internal/proc"
	"github.com/rerank/rerank/schemas"
)

// Config is one scale benchmark.
type Config struct {
	Rerank     string // the rerank binary the workers run
	NATSServer string // the nats-server binary of the cluster
	Dir        string // stores and logs (default: a temporary directory, removed)
	Sizes      []int  // fleet sizes, ascending (default 1, 2, 4, 8, 16, 32)
	// Model is the workers' simulated model, NAME:PER_PAIR:PER_CALL
	// (model/simulated); default sim:1ms:2ms, ~900 pairs/s a worker.
	Model       string
	Concurrency int      // worker --concurrency (default: the worker's, 8)
	Kinds       []string // "small" and/or "big" (default both)
	Small, Big  int      // candidates per job (default 10 and 1,000)
	// Depth is the producer's jobs outstanding per worker slot: the backlog
	// it keeps (default 2: a queue as deep as the fleet's slots).
	Depth          int
	Warmup, Window time.Duration // per phase (default 3 s and 8 s; big jobs twice the window)
	// Partitions spreads the jobs over that many streams (rerank serve
	// --partitions; the producer hashes job ids as client.Options does).
	Partitions int
	WorkerArgs []string  // more `rerank serve` flags
	Log        io.Writer // progress (default stderr)
}

func (c Config) withDefaults() Config {
	if len(c.Sizes) == 0 {
		c.Sizes = []int{1, 2, 4, 8, 16, 32}
	}
	if c.Model == "" {
		c.Model = "sim:1ms:2ms"
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if len(c.Kinds) == 0 {
		c.Kinds = []string{"small", "big"}
	}
	if c.Small <= 0 {
		c.Small = 10
	}
	if c.Big <= 0 {
		c.Big = 1000
	}
	if c.Depth <= 0 {
		c.Depth = 2
	}
	if c.Warmup <= 0 {
		c.Warmup = 3 * time.Second
	}
	if c.Window <= 0 {
		c.Window = 8 * time.Second
	}
	if c.Log == nil {
		c.Log = os.Stderr
	}
	return c
}

// Row is one fleet size and job kind.
type Row struct {
	Kind                string
	Workers             int
	Jobs                int64   // jobs answered in the window
	JobsPerSec          float64 // jobs answered per second
	ResultsPerSec       float64 // result messages per second (duplicates included)
	PairsPerSec         float64 // pairs the workers scored per second
	P50, P99            time.Duration
	BrokerCPUPer1000    float64 // CPU seconds of the three servers per 1,000 jobs
	WorkerCPUPer1000    float64 // CPU seconds of the workers per 1,000 jobs
	BrokerCores         float64 // the servers' CPU use, in cores
	BusiestNodeCores    float64 // the busiest server's
	WorkerCores         float64
	ProducerCores       float64
	MachineBusy         float64 // share of all the machine's CPUs in use
	MsgsPerJob          float64 // messages the servers counted (in + out, routes included)
	BytesPerJob         float64
	Efficiency          float64 // throughput ÷ (workers × throughput of one worker)
	Unanswered, PubErrs int64
	Unmatched           int64 // results for no job waiting (duplicates), in the phase
}

// Run measures every fleet size and writes the table to out.
func Run(ctx context.Context, cfg Config, out io.Writer) ([]Row, error) {
	cfg = cfg.withDefaults()
	model, _, ok := strings.Cut(cfg.Model, ":")
	if !ok {
		return nil, fmt.Errorf("--model %q: want NAME:PER_PAIR:PER_CALL", cfg.Model)
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "rerank-scale-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		cfg.Dir = d
	}
	fmt.Fprintf(cfg.Log, "scale: starting a 3-node cluster in %s\n", cfg.Dir)
	cl, err := startCluster(cfg.NATSServer, cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer cl.stop()
	nc, err := nats.Connect(cl.urls(), nats.Name("rerank-scale-producer"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, cl: cl, nc: nc, js: js, model: model}
	sub, err := nc.Subscribe(schemas.ResultsPrefix+">", b.onResult)
	if err != nil {
		return nil, err
	}
	sub.SetPendingLimits(-1, -1)
	defer sub.Unsubscribe()
	defer b.stopFleet()

	fmt.Fprintf(out, "# scale: 3-node cluster (R3), simulated model %s, worker concurrency %d, producer depth %d × slots, partitions %d\n",
		cfg.Model, cfg.Concurrency, cfg.Depth, cfg.Partitions)
	fmt.Fprintf(out, "# brokerCPU/k, workerCPU/k: CPU seconds per 1,000 jobs; broker, busiest, workers, producer: cores in use; busy: the machine's CPUs\n")
	fmt.Fprintf(out, "%-5s %7s %8s %9s %9s %8s %8s %6s %11s %11s %6s %7s %7s %8s %5s %8s %6s\n",
		"kind", "workers", "jobs/s", "results/s", "pairs/s", "p50_ms", "p99_ms", "eff", "brokerCPU/k", "workerCPU/k",
		"broker", "busiest", "workers", "producer", "busy", "msgs/job", "kB/job")
	var rows []Row
	base := map[string]float64{}
	for _, n := range cfg.Sizes {
		if err := b.grow(n); err != nil {
			return rows, err
		}
		if err := b.idle(ctx, out, n); err != nil {
			return rows, err
		}
		for _, kind := range cfg.Kinds {
			r, err := b.phase(ctx, kind, n)
			if err != nil {
				return rows, err
			}
			rate := r.JobsPerSec
			if kind == "big" { // few jobs end in a window, in bursts: pairs/s is the steady measure
				rate = r.PairsPerSec
			}
			if _, ok := base[kind]; !ok {
				base[kind] = rate / float64(n)
			}
			if base[kind] > 0 {
				r.Efficiency = rate / (float64(n) * base[kind])
			}
			rows = append(rows, r)
			fmt.Fprintf(out, "%-5s %7d %8.1f %9.1f %9.0f %8.1f %8.1f %6.3f %11.3f %11.3f %6.2f %7.2f %7.2f %8.2f %4.0f%% %8.1f %6.1f\n",
				r.Kind, r.Workers, r.JobsPerSec, r.ResultsPerSec, r.PairsPerSec, ms(r.P50), ms(r.P99), r.Efficiency,
				r.BrokerCPUPer1000, r.WorkerCPUPer1000, r.BrokerCores, r.BusiestNodeCores, r.WorkerCores, r.ProducerCores,
				100*r.MachineBusy, r.MsgsPerJob, r.BytesPerJob/1024)
			if r.Unanswered > 0 || r.PubErrs > 0 || r.Unmatched > 0 {
				fmt.Fprintf(out, "#   %s × %d: %d jobs unanswered after the drain, %d publish errors (retried), %d results of no job waiting (duplicates, or of a publish given up)\n",
					kind, n, r.Unanswered, r.PubErrs, r.Unmatched)
			}
		}
	}
	summarize(out, cfg, rows)
	return rows, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize prints the figures (`scale_efficiency_N`) and, for each kind,
// the first fleet size under 0.8 with what was saturated there.
func summarize(out io.Writer, cfg Config, rows []Row) {
	for _, kind := range cfg.Kinds {
		suffix := ""
		if kind == "big" {
			suffix = "_big"
		}
		var first *Row
		for i, r := range rows {
			if r.Kind != kind {
				continue
			}
			fmt.Fprintf(out, "scale_efficiency%s_%d: %.3f\n", suffix, r.Workers, r.Efficiency)
			if first == nil && r.Efficiency < 0.8 {
				first = &rows[i]
			}
		}
		if first == nil {
			fmt.Fprintf(out, "# %s jobs: efficiency stayed at or above 0.8 up to %d workers\n", kind, cfg.Sizes[len(cfg.Sizes)-1])
			continue
		}
		fmt.Fprintf(out, "# %s jobs: efficiency under 0.8 from %d workers: %s\n", kind, first.Workers, saturation(*first))
	}
}

// saturation names what ran out, from the row's CPU figures.
func saturation(r Row) string {
	switch {
	case r.MachineBusy > 0.9:
		return fmt.Sprintf("this machine's CPUs (%.0f%% busy: servers %.2f cores, workers %.2f, producer %.2f), not the design",
			100*r.MachineBusy, r.BrokerCores, r.WorkerCores, r.ProducerCores)
	case r.BusiestNodeCores > 0.85:
		return fmt.Sprintf("the busiest server's CPU (%.2f cores: one stream or consumer leader)", r.BusiestNodeCores)
	default:
		return fmt.Sprintf("no CPU (machine %.0f%% busy, busiest server %.2f cores): waiting on round trips", 100*r.MachineBusy, r.BusiestNodeCores)
	}
}

// bench is one run's shared state.
type bench struct {
	cfg   Config
	cl    *cluster
	nc    *nats.Conn
	js    jetstream.JetStream
	model string
	fleet []*worker

	waiting   sync.Map // job id → chan struct{}
	done      atomic.Int64
	results   atomic.Int64
	unmatched atomic.Int64 // results of no job waiting: duplicates, or a job whose publish timed out
	recording atomic.Bool
	mu        sync.Mutex
	lat       []time.Duration
}

type worker struct {
	*proc.Proc
	metrics string
}

func (b *bench) onResult(m *nats.Msg) {
	b.results.Add(1)
	id := strings.TrimPrefix(m.Subject, schemas.ResultsPrefix)
	if ch, ok := b.waiting.LoadAndDelete(id); ok {
		ch.(chan struct{}) <- struct{}{}
	} else {
		b.unmatched.Add(1)
	}
}

// idle prints what the cluster and an idle fleet of n cost: the traffic
// and CPU of pull requests waiting, heartbeats and Raft, with no job.
func (b *bench) idle(ctx context.Context, out io.Writer, n int) error {
	if !sleep(ctx, time.Second) {
		return ctx.Err()
	}
	a, err := b.snapshot()
	if err != nil {
		return err
	}
	if !sleep(ctx, 3*time.Second) {
		return ctx.Err()
	}
	z, err := b.snapshot()
	if err != nil {
		return err
	}
	r := row("idle", n, a, z, nil, 0, 0)
	fmt.Fprintf(out, "#   idle, %d workers: %.0f msgs/s, servers %.2f cores, workers %.2f cores\n",
		n, (z.tr.msgs-a.tr.msgs)/z.at.Sub(a.at).Seconds(), r.BrokerCores, r.WorkerCores)
	return nil
}

// grow starts workers until the fleet has n.
func (b *bench) grow(n int) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	have := len(b.fleet)
	started := make([]*worker, n)
	for i := have; i < n; i++ {
		wg.Go(func() {
			// Port 0: a port picked ahead could be taken by another process
			// meanwhile; the worker logs the one it bound.
			args := append([]string{"serve", "--nats-url", b.cl.urls(), "--test-simulated-model", b.cfg.Model,
				"--replicas", "3", "--http", "", "--metrics-addr", "127.0.0.1:0",
				"--log-format", "text", "--worker-id", fmt.Sprintf("w%02d", i+1), "--concurrency", strconv.Itoa(b.cfg.Concurrency),
				"--memory-limit", "off", "--shutdown-grace", "5s", "--partitions", strconv.Itoa(b.cfg.Partitions)}, b.cfg.WorkerArgs...)
			p, err := proc.Start(proc.Spec{Name: fmt.Sprintf("worker %d", i+1), Path: b.cfg.Rerank, Args: args,
				Log: filepath.Join(b.cfg.Dir, "logs", fmt.Sprintf("w%02d.log", i+1)), Ready: "worker started", ReadyTimeout: 2 * time.Minute})
			if err != nil {
				errs[i] = err
				return
			}
			m := metricsAddr.FindStringSubmatch(p.Log())
			if m == nil {
				p.Stop(10 * time.Second)
				errs[i] = fmt.Errorf("worker %d logged no metrics address:\n%s", i+1, p.Tail(10))
				return
			}
			started[i] = &worker{Proc: p, metrics: "http://" + m[1] + "/metrics"}
		})
	}
	wg.Wait()
	for _, w := range started[have:] {
		if w != nil {
			b.fleet = append(b.fleet, w)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("starting workers: %w", err)
	}
	fmt.Fprintf(b.cfg.Log, "scale: %d workers running\n", len(b.fleet))
	return nil
}

func (b *bench) stopFleet() {
	var wg sync.WaitGroup
	for _, w := range b.fleet {
		wg.Go(func() {
			if err := w.Stop(30 * time.Second); err != nil {
				fmt.Fprintf(b.cfg.Log, "scale: %v\n%s\n", err, w.Tail(10))
			}
		})
	}
	wg.Wait()
	b.fleet = nil
}

// snap is the counters at one instant.
type snap struct {
	at                time.Time
	tr                traffic
	workers, producer float64 // CPU seconds
	busy, total       float64 // machine CPU seconds
	done, results     int64
	pairs             float64
}

// metricsAddr finds the address in the worker's `serving metrics` log line.
var metricsAddr = regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)

var pairsScored = regexp.MustCompile(`(?m)^rerank_pairs_scored_total(?:\{[^}]*\})? ([0-9.e+-]+)$`)

func (b *bench) snapshot() (snap, error) {
	s := snap{at: time.Now(), done: b.done.Load(), results: b.results.Load()}
	var err error
	if s.tr, err = b.cl.traffic(); err != nil {
		return s, err
	}
	for _, w := range b.fleet {
		c, err := w.CPUSeconds()
		if err != nil {
			return s, err
		}
		s.workers += c
		v, err := scrape(w.metrics)
		if err != nil {
			return s, err
		}
		s.pairs += v
	}
	if s.producer, err = proc.CPUSeconds(os.Getpid()); err != nil {
		return s, err
	}
	s.busy, s.total, err = proc.MachineCPU()
	return s, err
}

func scrape(url string) (float64, error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, fmt.Errorf("reading a worker's metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, m := range pairsScored.FindAllSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		sum += v
	}
	return sum, nil
}

// phase keeps Depth × slots jobs of one kind outstanding, measures a window
// after a warm-up, and drains.
func (b *bench) phase(ctx context.Context, kind string, n int) (Row, error) {
	cands, window := b.cfg.Small, b.cfg.Window
	if kind == "big" {
		cands, window = b.cfg.Big, 2*b.cfg.Window
	}
	tmpl := eval.SyntheticJob(rand.New(rand.NewPCG(uint64(cands), 7)), "", cands, 30)
	users := n * b.cfg.Concurrency * b.cfg.Depth
	fmt.Fprintf(b.cfg.Log, "scale: %s jobs (%d candidates), %d workers, %d jobs outstanding\n", kind, cands, n, users)
	load, stopLoad := context.WithCancel(ctx)
	drain, stopDrain := context.WithCancel(ctx)
	var noResult, pubErrs atomic.Int64
	unmatched := b.unmatched.Load()
	var wg sync.WaitGroup
	// On every return the producers stop and are gone before the fleet
	// and the cluster are.
	defer func() { stopLoad(); stopDrain(); wg.Wait() }()
	for u := range users {
		wg.Go(func() {
			for seq := 0; load.Err() == nil; seq++ {
				job := *tmpl
				job.ID = fmt.Sprintf("%s-%d-%d-%d", kind, n, u, seq)
				switch b.submit(load, drain, &job, &pubErrs) {
				case unanswered:
					noResult.Add(1)
					return
				case abandoned:
					return
				}
			}
		})
	}
	if !sleep(ctx, b.cfg.Warmup) {
		return Row{}, ctx.Err()
	}
	a, err := b.snapshot()
	if err != nil {
		return Row{}, err
	}
	b.mu.Lock()
	b.lat = b.lat[:0]
	b.mu.Unlock()
	b.recording.Store(true)
	if !sleep(ctx, window) {
		return Row{}, ctx.Err()
	}
	z, err := b.snapshot()
	b.recording.Store(false)
	if err != nil {
		return Row{}, err
	}
	stopLoad()
	// Every job published is answered before the next phase: a drain of
	// at most 2 minutes, then the stragglers count as unanswered.
	giveUp := time.AfterFunc(2*time.Minute, stopDrain)
	wg.Wait()
	giveUp.Stop()
	b.mu.Lock()
	lat := slices.Clone(b.lat)
	b.mu.Unlock()
	r := row(kind, n, a, z, lat, noResult.Load(), pubErrs.Load())
	r.Unmatched = b.unmatched.Load() - unmatched
	return r, nil
}

// outcome is how a submitted job ended.
type outcome int

const (
	answered   outcome = iota
	unanswered         // published, no result before the drain ended
	abandoned          // never published: the load stopped while publishing failed
)

// submit publishes job, retrying a failed publish with the same id as a
// client would (JetStream's dedup keeps one copy; a publish that timed out
// may still have stored the job, whose result is then awaited), and waits
// for its result until drain ends.
func (b *bench) submit(load, drain context.Context, job *schemas.Job, pubErrs *atomic.Int64) outcome {
	data, err := schemas.EncodeJob(job, schemas.Msgpack)
	if err != nil {
		panic(err) // a synthetic job always encodes
	}
	// One waiter for every attempt: the result of an attempt that timed
	// out but stored the job may come while a later attempt runs.
	ch := make(chan struct{}, 1)
	b.waiting.Store(job.ID, ch)
	subject := schemas.JobSubject(b.model)
	if b.cfg.Partitions > 0 {
		subject = schemas.PartitionSubject(b.model, schemas.Interactive, schemas.PartitionOf(job.ID, b.cfg.Partitions))
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(schemas.HeaderContentType, schemas.Msgpack.ContentType())
	start := time.Now()
	for {
		// Not bound to load: a publish under way when the load stops
		// completes and its result is awaited.
		pctx, cancel := context.WithTimeout(drain, 10*time.Second)
		_, err := b.js.PublishMsg(pctx, msg, jetstream.WithMsgID(job.ID))
		cancel()
		if err == nil {
			break
		}
		pubErrs.Add(1)
		if load.Err() != nil || drain.Err() != nil {
			select {
			case <-ch: // an earlier attempt had stored it
				b.done.Add(1)
				return answered
			default:
				b.waiting.Delete(job.ID)
				return abandoned
			}
		}
		sleep(load, 100*time.Millisecond)
	}
	select {
	case <-ch:
	case <-drain.Done():
		b.waiting.Delete(job.ID)
		return unanswered
	}
	b.done.Add(1)
	if b.recording.Load() {
		b.mu.Lock()
		b.lat = append(b.lat, time.Since(start))
		b.mu.Unlock()
	}
	return answered
}

func row(kind string, n int, a, z snap, lat []time.Duration, unanswered, pubErrs int64) Row {
	dt := z.at.Sub(a.at).Seconds()
	r := Row{Kind: kind, Workers: n, Jobs: z.done - a.done, Unanswered: unanswered, PubErrs: pubErrs}
	r.JobsPerSec = float64(r.Jobs) / dt
	r.ResultsPerSec = float64(z.results-a.results) / dt
	r.PairsPerSec = (z.pairs - a.pairs) / dt
	var broker float64
	for i := range z.tr.cpu {
		d := z.tr.cpu[i] - a.tr.cpu[i]
		broker += d
		r.BusiestNodeCores = max(r.BusiestNodeCores, d/dt)
	}
	r.BrokerCores = broker / dt
	r.WorkerCores = (z.workers - a.workers) / dt
	r.ProducerCores = (z.producer - a.producer) / dt
	if t := z.total - a.total; t > 0 {
		r.MachineBusy = (z.busy - a.busy) / t
	}
	if r.Jobs > 0 {
		k := float64(r.Jobs) / 1000
		r.BrokerCPUPer1000 = broker / k
		r.WorkerCPUPer1000 = (z.workers - a.workers) / k
		r.MsgsPerJob = (z.tr.msgs - a.tr.msgs) / float64(r.Jobs)
		r.BytesPerJob = (z.tr.bytes - a.tr.bytes) / float64(r.Jobs)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		r.P50 = lat[len(lat)/2]
		r.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return r
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
