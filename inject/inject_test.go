package inject_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/schemas"
)

func f64(v float64) *float64 { return &v }

func jobWith(bm25 ...float64) *schemas.Job {
	j := &schemas.Job{ID: "j", Query: "what is x"}
	for i, s := range bm25 {
		j.Candidates = append(j.Candidates, schemas.Candidate{ID: string(rune('a' + i)), Text: "passage " + string(rune('a'+i)), BM25: f64(s)})
	}
	return j
}

func renderA(t *testing.T, cfg *inject.Config, j *schemas.Job) []string {
	t.Helper()
	pairs, err := cfg.Render(j)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.A
	}
	return out
}

// Values computed by hand (and with Python: int(((s - 0) / (50 - 0)) * 100)).
func TestBM25PresetTruncatesLikePython(t *testing.T) {
	cfg, err := inject.Preset("all-MiniLM-L12-v3-bm25")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		bm25 float64
		want string
	}{
		{14.35, "28 [SEP] what is x"}, // 28.699999999999996
		{250, "500 [SEP] what is x"},  // no clipping
		{0, "0 [SEP] what is x"},
		{-5, "-10 [SEP] what is x"},
		{-0.2, "0 [SEP] what is x"}, // int(-0.4) == 0
		{49.99, "99 [SEP] what is x"},
		{50, "100 [SEP] what is x"},
		{98.4, "196 [SEP] what is x"},
		{0.004, "0 [SEP] what is x"},
		{1e300, ""}, // checked below: Python prints the exact integer, 301 digits
	}
	for _, tt := range tests {
		got := renderA(t, cfg, jobWith(tt.bm25))[0]
		if tt.bm25 == 1e300 {
			// int(1e300 / 50 * 100) in Python is the exact integer value of the float 2e300.
			want := strings.Split(got, " ")[0]
			if len(want) != 301 || want[0] != '2' {
				t.Errorf("bm25 1e300: got %.40s... (%d digits)", want, len(want))
			}
			continue
		}
		if got != tt.want {
			t.Errorf("bm25 %v: got %q, want %q", tt.bm25, got, tt.want)
		}
	}
}

func TestPresetTemplates(t *testing.T) {
	j := jobWith(14.35)
	j.Candidates[0].DPR = f64(75)
	dprOverride := []byte(`{"scores":{"dpr":{"min":60,"max":90}}}`)
	tests := []struct {
		preset    string
		overrides []byte
		a, b      string
	}{
		{"all-MiniLM-L12-v2.1-bm25added", nil, "what is x", "passage a"},
		{"ms-marco-MiniLM", nil, "what is x", "passage a"},
		{"all-MiniLM-L12-v3-bm25", nil, "28 [SEP] what is x", "passage a"},
		{"bm25cat-paper", nil, "what is x [SEP] 28", "passage a"},
		{"all-MiniLM-L12-v3-dpr", dprOverride, "50 [SEP] what is x", "passage a"},
		{"all-MiniLM-L12-v3-bm25dpr", dprOverride, "28 [SEP] 50 [SEP] what is x", "passage a"},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			cfg, err := inject.Resolve(tt.preset, tt.overrides)
			if err != nil {
				t.Fatal(err)
			}
			pairs, err := cfg.Render(j)
			if err != nil {
				t.Fatal(err)
			}
			if pairs[0].A != tt.a || pairs[0].B != tt.b {
				t.Fatalf("got (%q, %q), want (%q, %q)", pairs[0].A, pairs[0].B, tt.a, tt.b)
			}
		})
	}
}

