package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/schemas"
)

func cmdSubmit(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("submit", "[flags] [job.json|-]", stderr)
	var nf natsFlags
	nf.register(nats.DefaultURL, fs.StringVar)
	modelName := fs.String("model", "demo", "model to use when the job names none")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the result")
	asJSON := fs.Bool("json", false, "print the raw result as JSON")
	partitions := fs.Int("partitions", 0, "job streams per model beyond RERANK_JOBS, as the workers run (docs/scaling.md); 0: none")
	laneFlag := fs.String("lane", "interactive", "interactive, or bulk (rerank.jobs.<model>.bulk: for backfills; interactive jobs go first)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	data, src, err := readInput(fs.Args(), stdin)
	if err != nil {
		return &exitError{2, fmt.Errorf("reading job: %w", err)}
	}
	job, format, err := decodeJobInput(data, schemas.Limits{})
	if err != nil {
		return codedExit(fmt.Errorf("job from %s: %w", src, err))
	}
	opts, err := nf.options("rerank-submit", slog.New(slog.DiscardHandler))
	if err != nil {
		return &exitError{2, err}
	}
	nc, err := nats.Connect(nf.url, append(opts, nats.MaxReconnects(5))...)
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w (is `rerank serve` running?)", redact(nf.url), err)
	}
	defer nc.Close()
	lane, err := schemas.ParseLane(*laneFlag)
	if err != nil {
		return &exitError{2, err}
	}
	c, err := client.New(nc, client.Options{Model: *modelName, Format: format, Lane: lane, Partitions: *partitions})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// A model no worker pool consumes would keep the job waiting in the
	// queue for a worker that may never come: refused before queueing.
	if err := checkServed(ctx, nc, cmp.Or(job.Model, *modelName), lane); err != nil {
		return &exitError{2, fmt.Errorf("%w; nothing was queued", err)}
	}
	p, err := c.SubmitAsync(ctx, job)
	if err != nil {
		return codedExit(err)
	}
	if p.Duplicate() {
		fmt.Fprintf(stderr, "rerank: job %s was already queued within JetStream's 2-minute duplicate window: waiting for that job's result, whatever %s holds now (give a changed job a new id; a user who may not read stored results, such as a tenant's, gets none for a job answered already)\n", job.ID, src)
	}
	res, err := p.Result(ctx)
	if err != nil {
		return codedExit(err)
	}
	if *asJSON {
		if err := printJSON(stdout, res); err != nil {
			return err
		}
	} else if res.Error == nil {
		printRanking(stdout, job, res)
	}
	if res.Error != nil {
		return &exitError{2, fmt.Errorf("job %s failed: %w", res.ID, res.Error)}
	}
	return nil
}

// printRanking writes a result as a table.
func printRanking(w io.Writer, job *schemas.Job, res *schemas.Result) {
	fmt.Fprintf(w, "job %s · model %s · %d of %d candidates · %.1f ms (queued %.1f, tokenize %.1f, inference %.1f)",
		res.ID, res.Model, len(res.Results), len(job.Candidates), res.Timing.TotalMS, res.Timing.QueuedMS,
		res.Timing.TokenizeMS, res.Timing.InferenceMS)
	if res.Attempt > 0 { // answered by a worker, not `rerank run`
		fmt.Fprintf(w, " · attempt %d · %s", res.Attempt, res.Worker)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RANK\tSCORE\tID\tTEXT")
	for i, r := range res.Results {
		text := "?" // the client checks indices; never index on trust
		if r.Index >= 0 && r.Index < len(job.Candidates) {
			text = snippet(job.Candidates[r.Index].Text, 60)
		}
		fmt.Fprintf(tw, "%d\t%.4f\t%s\t%s\n", i+1, r.RelevanceScore, r.ID, text)
	}
	tw.Flush()
}

func snippet(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
