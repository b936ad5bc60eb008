package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

func cmdRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("run", "[flags] [job.json|-]", stderr)
	var mf modelFlags
	mf.register(fs)
	table := fs.Bool("table", false, "print a ranked table instead of JSON")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	data, src, err := readInput(fs.Args(), stdin)
	if err != nil {
		return &exitError{2, fmt.Errorf("reading job: %w", err)}
	}
	job, _, err := decodeJobInput(data, schemas.Limits{})
	if err != nil {
		return codedExit(fmt.Errorf("job from %s: %w", src, err))
	}
	models, err := mf.load()
	if err != nil {
		return err
	}
	defer models.Close()
	if len(models.served) != 1 {
		return &exitError{2, fmt.Errorf("run takes one --model, got %d", len(models.served))}
	}
	pipe, err := pipeline.New(pipeline.Config{MaxBatchDelay: -1}, models.served...)
	if err != nil {
		return err
	}
	defer pipe.Close()
	// run serves one model: a job naming another (examples/ name demo) is
	// run on it, and said so.
	name := models.served[0].Name
	if job.Model != "" && job.Model != name {
		fmt.Fprintf(stderr, "rerank: job %s names model %q; running it on %q, the model loaded\n", job.ID, job.Model, name)
		job.Model = name
	}
	res, err := pipe.Rerank(ctx, name, job, time.Time{})
	if err != nil {
		return err
	}
	if *table {
		printRanking(stdout, job, res)
	} else if err := printJSON(stdout, res); err != nil {
		return err
	}
	if res.Error != nil {
		return &exitError{2, res.Error}
	}
	return nil
}
