package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/eval"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

func cmdEval(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "--queries Q.tsv --collection C.tsv --run RUN.trec --qrels QRELS [flags]", stderr)
	var files eval.Files
	fs.StringVar(&files.Queries, "queries", "", "queries TSV: qid<TAB>text (required)")
	fs.StringVar(&files.Collection, "collection", "", "collection TSV: pid<TAB>text, streamed once; only the passages the run retrieves are kept (required)")
	fs.StringVar(&files.Run, "run", "", "first-stage TREC run 'qid Q0 pid rank score tag'; its score is injected as bm25 (required)")
	fs.StringVar(&files.DPRRun, "dpr-run", "", "second TREC run whose scores are injected as dpr (optional)")
	fs.StringVar(&files.Qrels, "qrels", "", "qrels 'qid 0 pid rel' (required)")
	depth := fs.Int("depth", eval.DefaultDepth, "first-stage passages per query to re-rank and evaluate (trec_eval -M)")
	relThreshold := fs.Int("rel-threshold", eval.DefaultRelThreshold, "lowest qrels level that counts as relevant for MRR, MAP and recall (trec_eval -l; MS MARCO dev: 1, TREC DL: 2)")
	modelName := fs.String("model", "demo", "model to evaluate: NAME (the worker's model), or with --local NAME=DIR or DIR (default: the demo model)")
	partitions := fs.Int("partitions", 0, "job streams per model beyond RERANK_JOBS, as the workers run (docs/scaling.md); 0: none")
	laneFlag := fs.String("lane", "bulk", "lane of the evaluation's jobs: bulk (the default: an evaluation must not delay interactive traffic) or interactive")
	local := fs.Bool("local", false, "re-rank in this process (model directory loaded like 'rerank run') instead of through NATS")
	var nf natsFlags
	nf.register(nats.DefaultURL, fs.StringVar)
	inflight := fs.Int("inflight", eval.DefaultInflight, "jobs submitted and not yet answered")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long one job may take")
	out := fs.String("out", "", "write the re-ranked run here (TREC format)")
	tag := fs.String("tag", eval.DefaultTag, "run tag of the re-ranked run")
	maxQueries := fs.Int("max-queries", 0, "evaluate only the first N selected queries of the run (0: all)")
	unjudged := fs.Bool("rerank-unjudged", false, "also re-rank (and write) the run's queries that have no qrels; they are not scored")
	dprMissing := fs.String("dpr-missing", string(eval.DPROmit), "a candidate the --dpr-run does not score: omit (models that inject dpr reject the job) or min (the query's lowest dpr score)")
	// The inference flags of 'rerank run', for --local; --model is ours.
	var mf modelFlags
	inferenceFlags := flag.NewFlagSet("", flag.ContinueOnError)
	mf.register(inferenceFlags)
	inferenceFlags.VisitAll(func(f *flag.Flag) {
		if f.Name != "model" {
			fs.Var(f.Value, f.Name, "with --local: "+f.Usage)
		}
	})
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"queries", files.Queries}, {"collection", files.Collection}, {"run", files.Run}, {"qrels", files.Qrels}} {
		if f.v == "" {
			missing = append(missing, "--"+f.name)
		}
	}
	if len(missing) > 0 {
		return &exitError{2, fmt.Errorf("%s required", strings.Join(missing, ", "))}
	}
	if *depth <= 0 || *depth > schemas.DefaultMaxCandidates {
		return &exitError{2, fmt.Errorf("--depth %d: want 1 to %d (the candidates one job may hold)", *depth, schemas.DefaultMaxCandidates)}
	}
	if *relThreshold < 1 {
		return &exitError{2, fmt.Errorf("--rel-threshold %d: want 1 or more", *relThreshold)}
	}
	if *inflight < 1 {
		return &exitError{2, fmt.Errorf("--inflight %d: want 1 or more", *inflight)}
	}
	policy, err := eval.ParseDPRMissing(*dprMissing)
	if err != nil {
		return &exitError{2, err}
	}
	name, _, hasDir := strings.Cut(*modelName, "=") // without --local only the name matters
	if *local {
		switch {
		case hasDir:
			mf.models.Set(*modelName)
		case isDir(name):
			mf.models.Set(name) // DIR: the name comes from its rerank.json
			name = ""
		case name != "demo":
			return &exitError{2, fmt.Errorf("--local --model %q: give NAME=DIR or DIR (only the demo model is found by name)", *modelName)}
		}
	}
	if name != "" && !model.ValidName(name) {
		return &exitError{2, fmt.Errorf("--model %q: a model name is 1-64 letters, digits, '-' or '_'", name)}
	}
	opts := eval.Options{Depth: *depth, RelThreshold: *relThreshold, MaxQueries: *maxQueries, RerankUnjudged: *unjudged, DPRMissing: policy}

	var bar *eval.Bar
	if isTerminal(stderr) {
		bar = eval.NewBar(stderr)
	}
	warn := func(format string, a ...any) {
		if bar != nil {
			bar.Finish()
		}
		fmt.Fprintf(stderr, "eval: warning: "+format+"\n", a...)
	}
	var status func(string)
	if bar != nil {
		status = bar.Status
		defer bar.Finish()
	}

	// Load the model (or connect) before the long read of the collection,
	// so that a wrong flag fails at once.
	var reranker eval.Reranker
	var closeReranker func()
	if *local {
		reranker, name, closeReranker, err = localEvalReranker(mf, *timeout)
	} else {
		reranker, closeReranker, err = natsEvalReranker(ctx, nf, name, *laneFlag, *partitions, *timeout)
	}
	if err != nil {
		return err
	}
	defer closeReranker()

	in, st, err := eval.Load(ctx, files, opts, status)
	if err != nil {
		return err
	}
	if st.DPRMissing > 0 {
		what := "omitted: a model that injects dpr will reject those jobs (--dpr-missing min fills them in)"
		if policy == eval.DPRMin {
			what = "set to the query's lowest dpr score"
		}
		warn("%s does not score %d of the %d candidates; their dpr is %s", files.DPRRun, st.DPRMissing, st.Candidates, what)
	}

	runner := &eval.Runner{Reranker: reranker, Options: opts, Inflight: *inflight, Tag: *tag, Model: name}
	if bar != nil {
		bar.Status(fmt.Sprintf("re-ranking %d queries (%d pairs, %d passages kept of %d scanned) with %s…",
			st.Selected, st.Candidates, st.Collection.Kept, st.Collection.Lines, name))
		runner.Progress = bar.Update
	}
	var rep *eval.Report
	err = writeAtomically(*out, func(w io.Writer) error {
		runner.Out = w
		rep, err = runner.Run(ctx, in)
		if bar != nil {
			bar.Finish()
		}
		if err != nil {
			return codedExit(err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if rep.JudgedNotInRun > 0 {
		warn("%d queries of the qrels have no first-stage results; like trec_eval (without -c) the scores leave them out", rep.JudgedNotInRun)
	}
	if rep.Ties > 0 {
		warn("%d re-ranked passages have exactly the score of the one above; the run lists them in first-stage order, trec_eval (and the scores above) by docno descending", rep.Ties)
	}
	summary := rep.Summary()
	if *out != "" {
		summary += "; run written to " + *out
	}
	fmt.Fprintln(stderr, summary)
	return nil
}

// localEvalReranker loads --local's model into a pipeline in this process.
func localEvalReranker(mf modelFlags, timeout time.Duration) (eval.Reranker, string, func(), error) {
	models, err := mf.load()
	if err != nil {
		return nil, "", nil, err
	}
	if len(models.served) != 1 {
		models.Close()
		return nil, "", nil, &exitError{2, fmt.Errorf("--local takes one model, got %d", len(models.served))}
	}
	pipe, err := pipeline.New(pipeline.Config{ConcurrentCalls: mf.runs}, models.served...)
	if err != nil {
		models.Close()
		return nil, "", nil, err
	}
	name := models.served[0].Name
	return localReranker{pipe: pipe, model: name, timeout: timeout}, name, func() { pipe.Close(); models.Close() }, nil
}

// natsEvalReranker connects to the workers of model name through NATS,
// refusing at once a model no worker pool serves.
func natsEvalReranker(ctx context.Context, nf natsFlags, name, laneFlag string, partitions int, timeout time.Duration) (eval.Reranker, func(), error) {
	nopts, err := nf.options("rerank-eval", slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, &exitError{2, err}
	}
	nc, err := nats.Connect(nf.url, nopts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to NATS at %s: %w (is `rerank serve` running? or use --local)", redact(nf.url), err)
	}
	fail := func(err error) (eval.Reranker, func(), error) { nc.Close(); return nil, nil, err }
	lane, err := schemas.ParseLane(laneFlag)
	if err != nil {
		return fail(&exitError{2, err})
	}
	if err := checkServed(ctx, nc, name, lane); err != nil {
		return fail(fmt.Errorf("%w, or use --local", err))
	}
	c, err := client.New(nc, client.Options{Model: name, Lane: lane, Partitions: partitions})
	if err != nil {
		return fail(err)
	}
	return natsReranker{c: c, timeout: timeout, gate: newQueueGate()}, nc.Close, nil
}

// writeAtomically runs write on a temporary file beside path and renames
// it over path once write succeeds (readable by all, as a plain file); on
// failure nothing is left. With path empty, write gets nil.
func writeAtomically(path string, write func(io.Writer) error) error {
	if path == "" {
		return write(nil)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.part")
	if err != nil {
		return err
	}
	defer func() {
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o644); err != nil { // CreateTemp makes it 0600
		return err
	}
	if err := write(f); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	f = nil
	return nil
}

// checkServed fails fast when no worker pool has ever consumed jobs for
// model: its jobs would wait in the stream until --timeout. Other errors
// are let through: a client whose NATS user may not read consumer info
// (deploy/nats/accounts.conf's clients) is refused by the server, which
// ends the check at once, without the error reaching the user.
func checkServed(ctx context.Context, nc *nats.Conn, model string, lane schemas.Lane) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	prev := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, s *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			cancel() // the request is not answered: the server refused it
			return
		}
		if prev != nil {
			prev(c, s, err)
		}
	})
	defer nc.SetErrorHandler(prev)
	name := worker.LaneConsumerName(model, lane)
	_, err = js.Consumer(ctx, schemas.JobsStream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no worker serves model %q in the %s lane on %s (no consumer %s on stream %s): start `rerank serve --model %s=DIR`", model, lane, nc.ConnectedUrlRedacted(), name, schemas.JobsStream, model)
	}
	return nil
}

