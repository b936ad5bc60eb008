package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rerank/rerank/model/testmodel"
)

func cmdGenModel(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("gen-model", "--size tiny|l12 --tokenizer tokenizer.json --out DIR (a Hugging Face ONNX export directory with random weights)", stderr)
	size := fs.String("size", "tiny", "tiny (2 layers, hidden 32) or l12 (MiniLM-L12-H384 shape)")
	tok := fs.String("tokenizer", "", "BERT-uncased tokenizer.json to copy into the directory")
	out := fs.String("out", "", "model directory to write")
	name := fs.String("name", "", "model name in the ONNX metadata (the model is served under its directory's name)")
	labels := fs.Int("labels", 1, "logits per pair (2: a two-class export, scored with softmax)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *tok == "" || *out == "" {
		return &exitError{2, fmt.Errorf("--tokenizer and --out are required")}
	}
	var spec testmodel.Spec
	switch *size {
	case "tiny":
		spec = testmodel.Tiny
	case "l12":
		spec = testmodel.MiniLML12
	default:
		return &exitError{2, fmt.Errorf("--size %q: want tiny or l12", *size)}
	}
	if *name != "" {
		spec.Name = *name
	}
	spec.Labels = *labels
	start := time.Now()
	if err := testmodel.WriteDir(*out, spec, *tok); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s model %q to %s in %s (random weights: scores are meaningless)\n", *size, spec.Name, *out, time.Since(start).Round(time.Millisecond))
	return nil
}
