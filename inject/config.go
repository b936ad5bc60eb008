package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sentinel errors for configuration problems.
var (
	ErrUnknownPreset = errors.New("unknown preset")
	ErrInvalidConfig = errors.New("invalid injection config")
)

// Normalization names how a raw first-stage score is mapped before scaling.
type Normalization string

// The supported normalizations.
const (
	None         Normalization = "none"
	GlobalMinMax Normalization = "global_minmax" // (s - min) / (max - min), min and max from the config
	LocalMinMax  Normalization = "local_minmax"  // min and max over the job's candidates
	GlobalZScore Normalization = "global_zscore" // (s - mean) / std, from the config
	LocalZScore  Normalization = "local_zscore"  // mean and population std over the job's candidates
	Sum          Normalization = "sum"           // s / sum of the job's scores
)

// Format names how a normalized, scaled score is written as text.
type Format string

// The supported formats.
const (
	// Int truncates toward zero, exactly as Python's int() does.
	Int Format = "int"
	// Float writes Decimals digits after the point, as Python's f"{x:.{d}f}".
	Float Format = "float"
)

// ScoreSpec says how one first-stage score is injected.
type ScoreSpec struct {
	Normalization Normalization `json:"normalization"`
	Min           *float64      `json:"min,omitempty"`
	Max           *float64      `json:"max,omitempty"`
	Mean          *float64      `json:"mean,omitempty"`
	Std           *float64      `json:"std,omitempty"`
	// Scale multiplies the normalized value. Nil means 100 for the min-max
	// and sum normalizations and 1 for none and the z-scores.
	Scale    *float64 `json:"scale,omitempty"`
	Format   Format   `json:"format"`
	Decimals int      `json:"decimals,omitempty"`
}

// Scores holds the spec of each injectable score; nil means not injected.
type Scores struct {
	BM25 *ScoreSpec `json:"bm25,omitempty"`
	DPR  *ScoreSpec `json:"dpr,omitempty"`
}

// Config is a model's input format.
type Config struct {
	Preset string `json:"preset,omitempty"`
	// TextA and TextB are templates over {query}, {passage}, {bm25} and
	// {dpr}. A literal [SEP] stays literal text; the tokenizer turns it into
	// the special token.
	TextA  string `json:"text_a"`
	TextB  string `json:"text_b"`
	Scores Scores `json:"scores"`

	a, b template // compiled by Prepare
}

// DefaultPreset is used when a config names no preset and no templates: a
// plain cross-encoder that reads (query, passage).
const DefaultPreset = "ms-marco-MiniLM"

func f64(v float64) *float64 { return &v }

func bm25Spec() *ScoreSpec {
	return &ScoreSpec{Normalization: GlobalMinMax, Min: f64(0), Max: f64(50), Scale: f64(100), Format: Int}
}

// dprSpec has no min/max on purpose: the DPR range depends on the retriever
// the model was trained with, so the model's rerank.json must give it.
func dprSpec() *ScoreSpec {
	return &ScoreSpec{Normalization: GlobalMinMax, Scale: f64(100), Format: Int}
}

var presets = map[string]func() Config{
	"all-MiniLM-L12-v2.1-bm25added": func() Config { return Config{TextA: "{query}", TextB: "{passage}"} },
	"ms-marco-MiniLM":               func() Config { return Config{TextA: "{query}", TextB: "{passage}"} },
	"all-MiniLM-L12-v3-bm25": func() Config {
		return Config{TextA: "{bm25} [SEP] {query}", TextB: "{passage}", Scores: Scores{BM25: bm25Spec()}}
	},
	"bm25cat-paper": func() Config {
		return Config{TextA: "{query} [SEP] {bm25}", TextB: "{passage}", Scores: Scores{BM25: bm25Spec()}}
	},
	"all-MiniLM-L12-v3-dpr": func() Config {
		return Config{TextA: "{dpr} [SEP] {query}", TextB: "{passage}", Scores: Scores{DPR: dprSpec()}}
	},
	"all-MiniLM-L12-v3-bm25dpr": func() Config {
		return Config{TextA: "{bm25} [SEP] {dpr} [SEP] {query}", TextB: "{passage}", Scores: Scores{BM25: bm25Spec(), DPR: dprSpec()}}
	},
}

// Presets lists the preset names.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns the full config of a named preset, validated. The dpr
// presets fail validation until min and max are given: use Resolve with a
// rerank.json that sets them.
func Preset(name string) (*Config, error) {
	return Resolve(name, nil)
}

