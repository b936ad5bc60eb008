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
	if err := parse(fs, args); err != nil {
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
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for _, l := range inject.Lines(job, pairs) {
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
	return nil
}