// natsReranker submits a job through the client and waits for its result.
type natsReranker struct {
	c       *client.Client
	timeout time.Duration
	gate    *queueGate
}

func (n natsReranker) Rerank(ctx context.Context, job *schemas.Job) (*schemas.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	// A full job queue (a lane with a limit refuses new jobs) is waited
	// out: an evaluation is bulk work with no one waiting on each job.
	var p *client.Pending
	err := n.gate.do(ctx, func() (err error) {
		p, err = n.c.SubmitAsync(ctx, job)
		return err
	})
	if err != nil {
		return nil, err
	}
	return p.Result(ctx)
}

// queueGate spaces out one process's retries of publishes a full queue
// refused (client.ErrQueueFull), across all its jobs in flight: after a
// refusal the gate closes, the wait doubling from queueGateMin to
// queueGateMax (with jitter) while refusals go on; when it reopens one job
// probes alone, and the others follow only once the probe got in (a
// success resets the wait). Per-job backoff alone let every job in flight
// retry on its own clock, so an evaluation with many in flight refilled
// each slot the workers freed and kept the lane full for everyone else's
// producers too.
type queueGate struct {
	mu      sync.Mutex
	until   time.Time     // no publish before
	wait    time.Duration // the next refusal closes the gate this long
	refused bool          // since the last success: the next attempt probes
	probe   chan struct{} // non-nil while a probe runs; closed when it ends
}

