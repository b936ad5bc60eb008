package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/schemas"
)

func cmdInject(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("inject", "--preset NAME [--config rerank.json] [job.json|-]", stderr)
	preset := fs.String("preset", "", "injection preset: "+fmt.Sprint(inject.Presets()))
	config := fs.String("config", "", "a model's rerank.json whose fields override the preset")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	var overrides []byte
	if *config != "" {
		b, err := os.ReadFile(*config)
		if err != nil {
			return &exitError{2, fmt.Errorf("reading --config: %w", err)}
		}
		overrides = b
	}
	if *preset == "" && overrides == nil {
		return &exitError{2, fmt.Errorf("--preset or --config is required (presets: %v)", inject.Presets())}
	}
	cfg, err := inject.Resolve(*preset, overrides)
	if err != nil {
		return &exitError{2, err}
	}
	data, src, err := readInput(fs.Args(), stdin)
	if err != nil {
		return &exitError{2, fmt.Errorf("reading job: %w", err)}
	}
	job, _, err := decodeJobInput(data, schemas.Limits{})
	if err == nil {
		err = schemas.Validate(job, "", schemas.Limits{})
	}
	var pairs []wordpiece.Pair
	if err == nil {
		pairs, err = cfg.Render(job)
	}
	if err != nil {
		return codedExit(fmt.Errorf("job from %s: %w", src, err))
	}
	if cfg.Scores.BM25 == nil && cfg.Scores.DPR == nil && hasScores(job) {
		fmt.Fprintf(stderr, "rerank: this configuration writes no first-stage score into the text: the job's bm25/dpr are not read (a score-injecting checkpoint needs a preset such as all-MiniLM-L12-v3-bm25, or text_a with {bm25})\n")
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for _, l := range inject.Lines(job, pairs) {
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
	return nil
}

// hasScores reports whether a candidate of job carries a first-stage score.
func hasScores(job *schemas.Job) bool {
	for _, c := range job.Candidates {
		if c.BM25 != nil || c.DPR != nil {
			return true
		}
	}
	return false
}
