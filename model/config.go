package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// Files of a model directory.
const (
	ModelFile     = "model.onnx"
	TokenizerFile = "tokenizer.json"
	ConfigFile    = "rerank.json"
)

// Sentinel errors of this package.
var (
	ErrInvalidConfig     = errors.New("invalid model config")
	ErrModelMismatch     = errors.New("model graph does not match the expected interface")
	ErrRuntimeMissing    = errors.New("ONNX Runtime library not found")
	ErrDeviceUnavailable = errors.New("execution device unavailable")
	ErrClosed            = errors.New("model is closed")
)

// OutputConfig maps the graph's output to one score per pair.
type OutputConfig struct {
	// Name of the graph output; empty means "logits", else the only output.
	Name string `json:"name,omitempty"`
	// Logit is the column of a [batch, K] output to read. Nil means 0 for a
	// single-logit model and 1 (the "relevant" class) for a two-logit model.
	Logit *int `json:"logit,omitempty"`
	// Sigmoid maps the logit to (0, 1).
	Sigmoid bool `json:"sigmoid,omitempty"`
}

// Config is the model part of a model directory's rerank.json. The same file
// also holds the injection config (preset, templates, scores), which the
// inject package reads; Raw keeps the whole file for it.
type Config struct {
	Name       string       `json:"name"`
	MaxLength  int          `json:"max_length,omitempty"`
	Truncation Truncation   `json:"truncation,omitempty"`
	Output     OutputConfig `json:"output"`

	// Raw is the whole rerank.json.
	Raw json.RawMessage `json:"-"`
}

// DefaultMaxLength is BERT's position limit.
const DefaultMaxLength = 512

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidName reports whether name can name a model: it becomes a NATS subject
// token and a durable consumer name, so only letters, digits, '-' and '_'.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// ReadConfig reads dir/rerank.json. A missing file gives the defaults with
// the directory's base name as the model name.
func ReadConfig(dir string) (Config, error) {
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		raw = []byte("{}")
	} else if err != nil {
		return Config{}, fmt.Errorf("reading %s: %w", ConfigFile, err)
	}
	cfg, err := ParseConfig(raw)
	if err != nil {
		return Config{}, fmt.Errorf("parsing %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	return cfg, nil
}

// ParseConfig parses rerank.json, applies defaults and validates.
func ParseConfig(raw []byte) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	cfg.Raw = append(json.RawMessage(nil), raw...)
	if cfg.MaxLength == 0 {
		cfg.MaxLength = DefaultMaxLength
	}
	if cfg.Truncation == "" {
		cfg.Truncation = LongestFirst
	}
	return cfg, cfg.Validate()
}

// Validate checks the config.
func (c *Config) Validate() error {
	if c.Name != "" && !ValidName(c.Name) {
		return fmt.Errorf("%w: name %q: use 1-64 letters, digits, '-' or '_'", ErrInvalidConfig, c.Name)
	}
	if c.MaxLength < 8 || c.MaxLength > 8192 {
		return fmt.Errorf("%w: max_length %d out of range 8..8192", ErrInvalidConfig, c.MaxLength)
	}
	if !c.Truncation.Valid() {
		return fmt.Errorf("%w: truncation %q: want %q or %q", ErrInvalidConfig, c.Truncation, LongestFirst, OnlySecond)
	}
	if c.Output.Logit != nil && *c.Output.Logit < 0 {
		return fmt.Errorf("%w: output.logit %d is negative", ErrInvalidConfig, *c.Output.Logit)
	}
	return nil
}
