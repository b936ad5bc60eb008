package inject_test

import (
	"math"
	"strconv"
	"testing"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/schemas"
)

// FuzzFormat checks that normalizing and formatting any finite scores under
// any normalization never panics, and that Int output parses back as an
// integer that is the truncation of the value.
func FuzzFormat(f *testing.F) {
	f.Add(14.35, 0.0, 250.0, uint8(0), uint8(0), uint8(2))
	f.Add(-1e300, 1e300, 5.0, uint8(2), uint8(1), uint8(20))
	f.Fuzz(func(t *testing.T, a, b, c float64, norm, format, decimals uint8) {
		for _, v := range []float64{a, b, c} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return
			}
		}
		norms := []inject.Normalization{inject.None, inject.GlobalMinMax, inject.LocalMinMax, inject.GlobalZScore, inject.LocalZScore, inject.Sum}
		spec := inject.ScoreSpec{Normalization: norms[int(norm)%len(norms)], Min: f64(0), Max: f64(50), Mean: f64(1), Std: f64(2), Format: inject.Int}
		if format%2 == 1 {
			spec.Format, spec.Decimals = inject.Float, int(decimals%21)
		}
		preset, _ := inject.Preset("all-MiniLM-L12-v3-bm25")
		preset.Scores.BM25 = &spec
		if err := preset.Validate(); err != nil {
			t.Fatal(err)
		}
		job := &schemas.Job{ID: "j", Query: "q", Candidates: []schemas.Candidate{
			{ID: "a", Text: "x", BM25: f64(a)}, {ID: "b", Text: "y", BM25: f64(b)}, {ID: "c", Text: "z", BM25: f64(c)}}}
		if _, err := preset.Render(job); err != nil {
			t.Fatalf("Render: %v", err)
		}
		for _, v := range spec.Normalize([]float64{a, b, c}) {
			s := spec.FormatValue(v)
			if spec.Format == inject.Int && !math.IsNaN(v) && !math.IsInf(v, 0) {
				got, err := strconv.ParseFloat(s, 64)
				if err != nil || got != math.Trunc(v) {
					t.Fatalf("FormatValue(%v) = %q", v, s)
				}
			}
		}
	})
}
