package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/rerank/rerank/eval"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/quantize"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/pipeline/calibrate"
	"github.com/rerank/rerank/schemas"
)

func cmdQuantize(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("quantize", "--in DIR --out DIR [flags] (int8 quantization of a model directory, calibrated on a job, then an agreement check against it)", stderr)
	in := fs.String("in", "", "fp32 model directory (an ONNX export)")
	out := fs.String("out", "", "model directory to write (model.onnx, the tokenizer and configs, rerank.json)")
	gran := fs.String("granularity", string(quantize.PerChannel), "weight scales: per-channel (one per output column) or per-tensor")
	acts := fs.String("activations", string(quantize.Static), "activation ranges: static (calibrated on a job before: batch-independent scores, served in batches) or per-batch (computed per run's tensor: no calibration, served one pair per run)")
	calib := fs.String("calibration", "", "job (JSON or msgpack file) to calibrate static activation ranges on, as your traffic looks (default: a built-in synthetic job)")
	calibN := fs.Int("calibration-candidates", 100, "candidates of the built-in calibration job")
	smooth := fs.Float64("smooth", quantize.DefaultSmooth, "with static activations, move this share (0–1) of each activation channel's range into the weights (SmoothQuant's α; 0: off)")
	ops := fs.String("ops", "MatMul,Gemm", "operators whose constant weights are quantized")
	exclude := fs.String("exclude", quantize.DefaultExclude, "keep nodes whose name matches this regular expression in fp32 (empty: none)")
	edges := fs.Bool("keep-edge-layers", false, "keep the first and last encoder layers in fp32")
	minCols := fs.Int64("min-columns", 16, "keep weights with fewer output columns in fp32")
	keepAttn := fs.Bool("keep-attention", false, "leave each self-attention block as exported (its projections quantized one by one) instead of one com.microsoft QAttention")
	check := fs.String("check", "", "job (JSON or msgpack file) for the agreement check (default: a built-in synthetic job)")
	checkN := fs.Int("check-candidates", 200, "candidates of the built-in check job (0: no check)")
	var mf modelFlags
	mf.registerRuntime(fs)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *in == "" || *out == "" {
		return &exitError{2, fmt.Errorf("--in and --out are required")}
	}
	opts := quantize.Options{Granularity: quantize.Granularity(*gran), Activations: quantize.Activations(*acts), Smooth: *smooth, KeepEdgeLayers: *edges, MinColumns: *minCols, KeepAttention: *keepAttn}
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
	// The runtime, opened for the calibration, stays open for the agreement
	// check; a per-batch rewrite without a check needs none.
	if opts.Activations == quantize.Static || *check != "" || *checkN > 0 {
		rt, err := model.OpenRuntime(mf.ortLib)
		if err != nil {
			return fmt.Errorf("opening ONNX Runtime: %w", err)
		}
		defer rt.Close()
		if err := calibrateRanges(ctx, rt, &mf, *in, *calib, *calibN, &opts); err != nil {
			return err
		}
	}
	rep, _, err := quantize.Dir(*in, *out, opts)
	if err != nil {
		return err
	}
	graph := ""
	if fi, err := os.Stat(filepath.Join(*out, "model.onnx")); err == nil {
		graph = fmt.Sprintf(" (model.onnx %s: embeddings and the weights kept stay fp32)", eval.FormatBytes(fi.Size()))
	}
	fmt.Fprintf(stdout, "quantized %d nodes to int8 (%s weights, %s activations), kept %d in fp32; their weights %s → %s%s; wrote %s in %s\n",
		len(rep.Quantized), opts.Granularity, opts.Activations, len(rep.Kept), eval.FormatBytes(rep.WeightBytes[0]), eval.FormatBytes(rep.WeightBytes[1]), graph,
		*out, time.Since(start).Round(time.Millisecond))
	if !opts.KeepAttention && rep.Softmaxes > 0 {
		fmt.Fprintf(stdout, "fused %d of %d self-attention blocks (Softmax nodes) into QAttention", rep.Attentions, rep.Softmaxes)
		if rep.Attentions < rep.Softmaxes {
			fmt.Fprint(stdout, "; the others keep their exported form (docs/operations.md, \"int8 models\")")
		}
		fmt.Fprintln(stdout)
	}
	if opts.Activations == quantize.Static {
		fmt.Fprintf(stdout, "calibrated on %s; smoothed %d activations, corrected %d biases\n", opts.Calibration, rep.Smoothed, rep.Corrected)
	}
	for _, k := range rep.Kept {
		fmt.Fprintf(stdout, "  fp32: %s\n", k)
	}

	var job *schemas.Job
	switch {
	case *check != "":
		if job, err = readJobFile(*check, "check"); err != nil {
			return err
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

// calibrateRanges measures opts' static activation ranges on the fp32
// model in, over the job in file calib (else a synthetic job of calibN
// candidates); per-batch activations need none.
func calibrateRanges(ctx context.Context, rt *model.Runtime, mf *modelFlags, in, calib string, calibN int, opts *quantize.Options) error {
	if opts.Activations != quantize.Static {
		return nil
	}
	job, src := (*schemas.Job)(nil), "built-in synthetic job"
	if calib != "" {
		var err error
		if job, err = readJobFile(calib, "calibration"); err != nil {
			return err
		}
		src = calib
	} else {
		if calibN < 1 {
			return &exitError{2, fmt.Errorf("--calibration-candidates %d: want at least 1", calibN)}
		}
		// Not the check job's seed: agreement is measured on other pairs.
		job = eval.SyntheticJob(rand.New(rand.NewPCG(11, 11)), "quantize-calibration", calibN, 60)
	}
	mopts, err := mf.options(1)
	if err != nil {
		return &exitError{2, err}
	}
	if opts.Ranges, err = calibrate.Ranges(ctx, rt, in, *opts, mopts, job); err != nil {
		return err
	}
	opts.Calibration = fmt.Sprintf("%s, %d candidates", src, len(job.Candidates))
	return nil
}

// readJobFile reads the job in file (JSON or msgpack) for what.
func readJobFile(file, what string) (*schemas.Job, error) {
	data, src, err := readInput([]string{file}, nil)
	if err != nil {
		return nil, &exitError{2, fmt.Errorf("reading the %s job: %w", what, err)}
	}
	job, _, err := decodeJobInput(data, schemas.Limits{})
	if err != nil {
		return nil, codedExit(fmt.Errorf("%s job from %s: %w", what, src, err))
	}
	return job, nil
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