// Resolve builds a model's config: the preset named by overrides' "preset"
// field (else by preset, else DefaultPreset), with every field that
// overrides (the model's rerank.json) sets laid over it, then validated.
// Unknown fields in overrides are ignored, so a whole rerank.json can be passed.
func Resolve(preset string, overrides []byte) (*Config, error) {
	var head struct {
		Preset string `json:"preset"`
	}
	overrides = bytes.TrimSpace(overrides)
	if len(overrides) > 0 {
		if err := json.Unmarshal(overrides, &head); err != nil {
			return nil, fmt.Errorf("%w: parsing overrides: %w", ErrInvalidConfig, err)
		}
		if head.Preset != "" {
			preset = head.Preset
		}
	}
	if preset == "" {
		preset = DefaultPreset
	}
	mk, ok := presets[preset]
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownPreset, preset, strings.Join(Presets(), ", "))
	}
	cfg := mk()
	if len(overrides) > 0 {
		if err := json.Unmarshal(overrides, &cfg); err != nil {
			return nil, fmt.Errorf("%w: parsing overrides: %w", ErrInvalidConfig, err)
		}
	}
	cfg.Preset = preset
	if err := cfg.Prepare(); err != nil {
		return nil, fmt.Errorf("preset %s: %w", preset, err)
	}
	return &cfg, nil
}

// Validate reports every problem of the config at once (errors joined,
// each wrapping ErrInvalidConfig); it changes nothing.
func (c *Config) Validate() error {
	_, _, err := c.check()
	return err
}

// Prepare validates the config and compiles its templates, as Resolve
// and Preset do: a Config built by hand needs it before Render.
func (c *Config) Prepare() error {
	a, b, err := c.check()
	if err != nil {
		return err
	}
	c.a, c.b = a, b
	return nil
}

// check validates the config and returns its compiled templates.
func (c *Config) check() (a, b template, err error) {
	var errs []error
	a, errA := compile(c.TextA)
	if errA != nil {
		errs = append(errs, fmt.Errorf("%w: text_a: %w", ErrInvalidConfig, errA))
	}
	b, errB := compile(c.TextB)
	if errB != nil {
		errs = append(errs, fmt.Errorf("%w: text_b: %w", ErrInvalidConfig, errB))
	}
	if errA == nil && errB == nil {
		if !a.uses(fieldQuery) && !b.uses(fieldQuery) {
			errs = append(errs, fmt.Errorf("%w: neither template uses {query}", ErrInvalidConfig))
		}
		if !a.uses(fieldPassage) && !b.uses(fieldPassage) {
			errs = append(errs, fmt.Errorf("%w: neither template uses {passage}", ErrInvalidConfig))
		}
	}
	for _, s := range []struct {
		name string
		f    field
		spec *ScoreSpec
	}{{"bm25", fieldBM25, c.Scores.BM25}, {"dpr", fieldDPR, c.Scores.DPR}} {
		if (a.uses(s.f) || b.uses(s.f)) && s.spec == nil {
			errs = append(errs, fmt.Errorf("%w: a template uses {%s} but scores.%s is not configured", ErrInvalidConfig, s.name, s.name))
		}
		if s.spec != nil {
			if err := s.spec.validate(); err != nil {
				errs = append(errs, fmt.Errorf("%w: scores.%s: %w", ErrInvalidConfig, s.name, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return template{}, template{}, err
	}
	return a, b, nil
}

func (s *ScoreSpec) validate() error {
	switch s.Normalization {
	case None, LocalMinMax, LocalZScore, Sum:
	case GlobalMinMax:
		if s.Min == nil || s.Max == nil {
			return fmt.Errorf("global_minmax needs min and max (the score range the model was trained with)")
		}
		if !(*s.Max > *s.Min) {
			return fmt.Errorf("global_minmax needs max > min, got min %v max %v", *s.Min, *s.Max)
		}
	case GlobalZScore:
		if s.Mean == nil || s.Std == nil {
			return fmt.Errorf("global_zscore needs mean and std")
		}
		if !(*s.Std > 0) {
			return fmt.Errorf("global_zscore needs std > 0, got %v", *s.Std)
		}
	case "":
		return fmt.Errorf("normalization is required (one of none, global_minmax, local_minmax, global_zscore, local_zscore, sum)")
	default:
		return fmt.Errorf("unknown normalization %q", s.Normalization)
	}
	switch s.Format {
	case Int:
	case Float:
		if s.Decimals < 0 || s.Decimals > 20 {
			return fmt.Errorf("decimals must be 0..20, got %d", s.Decimals)
		}
	case "":
		return fmt.Errorf("format is required (int or float)")
	default:
		return fmt.Errorf("unknown format %q", s.Format)
	}
	if s.Scale != nil && (*s.Scale != *s.Scale || *s.Scale == 0) {
		return fmt.Errorf("scale must be a non-zero number")
	}
	return nil
}

func (s *ScoreSpec) scale() float64 {
	if s.Scale != nil {
		return *s.Scale
	}
	switch s.Normalization {
	case GlobalMinMax, LocalMinMax, Sum:
		return 100
	}
	return 1
}

// NeedsBM25 reports whether the templates write the BM25 score.
func (c *Config) NeedsBM25() bool { return c.a.uses(fieldBM25) || c.b.uses(fieldBM25) }

// NeedsDPR reports whether the templates write the DPR score.
func (c *Config) NeedsDPR() bool { return c.a.uses(fieldDPR) || c.b.uses(fieldDPR) }
