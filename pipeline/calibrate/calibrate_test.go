package calibrate_test

import (
	"context"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/rerank/rerank/eval"
	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/quantize"
	"github.com/rerank/rerank/pipeline/calibrate"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testfixture.Cleanup(false)
	os.Exit(code)
}

// TestRangesCoverEveryQuantizedInput: one range per activation Graph
// quantizes, each with a row per token of the job (the same count for all
// of them), channel figures inside the overall range, and a range wide
// enough to be an activation's (LayerNorm outputs span about ±2 or more).
func TestRangesCoverEveryQuantizedInput(t *testing.T) {
	rt, err := model.OpenRuntime(testenv.ORTLib(t))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	dir := testfixture.TinyModel(t)
	job := eval.SyntheticJob(rand.New(rand.NewPCG(1, 1)), "calibration", 12, 30)
	opts := quantize.DefaultOptions()
	ranges, err := calibrate.Ranges(context.Background(), rt, dir, opts, model.Options{}, job)
	if err != nil {
		t.Fatal(err)
	}
	graph, _, err := quantize.ReadGraph(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, names, err := quantize.Observe(graph, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(ranges) != len(names) || len(names) != 8 {
		t.Fatalf("%d ranges for %d names", len(ranges), len(names))
	}
	rows := ranges[names[0]].Rows
	if rows < 12*10 {
		t.Fatalf("%d rows for 12 pairs of 30-word passages", rows)
	}
	for _, n := range names {
		r, ok := ranges[n]
		if !ok || r.Rows != rows {
			t.Fatalf("%s: %+v (want %d rows)", n, r.Rows, rows)
		}
		if r.Max-r.Min < 2 || len(r.ChannelMin) < 32 || len(r.ChannelMin) != len(r.ChannelMax) || len(r.ChannelMean) != len(r.ChannelMin) {
			t.Fatalf("%s: range [%v, %v], %d channels", n, r.Min, r.Max, len(r.ChannelMin))
		}
		lo, hi := r.ChannelMin[0], r.ChannelMax[0]
		for c := range r.ChannelMin {
			if !(r.Min <= r.ChannelMin[c] && float64(r.ChannelMin[c]) <= r.ChannelMean[c] && r.ChannelMean[c] <= float64(r.ChannelMax[c]) && r.ChannelMax[c] <= r.Max) {
				t.Fatalf("%s channel %d: min %v mean %v max %v outside [%v, %v]", n, c, r.ChannelMin[c], r.ChannelMean[c], r.ChannelMax[c], r.Min, r.Max)
			}
			lo, hi = min(lo, r.ChannelMin[c]), max(hi, r.ChannelMax[c])
		}
		if lo != r.Min || hi != r.Max {
			t.Fatalf("%s: range [%v, %v], channels span [%v, %v]", n, r.Min, r.Max, lo, hi)
		}
	}
	// Not a model directory.
	if _, err := calibrate.Ranges(context.Background(), rt, t.TempDir(), opts, model.Options{}, job); err == nil {
		t.Fatal("calibrated an empty directory")
	}
}