const (
	queueGateMin = 100 * time.Millisecond
	queueGateMax = 5 * time.Second
)

func newQueueGate() *queueGate { return &queueGate{wait: queueGateMin} }

// do runs publish once the gate lets it, again after each ErrQueueFull,
// until it succeeds, fails otherwise, or ctx ends (then it returns the
// last refusal, or ctx's error if it never tried).
func (g *queueGate) do(ctx context.Context, publish func() error) error {
	var last error
	for {
		probing, err := g.enter(ctx)
		if err != nil {
			if last != nil {
				return last
			}
			return err
		}
		last = publish()
		g.leave(probing, last)
		if !errors.Is(last, client.ErrQueueFull) || ctx.Err() != nil {
			return last
		}
	}
}

// enter waits until the gate is open and no probe runs; it reports whether
// the caller is the probe.
func (g *queueGate) enter(ctx context.Context) (probing bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		if d := time.Until(g.until); d > 0 {
			g.mu.Unlock()
			ok := sleepCtx(ctx, d)
			g.mu.Lock()
			if !ok {
				return false, fmt.Errorf("waiting for room in the job queue: %w", ctx.Err())
			}
			continue
		}
		if p := g.probe; p != nil {
			g.mu.Unlock()
			select {
			case <-p:
			case <-ctx.Done():
			}
			g.mu.Lock()
			if ctx.Err() != nil {
				return false, fmt.Errorf("waiting for room in the job queue: %w", ctx.Err())
			}
			continue
		}
		if g.refused {
			g.probe = make(chan struct{})
			return true, nil
		}
		return false, nil
	}
}

// leave records a publish's outcome.
func (g *queueGate) leave(probing bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if probing {
		close(g.probe)
		g.probe = nil
	}
	switch {
	case err == nil:
		g.wait, g.refused = queueGateMin, false
	case errors.Is(err, client.ErrQueueFull):
		g.refused = true
		if now := time.Now(); !g.until.After(now) { // the first refusal of a round closes the gate
			g.until = now.Add(g.wait + rand.N(g.wait/2+1))
			g.wait = min(2*g.wait, queueGateMax)
		}
	}
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// localReranker re-ranks in this process, like 'rerank run'.
type localReranker struct {
	pipe    *pipeline.Pipeline
	model   string
	timeout time.Duration
}

func (l localReranker) Rerank(ctx context.Context, job *schemas.Job) (*schemas.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.pipe.Rerank(ctx, l.model, job, time.Time{})
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
