package eval

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/rerank/rerank/schemas"
)

// Reranker answers one job. A job the service rejected comes back as a
// Result with Error set; a transport failure as an error. cmd/rerank plugs
// in the NATS client (client.Client.SubmitAsync + Pending.Result) or the
// in-process pipeline.
type Reranker interface {
	Rerank(ctx context.Context, job *schemas.Job) (*schemas.Result, error)
}

// RerankerFunc adapts a function to Reranker.
type RerankerFunc func(ctx context.Context, job *schemas.Job) (*schemas.Result, error)

// Rerank calls f.
func (f RerankerFunc) Rerank(ctx context.Context, job *schemas.Job) (*schemas.Result, error) {
	return f(ctx, job)
}

// Defaults.
const (
	DefaultDepth        = 1000
	DefaultInflight     = 4
	DefaultRelThreshold = 1
	DefaultTag          = "rerank"
)

// Options choose what is evaluated; Load and Runner.Run must get the same.
type Options struct {
	// Depth is how many first-stage passages per query are re-ranked and
	// evaluated (trec_eval -M); default 1,000.
	Depth int
	// RelThreshold is the lowest relevance level that counts as relevant
	// for MRR, MAP and recall (trec_eval -l); default 1. nDCG always uses
	// the graded levels.
	RelThreshold int
	// MaxQueries, when positive, keeps only the first MaxQueries selected
	// queries (in run order): for quick trials.
	MaxQueries int
	// RerankUnjudged also re-ranks (and writes) the run's queries that have
	// no qrels. They are never scored: trec_eval skips them too.
	RerankUnjudged bool
	// DPRMissing is what a candidate absent from the DPR run gets.
	DPRMissing DPRMissing
}

func (o Options) withDefaults() Options {
	if o.Depth <= 0 {
		o.Depth = DefaultDepth
	}
	if o.RelThreshold <= 0 {
		o.RelThreshold = DefaultRelThreshold
	}
	if o.DPRMissing == "" {
		o.DPRMissing = DPROmit
	}
	return o
}

// Input is what an evaluation reads; Load fills it from files.
type Input struct {
	Queries map[string]string // query id → text (at least the selected queries)
	Texts   map[string]string // passage id → text (at least those the selected queries retrieve)
	Run     *Run              // first stage, trec_eval order; its scores are injected as bm25
	DPR     *Run              // optional second run; its scores are injected as dpr
	Qrels   Qrels
}

// SelectQueries lists the queries to re-rank, in run order: those of run
// that have qrels (all of them when unjudged is set), at most max when max
// is positive.
func SelectQueries(run *Run, qrels Qrels, unjudged bool, max int) []string {
	var out []string
	for _, qid := range run.Order {
		if _, judged := qrels[qid]; !judged && !unjudged {
			continue
		}
		if len(run.Entries[qid]) == 0 {
			continue
		}
		out = append(out, qid)
		if max > 0 && len(out) == max {
			break
		}
	}
	return out
}

// Progress reports how far a Runner is.
type Progress struct {
	Done, Total       int // queries answered, queries in all
	Pairs, TotalPairs int // query-passage pairs answered, pairs in all
	Elapsed           time.Duration
}

// Runner re-ranks every selected query through a Reranker, writes the
// re-ranked run and scores both runs.
type Runner struct {
	Reranker Reranker
	Options
	// Inflight bounds the jobs submitted and not yet answered; default 4.
	Inflight int
	// IDPrefix starts every job id; default NewIDPrefix().
	IDPrefix string
	// Out, when set, receives the re-ranked run in TREC format, query by
	// query in run order; ranks follow the model's score, ties broken by the
	// first-stage rank.
	Out io.Writer
	// Tag is the run tag written to Out; default "rerank".
	Tag string
	// Model names the model in the report (the Reranker picks the model).
	Model string
	// Progress, when set, is called after each answer (from one goroutine).
	Progress func(Progress)
}

// Report is the outcome of an evaluation.
type Report struct {
	Model        string
	Depth        int
	RelThreshold int
	Reranked     int // queries re-ranked (judged or not)
	Pairs        int // query-passage pairs re-ranked
	Elapsed      time.Duration
	// Queries are the evaluated queries (in both run and qrels), in run
	// order; First and Rerank hold their per-query scores.
	Queries       []string
	First, Rerank []Scores
	// FirstMean and RerankMean average them; Tests compare them per metric.
	FirstMean, RerankMean Scores
	Tests                 [NumMetrics]TTest
	// Ties counts adjacent re-ranked passages with exactly the same score:
	// the written run orders them by first-stage rank, trec_eval (and the
	// scores here, which follow trec_eval) by docno descending.
	Ties int
	// JudgedNotInRun counts qrels queries that the run does not retrieve
	// for; trec_eval (without -c) skips them, and so does this report.
	JudgedNotInRun int
}

type outcome struct {
	n   int
	job *schemas.Job
	res *schemas.Result
	err error
}

