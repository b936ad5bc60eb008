package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"

	"github.com/rerank/rerank/eval"
	"github.com/rerank/rerank/model/quantize"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

func cmdQuantize(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("quantize", "--in DIR --out DIR [flags] (dynamic int8 quantization of a model directory, then an agreement check against it)", stderr)
	in := fs.String("in", "", "fp32 model directory (an ONNX export)")
	out := fs.String("out", "", "model directory to write (model.onnx, the tokenizer and configs, rerank.json)")
	gran := fs.String("granularity", string(quantize.PerChannel), "weight scales: per-channel (one per output column) or per-tensor")
	ops := fs.String("ops", "MatMul,Gemm", "operators whose constant weights are quantized")
	exclude := fs.String("exclude", quantize.DefaultExclude, "keep nodes whose name matches this regular expression in fp32 (empty: none)")
	edges := fs.Bool("keep-edge-layers", false, "keep the first and last encoder layers in fp32")
	minCols := fs.Int64("min-columns", 16, "keep weights with fewer output columns in fp32")
	check := fs.String("check", "", "job (JSON or msgpack file) for the agreement check (default: a built-in synthetic job)")
	checkN := fs.Int("check-candidates", 200, "candidates of the built-in check job (0: no check)")
	var mf modelFlags
	mf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *in == "" || *out == "" {
		return &exitError{2, fmt.Errorf("--in and --out are required")}
	}
	opts := quantize.Options{Granularity: quantize.Granularity(*gran), KeepEdgeLayers: *edges, MinColumns: *minCols}
	for _, op := range strings.Split(*ops, ",") {
		if op = strings.TrimSpace(op); op != "" {
			opts.OpTypes = append(opts.OpTypes, op)
		}
	}
	if *exclude != "" {
		re, err := regexp.Compile(*exclude)
		if err != nil {
			return &exitError{2, fmt.Errorf("--exclude: %w", err)}
		}
		opts.Exclude = re
	}
	if err := opts.Validate(); err != nil {
		return &exitError{2, err}
	}
	start := time.Now()
	rep, _, err := quantize.Dir(*in, *out, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "quantized %d nodes to int8 (%s), kept %d in fp32; weights %.1f MB → %.1f MB; wrote %s in %s\n",
		len(rep.Quantized), opts.Granularity, len(rep.Kept), float64(rep.WeightBytes[0])/1e6, float64(rep.WeightBytes[1])/1e6,
		*out, time.Since(start).Round(time.Millisecond))
	for _, k := range rep.Kept {
		fmt.Fprintf(stdout, "  fp32: %s\n", k)
	}

	var job *schemas.Job
	switch {
	case *check != "":
		data, src, err := readInput([]string{*check}, nil)
		if err != nil {
			return &exitError{2, fmt.Errorf("reading the check job: %w", err)}
		}
		if job, _, err = decodeJobInput(data, schemas.Limits{}); err != nil {
			return codedExit(fmt.Errorf("check job from %s: %w", src, err))
		}
	case *checkN > 0:
		job = eval.SyntheticJob(rand.New(rand.NewPCG(7, 7)), "quantize-check", *checkN, 60)
	default:
		return nil
	}
	ag, err := checkAgreement(ctx, &mf, *in, *out, job)
	if err != nil {
		return fmt.Errorf("checking agreement: %w", err)
	}
	fmt.Fprintf(stdout, "agreement with fp32 on %d candidates: spearman %.4f, kendall_tau %.4f, max_abs_diff %.3g, top10 overlap %d/10\n",
		ag.N, ag.Spearman, ag.Kendall, ag.MaxDiff, ag.TopKSame)
	return nil
}

// checkAgreement scores job with both models and compares the scores.
func checkAgreement(ctx context.Context, mf *modelFlags, fp32, int8 string, job *schemas.Job) (eval.Agreement, error) {
	mf.models.values = []string{"fp32=" + fp32, "int8=" + int8}
	models, err := mf.load()
	if err != nil {
		return eval.Agreement{}, err
	}
	defer models.Close()
	pipe, err := pipeline.New(pipeline.Config{MaxBatchDelay: -1}, models.served...)
	if err != nil {
		return eval.Agreement{}, err
	}
	defer pipe.Close()
	return compareModels(ctx, pipe, "fp32", "int8", job)
}

// compareModels re-ranks job with models a and b and compares their scores,
// candidate by candidate.
func compareModels(ctx context.Context, r *pipeline.Pipeline, a, b string, job *schemas.Job) (eval.Agreement, error) {
	scores := func(name string) ([]float64, error) {
		j := *job
		j.Model, j.TopN, j.ReturnDocuments = name, 0, false
		res, err := r.Rerank(ctx, name, &j, time.Time{})
		if err != nil {
			return nil, err
		}
		if res.Error != nil {
			return nil, res.Error
		}
		return eval.CandidateScores(res, len(job.Candidates)), nil
	}
	sa, err := scores(a)
	if err != nil {
		return eval.Agreement{}, err
	}
	sb, err := scores(b)
	if err != nil {
		return eval.Agreement{}, err
	}
	return eval.Compare(sa, sb)
}