func TestNormalizations(t *testing.T) {
	tests := []struct {
		name string
		spec inject.ScoreSpec
		raw  []float64
		want []string
	}{
		{"none int", inject.ScoreSpec{Normalization: inject.None, Format: inject.Int}, []float64{12.9, -3.7, 0}, []string{"12", "-3", "0"}},
		{"none float", inject.ScoreSpec{Normalization: inject.None, Format: inject.Float, Decimals: 2}, []float64{0.125, 2.675, -0.001}, []string{"0.12", "2.67", "-0.00"}},
		{"global minmax float", inject.ScoreSpec{Normalization: inject.GlobalMinMax, Min: f64(0), Max: f64(50), Format: inject.Float, Decimals: 1}, []float64{14.35, 25}, []string{"28.7", "50.0"}},
		{"local minmax", inject.ScoreSpec{Normalization: inject.LocalMinMax, Format: inject.Int}, []float64{1, 2, 3}, []string{"0", "50", "100"}},
		{"local minmax zero range", inject.ScoreSpec{Normalization: inject.LocalMinMax, Format: inject.Int}, []float64{5, 5}, []string{"0", "0"}},
		{"global zscore", inject.ScoreSpec{Normalization: inject.GlobalZScore, Mean: f64(10), Std: f64(5), Format: inject.Float, Decimals: 2}, []float64{20, 0, 10}, []string{"2.00", "-2.00", "0.00"}},
		{"local zscore", inject.ScoreSpec{Normalization: inject.LocalZScore, Format: inject.Float, Decimals: 2}, []float64{1, 2, 3}, []string{"-1.22", "0.00", "1.22"}},
		{"local zscore zero std", inject.ScoreSpec{Normalization: inject.LocalZScore, Format: inject.Int}, []float64{7, 7, 7}, []string{"0", "0", "0"}},
		{"sum", inject.ScoreSpec{Normalization: inject.Sum, Format: inject.Int}, []float64{1, 1, 2}, []string{"25", "25", "50"}},
		{"sum zero", inject.ScoreSpec{Normalization: inject.Sum, Format: inject.Int}, []float64{1, -1}, []string{"0", "0"}},
		{"explicit scale", inject.ScoreSpec{Normalization: inject.GlobalMinMax, Min: f64(0), Max: f64(50), Scale: f64(10), Format: inject.Int}, []float64{14.35}, []string{"2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, v := range tt.spec.Normalize(tt.raw) {
				got = append(got, tt.spec.FormatValue(v))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMissingScoreNamesCandidate(t *testing.T) {
	cfg, _ := inject.Preset("all-MiniLM-L12-v3-bm25")
	j := jobWith(1, 2, 3)
	j.Candidates[1].BM25 = nil
	_, err := cfg.Render(j)
	if !errors.Is(err, schemas.ErrMissingScore) {
		t.Fatalf("got %v, want missing_score", err)
	}
	ce := schemas.AsError(err)
	if ce.Candidate == nil || ce.Candidate.Index != 1 || ce.Candidate.ID != "b" {
		t.Fatalf("candidate = %+v, want index 1 id b", ce.Candidate)
	}
	// A plain preset does not need the score.
	plain, _ := inject.Preset("ms-marco-MiniLM")
	if _, err := plain.Render(j); err != nil {
		t.Fatalf("plain preset: %v", err)
	}
	// Non-finite scores never reach the text.
	j.Candidates[1].BM25 = f64(math.NaN())
	if _, err := cfg.Render(j); !errors.Is(err, schemas.ErrNonFiniteScore) {
		t.Fatalf("NaN: got %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name      string
		preset    string
		overrides string
		want      error
		mention   string
	}{
		{"unknown preset", "nope", "", inject.ErrUnknownPreset, "nope"},
		{"dpr without range", "all-MiniLM-L12-v3-dpr", "", inject.ErrInvalidConfig, "min and max"},
		{"bm25dpr without range", "all-MiniLM-L12-v3-bm25dpr", `{"scores":{"dpr":{"min":1}}}`, inject.ErrInvalidConfig, "min and max"},
		{"unknown placeholder", "", `{"text_a":"{score} {query}"}`, inject.ErrInvalidConfig, "{score}"},
		{"no query", "", `{"text_a":"{passage}","text_b":"x"}`, inject.ErrInvalidConfig, "{query}"},
		{"score without spec", "", `{"text_a":"{bm25} {query}"}`, inject.ErrInvalidConfig, "scores.bm25"},
		{"bad normalization", "all-MiniLM-L12-v3-bm25", `{"scores":{"bm25":{"normalization":"log"}}}`, inject.ErrInvalidConfig, "log"},
		{"bad format", "all-MiniLM-L12-v3-bm25", `{"scores":{"bm25":{"format":"hex"}}}`, inject.ErrInvalidConfig, "hex"},
		{"inverted range", "all-MiniLM-L12-v3-bm25", `{"scores":{"bm25":{"min":50,"max":0}}}`, inject.ErrInvalidConfig, "max > min"},
		{"zero std", "", `{"text_a":"{bm25} {query}","scores":{"bm25":{"normalization":"global_zscore","mean":1,"std":0,"format":"int"}}}`, inject.ErrInvalidConfig, "std"},
		{"bad json", "", `{`, inject.ErrInvalidConfig, "parsing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := inject.Resolve(tt.preset, []byte(tt.overrides))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("error %q does not mention %q", err, tt.mention)
			}
		})
	}
}

// rerank.json may override any field and names the preset itself.
func TestResolveOverridesMergeFieldByField(t *testing.T) {
	cfg, err := inject.Resolve("", []byte(`{"name":"mine","max_length":256,"preset":"all-MiniLM-L12-v3-bm25","scores":{"bm25":{"max":25}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Preset != "all-MiniLM-L12-v3-bm25" || *cfg.Scores.BM25.Min != 0 || *cfg.Scores.BM25.Max != 25 || cfg.Scores.BM25.Format != inject.Int {
		t.Fatalf("merged config wrong: %+v %+v", cfg, cfg.Scores.BM25)
	}
	if got := renderA(t, cfg, jobWith(14.35))[0]; got != "57 [SEP] what is x" { // 14.35/25*100 = 57.4
		t.Fatalf("got %q", got)
	}
	// No preset and no templates: a plain cross-encoder.
	cfg, err = inject.Resolve("", []byte(`{"name":"plain"}`))
	if err != nil || cfg.Preset != inject.DefaultPreset {
		t.Fatalf("default preset: %v %+v", err, cfg)
	}
}