// Run evaluates in. It stops at the first job that fails (a rejected job, a
// transport error, a malformed result): metrics over a subset of queries
// would not be comparable.
func (r *Runner) Run(ctx context.Context, in *Input) (*Report, error) {
	if r.Reranker == nil {
		return nil, errors.New("eval: no Reranker")
	}
	if in == nil || in.Run == nil {
		return nil, errors.New("eval: no first-stage run")
	}
	opts := r.Options.withDefaults()
	inflight := r.Inflight
	if inflight <= 0 {
		inflight = DefaultInflight
	}
	prefix := r.IDPrefix
	if prefix == "" {
		prefix = NewIDPrefix()
	}
	tag := r.Tag
	if tag == "" {
		tag = DefaultTag
	}
	if strings.ContainsFunc(tag, func(c rune) bool { return c <= ' ' }) {
		return nil, fmt.Errorf("eval: run tag %q may not contain whitespace", tag)
	}

	selected := SelectQueries(in.Run, in.Qrels, opts.RerankUnjudged, opts.MaxQueries)
	if len(selected) == 0 {
		return nil, errors.New("eval: no query of the run has qrels (are they the same query set?)")
	}
	ids := make([]string, len(selected))
	seenIDs := make(map[string]string, len(selected))
	totalPairs := 0
	var missing []string
	for n, qid := range selected {
		if _, ok := in.Queries[qid]; !ok {
			missing = append(missing, qid)
		}
		ids[n] = JobID(prefix, qid)
		if other, dup := seenIDs[ids[n]]; dup {
			return nil, fmt.Errorf("eval: queries %q and %q map to the same job id %s", other, qid, ids[n])
		}
		seenIDs[ids[n]] = qid
		totalPairs += len(in.Run.Depth(qid, opts.Depth))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("eval: %d queries of the run are not in the queries file (first: %s)", len(missing), strings.Join(missing[:min(5, len(missing))], ", "))
	}

	rep := &Report{Model: r.Model, Depth: opts.Depth, RelThreshold: opts.RelThreshold}
	for qid := range in.Qrels {
		if _, ok := in.Run.Entries[qid]; !ok {
			rep.JudgedNotInRun++
		}
	}

	var out *bufio.Writer
	if r.Out != nil {
		out = bufio.NewWriterSize(r.Out, 1<<20)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()

	tasks := make(chan outcome)
	results := make(chan outcome, inflight)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // builds jobs lazily, so only inflight+1 exist at a time
		defer wg.Done()
		defer close(tasks)
		for n, qid := range selected {
			var dpr []Entry
			if in.DPR != nil {
				dpr = in.DPR.Entries[qid]
				if dpr == nil {
					dpr = []Entry{}
				}
			}
			job, err := BuildJob(ids[n], qid, in.Queries[qid], in.Run.Depth(qid, opts.Depth), in.Texts, dpr, opts.DPRMissing)
			o := outcome{n: n, job: job, err: err}
			ch := tasks
			if err != nil {
				ch = results
			}
			select {
			case ch <- o:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range tasks {
				t.res, t.err = r.Reranker.Rerank(ctx, t.job)
				select {
				case results <- t:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()

	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
			cancel()
		}
	}
	pending := map[int][]Entry{}
	next, done, pairs := 0, 0, 0
	var ranking []string
	if r.Progress != nil {
		r.Progress(Progress{Total: len(selected), TotalPairs: totalPairs})
	}
	for o := range results {
		if firstErr != nil {
			continue // drain until every goroutine has stopped
		}
		qid := selected[o.n]
		if o.err != nil {
			fail(fmt.Errorf("query %s: %w", qid, o.err))
			continue
		}
		ranked, err := rankResult(o.job, o.res)
		if err != nil {
			fail(fmt.Errorf("query %s: %w", qid, err))
			continue
		}
		pending[o.n] = ranked
		done++
		pairs += len(ranked)
		for {
			ranked, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			q := selected[next]
			next++
			for i := 1; i < len(ranked); i++ {
				if ranked[i].Score == ranked[i-1].Score {
					rep.Ties++
				}
			}
			if out != nil {
				if err := WriteRun(out, q, ranked, tag); err != nil {
					fail(fmt.Errorf("writing the re-ranked run: %w", err))
					break
				}
			}
			judged, ok := in.Qrels[q]
			if !ok {
				continue
			}
			ranking = ranking[:0]
			for _, e := range in.Run.Depth(q, opts.Depth) {
				ranking = append(ranking, e.Doc)
			}
			first := Measure(ranking, judged, opts.RelThreshold)
			written := AsWritten(ranked)
			SortTrec(written) // as trec_eval will rank the written run
			ranking = ranking[:0]
			for _, e := range written {
				ranking = append(ranking, e.Doc)
			}
			rep.Queries = append(rep.Queries, q)
			rep.First = append(rep.First, first)
			rep.Rerank = append(rep.Rerank, Measure(ranking, judged, opts.RelThreshold))
		}
		if r.Progress != nil && firstErr == nil {
			r.Progress(Progress{Done: done, Total: len(selected), Pairs: pairs, TotalPairs: totalPairs, Elapsed: time.Since(start)})
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil && next < len(selected) {
		return nil, err
	}
	if out != nil {
		if err := out.Flush(); err != nil {
			return nil, fmt.Errorf("writing the re-ranked run: %w", err)
		}
	}
	rep.Reranked = next
	rep.Pairs = pairs
	rep.Elapsed = time.Since(start)
	rep.FirstMean = Mean(rep.First)
	rep.RerankMean = Mean(rep.Rerank)
	a := make([]float64, len(rep.First))
	b := make([]float64, len(rep.Rerank))
	for m := range NumMetrics {
		for i := range rep.First {
			a[i], b[i] = rep.First[i][m], rep.Rerank[i][m]
		}
		rep.Tests[m] = PairedTTest(a, b)
	}
	return rep, nil
}

// rankResult checks a result against its job and returns the candidates
// best first: by the model's score descending, ties in first-stage order.
func rankResult(job *schemas.Job, res *schemas.Result) ([]Entry, error) {
	if res == nil {
		return nil, fmt.Errorf("job %s: no result", job.ID)
	}
	if res.Error != nil {
		return nil, fmt.Errorf("job %s was rejected: %w", job.ID, res.Error)
	}
	if res.ID != job.ID {
		return nil, fmt.Errorf("job %s: got the result of job %s", job.ID, res.ID)
	}
	if len(res.Results) != len(job.Candidates) {
		return nil, fmt.Errorf("job %s: %d of %d candidates ranked", job.ID, len(res.Results), len(job.Candidates))
	}
	scores := make([]float64, len(job.Candidates))
	seen := make([]bool, len(job.Candidates))
	for _, x := range res.Results {
		if x.Index < 0 || x.Index >= len(job.Candidates) || seen[x.Index] || job.Candidates[x.Index].ID != x.ID {
			return nil, fmt.Errorf("job %s: result names candidate %d (%q), which is not in the job or ranked twice", job.ID, x.Index, x.ID)
		}
		if math.IsNaN(x.RelevanceScore) || math.IsInf(x.RelevanceScore, 0) {
			return nil, fmt.Errorf("job %s: candidate %s scored %v", job.ID, x.ID, x.RelevanceScore)
		}
		seen[x.Index] = true
		scores[x.Index] = x.RelevanceScore
	}
	order := make([]int, len(scores))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	out := make([]Entry, len(order))
	for k, i := range order {
		out[k] = Entry{Doc: job.Candidates[i].ID, Score: scores[i]}
	}
	return out, nil
}

// WriteTable prints both runs' mean scores side by side, with the
// difference and the paired t-test's p-value per metric.
func (rep *Report) WriteTable(w io.Writer) error {
	n := len(rep.Queries)
	model := rep.Model
	if model == "" {
		model = "re-ranker"
	}
	fmt.Fprintf(w, "%d queries evaluated (in both run and qrels) · depth %d · relevant: rel >= %d (nDCG@10: graded gains) · model %s\n",
		n, rep.Depth, rep.RelThreshold, model)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tfirst stage\tre-ranked\tdelta\tp-value")
	for m := range NumMetrics {
		fmt.Fprintf(tw, "%s\t%.4f\t%.4f\t%+.4f\t%s\n", m, rep.FirstMean[m], rep.RerankMean[m],
			rep.RerankMean[m]-rep.FirstMean[m], formatP(rep.Tests[m].P))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n < 2 {
		_, err := fmt.Fprintf(w, "p-value: a paired t-test needs at least 2 queries.\n")
		return err
	}
	_, err := fmt.Fprintf(w, "p-value: paired two-sided t-test over the %d queries (df %d).\n", n, n-1)
	return err
}

func formatP(p float64) string {
	switch {
	case math.IsNaN(p):
		return "-"
	case p < 1e-4:
		return "<0.0001"
	}
	return fmt.Sprintf("%.4f", p)
}

// Summary is a one-line account of the evaluation.
func (rep *Report) Summary() string {
	rate := 0.0
	if s := rep.Elapsed.Seconds(); s > 0 {
		rate = float64(rep.Pairs) / s
	}
	model := rep.Model
	if model == "" {
		model = "the re-ranker"
	}
	return fmt.Sprintf("eval: re-ranked %d queries (%d pairs) with %s in %s (%.0f pairs/s); %d evaluated: nDCG@10 %.4f -> %.4f, MRR@10 %.4f -> %.4f",
		rep.Reranked, rep.Pairs, model, rep.Elapsed.Round(time.Millisecond), rate, len(rep.Queries),
		rep.FirstMean[NDCG10], rep.RerankMean[NDCG10], rep.FirstMean[MRR10], rep.RerankMean[MRR10])
}
