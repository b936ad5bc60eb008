package model_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rerank/rerank/eval"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/quantize"
	"github.com/rerank/rerank/pipeline/calibrate"
)

// TestQuantizedModelServes: `rerank quantize`'s output loads like any model
// directory, scores close to its fp32 original, and scores a pair the same
// whatever else is in its call: static int8 (calibrated) in batches like
// fp32, per-batch int8 one pair per run. A transformers.js-style directory
// with only onnx/model_quantized.onnx loads as it is.
func TestQuantizedModelServes(t *testing.T) {
	rt, tiny := fixture(t)
	for _, acts := range []quantize.Activations{quantize.Static, quantize.PerBatch} {
		t.Run(string(acts), func(t *testing.T) { testQuantizedModelServes(t, rt, tiny, acts) })
	}
}

func testQuantizedModelServes(t *testing.T, rt *model.Runtime, tiny string, acts quantize.Activations) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "int8")
	opts := quantize.DefaultOptions()
	opts.Activations = acts
	if acts == quantize.Static {
		job := eval.SyntheticJob(rand.New(rand.NewPCG(3, 3)), "calibration", 30, 40)
		var err error
		if opts.Ranges, err = calibrate.Ranges(ctx, rt, tiny, opts, model.Options{}, job); err != nil {
			t.Fatal(err)
		}
	}
	rep, info, err := quantize.Dir(tiny, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Quantized) != 12 || info.Type != "int8" || info.Activations != acts || info.SourceSHA == "" {
		t.Fatalf("report %+v, info %+v", rep, info)
	}
	q, err := rt.Load(dir, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	perBatch := acts == quantize.PerBatch
	if q.FusedNorms() != 4 || !q.WeightsMapped() {
		t.Fatalf("fused %d norms, weights mapped %v: the int8 graph was not prepared", q.FusedNorms(), q.WeightsMapped())
	}
	if q.DynamicallyQuantized() != perBatch || perBatch != (q.Options().MaxBatchSize == 1) {
		t.Fatalf("dynamically quantized %v, max batch size %d", q.DynamicallyQuantized(), q.Options().MaxBatchSize)
	}
	fp := load(t, model.Options{})
	if fp.DynamicallyQuantized() || fp.Options().MaxBatchSize != model.DefaultMaxBatchSize {
		t.Fatal("the fp32 model is taken for a quantized one")
	}
	pairs := mixedPairs(40, 5)
	want := score(t, fp, pairs)
	got, st, err := q.Score(ctx, pairs)
	if err != nil {
		t.Fatal(err)
	}
	if perBatch && st.Batches != 40 || !perBatch && st.Batches >= 20 {
		t.Fatalf("%d runs for 40 pairs (per batch: one each; static: batches of up to 16 like lengths)", st.Batches)
	}
	var maxDiff, spread float64
	for i := range got {
		maxDiff = max(maxDiff, math.Abs(float64(got[i]-want[i])))
		spread = max(spread, math.Abs(float64(want[i]-want[0])))
		alone, _, err := q.Score(ctx, pairs[i:i+1])
		if err != nil {
			t.Fatal(err)
		}
		if d := math.Abs(float64(alone[0] - got[i])); d > 1e-4 {
			t.Errorf("pair %d: alone %v, among 40 %v", i, alone[0], got[i])
		}
	}
	t.Logf("max |int8 − fp32| %.4g, score spread %.4g", maxDiff, spread)
	// int8 is close to fp32: within a tenth of the scores' spread.
	if maxDiff > spread/10 || maxDiff == 0 {
		t.Fatalf("max |int8 − fp32| = %g for a score spread of %g", maxDiff, spread)
	}

	if !perBatch {
		return
	}
	// transformers.js layout: onnx/model_quantized.onnx and the tokenizer
	// (its int8 graphs are quantize_dynamic's, per batch).
	js := t.TempDir()
	if err := os.MkdirAll(filepath.Join(js, "onnx"), 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{"model.onnx": model.QuantizedModelFile, model.TokenizerFile: model.TokenizerFile, model.HFConfigFile: model.HFConfigFile} {
		if err := os.Link(filepath.Join(dir, src), filepath.Join(js, dst)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := rt.Load(js, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	again, _, err := m.Score(ctx, pairs[:3])
	if err != nil || !m.DynamicallyQuantized() || m.Positions() != 512 {
		t.Fatalf("err %v, quantized %v, positions %d", err, m.DynamicallyQuantized(), m.Positions())
	}
	for i := range again {
		if again[i] != got[i] {
			t.Fatalf("pair %d: %v from onnx/model_quantized.onnx, %v from model.onnx", i, again[i], got[i])
		}
	}
}

// TestFusedAttentionScoresAsTheUnfusedGraph: QAttention (the default) runs
// the same integer products as the three separate projections and the same
// float attention, padding masked out: scores of pairs of mixed lengths in
// batches agree with the unfused int8 graph's to float rounding (static or
// per-batch activations, per-column or per-tensor weight scales), and a
// padded pair scores as it does alone.
func TestFusedAttentionScoresAsTheUnfusedGraph(t *testing.T) {
	rt, tiny := fixture(t)
	ctx := context.Background()
	base := quantize.DefaultOptions()
	job := eval.SyntheticJob(rand.New(rand.NewPCG(5, 5)), "calibration", 30, 40)
	ranges, err := calibrate.Ranges(ctx, rt, tiny, base, model.Options{}, job)
	if err != nil {
		t.Fatal(err)
	}
	pairs := mixedPairs(40, 9)
	for _, tc := range []struct {
		acts quantize.Activations
		gran quantize.Granularity
	}{
		{quantize.Static, quantize.PerChannel},
		{quantize.Static, quantize.PerTensor},
		{quantize.PerBatch, quantize.PerChannel},
	} {
		t.Run(string(tc.acts)+"/"+string(tc.gran), func(t *testing.T) {
			opts := base
			opts.Activations, opts.Granularity = tc.acts, tc.gran
			if tc.acts == quantize.Static {
				opts.Ranges = ranges
			}
			var scores [2][]float32
			for k, keep := range []bool{false, true} {
				o := opts
				o.KeepAttention = keep
				dir := filepath.Join(t.TempDir(), "int8")
				rep, info, err := quantize.Dir(tiny, dir, o)
				if err != nil {
					t.Fatal(err)
				}
				if want := map[bool]int{false: 2, true: 0}[keep]; rep.Attentions != want || info.Attentions != want || rep.Softmaxes != 2 {
					t.Fatalf("keep attention %v: %d of %d attentions fused, %d recorded", keep, rep.Attentions, rep.Softmaxes, info.Attentions)
				}
				q, err := rt.Load(dir, model.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer q.Close()
				scores[k] = score(t, q, pairs)
				if !keep && tc.acts == quantize.Static {
					// Padding masked: a pair scores alone as among others.
					for _, i := range []int{0, 17, 39} {
						alone := score(t, q, pairs[i:i+1])
						if d := math.Abs(float64(alone[0] - scores[k][i])); d > 1e-4 {
							t.Errorf("fused: pair %d alone %v, among 40 %v", i, alone[0], scores[k][i])
						}
					}
				}
			}
			var maxDiff float64
			for i := range pairs {
				maxDiff = max(maxDiff, math.Abs(float64(scores[0][i]-scores[1][i])))
			}
			t.Logf("max |fused − unfused| %.3g", maxDiff)
			if maxDiff > 1e-4 {
				t.Fatalf("max |fused − unfused| = %g", maxDiff)
			}
		})
	}
}
