package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/rerank/rerank/model/wordpiece"
)

// Files of a model directory: a Hugging Face ONNX export (optimum writes
// model.onnx at the root, transformers.js-style repositories onnx/model.onnx
// and onnx/model_quantized.onnx), with an optional rerank.json.
const (
	ModelFile           = "model.onnx"
	ExportModelFile     = "onnx/model.onnx"
	QuantizedModelFile  = "onnx/model_quantized.onnx"
	TokenizerFile       = "tokenizer.json"
	ConfigFile          = "rerank.json"
	HFConfigFile        = "config.json"
	TokenizerConfigFile = "tokenizer_config.json"
)

// Sentinel errors of this package.
var (
	ErrInvalidConfig     = errors.New("invalid model config")
	ErrModelMismatch     = errors.New("model graph does not match the expected interface")
	ErrRuntimeMissing    = errors.New("ONNX Runtime library not found")
	ErrDeviceUnavailable = errors.New("execution device unavailable")
	ErrClosed            = errors.New("model is closed")
)

// Activation maps a model's logits to the score of a pair.
type Activation string

// The supported activations.
const (
	// ActivationNone reads the logit itself.
	ActivationNone Activation = "none"
	// ActivationSigmoid is σ(logit), in (0, 1).
	ActivationSigmoid Activation = "sigmoid"
	// ActivationSoftmax is the softmax probability of the relevant class
	// (the column Logit names) over all the row's logits: for two logits,
	// σ(l1 − l0), which can order candidates differently from l1 alone.
	ActivationSoftmax Activation = "softmax"
)

// Valid reports whether a is a known activation ("" means the default).
func (a Activation) Valid() bool {
	switch a {
	case "", ActivationNone, ActivationSigmoid, ActivationSoftmax:
		return true
	}
	return false
}

// OutputConfig maps the graph's output to one score per pair.
type OutputConfig struct {
	// Name of the graph output; empty means "logits", else the only output.
	Name string `json:"name,omitempty"`
	// Logit is the column of a [batch, K] output to read. Nil means 0 for a
	// single-logit model and 1 (the "relevant" class) for a two-logit model.
	Logit *int `json:"logit,omitempty"`
	// Activation maps the logits to the score. Empty means what
	// sentence-transformers' CrossEncoder.predict would use for the export:
	// config.json's sentence_transformers.activation_fn when present, else
	// sigmoid for one label and softmax for two or more.
	Activation Activation `json:"activation,omitempty"`
	// Sigmoid is the older form: true means activation sigmoid, false none.
	Sigmoid *bool `json:"sigmoid,omitempty"`
}

// Config is the model part of a model directory's rerank.json. The same file
// also holds the injection config (preset, templates, scores), which the
// inject package reads; Raw keeps the whole file for it.
type Config struct {
	Name string `json:"name"`
	// ModelFile is the ONNX graph, relative to the model directory. Empty
	// means model.onnx, else onnx/model.onnx, else onnx/model_quantized.onnx.
	ModelFile  string               `json:"model_file,omitempty"`
	MaxLength  int                  `json:"max_length,omitempty"`
	Truncation wordpiece.Truncation `json:"truncation,omitempty"`
	Output     OutputConfig         `json:"output"`

	// Raw is the whole rerank.json ("{}" when there is none).
	Raw json.RawMessage `json:"-"`
	// Export is what the export's own files say.
	Export ExportInfo `json:"-"`
}

// ExportInfo is what a Hugging Face export says about the model in
// config.json and tokenizer_config.json; zero values mean not said.
type ExportInfo struct {
	MaxPositions   int    // config.json max_position_embeddings
	NumLabels      int    // config.json num_labels, else the size of id2label
	ActivationFn   string // config.json sentence_transformers.activation_fn
	ModelMaxLength int    // tokenizer_config.json model_max_length
}

// activation is the export's sentence-transformers activation_fn as an
// Activation, or "" when it names none this package knows.
func (e ExportInfo) activation() Activation {
	switch fn := strings.ToLower(e.ActivationFn); {
	case strings.HasSuffix(fn, ".sigmoid"):
		return ActivationSigmoid
	case strings.HasSuffix(fn, ".identity"):
		return ActivationNone
	case strings.HasSuffix(fn, ".softmax"):
		return ActivationSoftmax
	}
	return ""
}

// readExport reads config.json and tokenizer_config.json when present.
func readExport(dir string) (ExportInfo, error) {
	var info ExportInfo
	var hf struct {
		MaxPositions int               `json:"max_position_embeddings"`
		NumLabels    int               `json:"num_labels"`
		ID2Label     map[string]string `json:"id2label"`
		ST           struct {
			ActivationFn string `json:"activation_fn"`
		} `json:"sentence_transformers"`
	}
	if err := readOptionalJSON(filepath.Join(dir, HFConfigFile), &hf); err != nil {
		return info, err
	}
	info.MaxPositions, info.NumLabels, info.ActivationFn = hf.MaxPositions, hf.NumLabels, hf.ST.ActivationFn
	if info.NumLabels == 0 {
		info.NumLabels = len(hf.ID2Label)
	}
	var tc struct {
		ModelMaxLength float64 `json:"model_max_length"` // often 1e30: "no limit"
	}
	if err := readOptionalJSON(filepath.Join(dir, TokenizerConfigFile), &tc); err != nil {
		return info, err
	}
	if tc.ModelMaxLength > 0 && tc.ModelMaxLength < 1<<20 {
		info.ModelMaxLength = int(tc.ModelMaxLength)
	}
	return info, nil
}

func readOptionalJSON(path string, v any) error {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: parsing %s: %v", ErrInvalidConfig, path, err)
	}
	return nil
}

// DefaultMaxLength is BERT's position limit.
const DefaultMaxLength = 512

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidName reports whether name can name a model: it becomes a NATS subject
// token and a durable consumer name, so only letters, digits, '-' and '_'.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// ReadConfig reads a model directory's configuration: what the export
// says (config.json, tokenizer_config.json), overridden by rerank.json when
// there is one. Without rerank.json the name is the directory's base name,
// max_length the smallest of 512, the tokenizer's model_max_length and the
// position embeddings. A max_length over the position embeddings is
// refused: inputs that long would fail inside the model.
func ReadConfig(dir string) (Config, error) {
	export, err := readExport(dir)
	if err != nil {
		return Config{}, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		raw = []byte("{}")
	} else if err != nil {
		return Config{}, fmt.Errorf("reading %s: %w", ConfigFile, err)
	}
	cfg, err := parseConfig(raw, export)
	if err != nil {
		return Config{}, fmt.Errorf("parsing %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	if p := export.MaxPositions; p > 0 && cfg.MaxLength > p {
		return Config{}, fmt.Errorf("%w: max_length %d is over the model's %d position embeddings (%s)", ErrInvalidConfig, cfg.MaxLength, p, HFConfigFile)
	}
	return cfg, nil
}

// ParseConfig parses rerank.json, applies defaults and validates.
func ParseConfig(raw []byte) (Config, error) { return parseConfig(raw, ExportInfo{}) }

func parseConfig(raw []byte, export ExportInfo) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	cfg.Raw = append(json.RawMessage(nil), raw...)
	cfg.Export = export
	if cfg.MaxLength == 0 {
		cfg.MaxLength = DefaultMaxLength
		for _, l := range []int{export.ModelMaxLength, export.MaxPositions} {
			if l > 0 && l < cfg.MaxLength {
				cfg.MaxLength = l
			}
		}
	}
	if cfg.Truncation == "" {
		cfg.Truncation = wordpiece.LongestFirst
	}
	return cfg, cfg.Validate()
}

// Validate reports every problem of the config at once (joined, each
// wrapping ErrInvalidConfig).
func (c *Config) Validate() error {
	var errs []error
	if c.Name != "" && !ValidName(c.Name) {
		errs = append(errs, fmt.Errorf("%w: name %q: use 1-64 letters, digits, '-' or '_'", ErrInvalidConfig, c.Name))
	}
	if c.MaxLength < 8 || c.MaxLength > 8192 {
		errs = append(errs, fmt.Errorf("%w: max_length %d out of range 8..8192", ErrInvalidConfig, c.MaxLength))
	}
	if !c.Truncation.Valid() {
		errs = append(errs, fmt.Errorf("%w: truncation %q: want %q or %q", ErrInvalidConfig, c.Truncation, wordpiece.LongestFirst, wordpiece.OnlySecond))
	}
	if c.Output.Logit != nil && *c.Output.Logit < 0 {
		errs = append(errs, fmt.Errorf("%w: output.logit %d is negative", ErrInvalidConfig, *c.Output.Logit))
	}
	if !c.Output.Activation.Valid() {
		errs = append(errs, fmt.Errorf("%w: output.activation %q: want %q, %q or %q", ErrInvalidConfig, c.Output.Activation, ActivationNone, ActivationSigmoid, ActivationSoftmax))
	}
	if c.ModelFile != "" && (filepath.IsAbs(c.ModelFile) || strings.HasPrefix(filepath.Clean(c.ModelFile), "..")) {
		errs = append(errs, fmt.Errorf("%w: model_file %q must be a path inside the model directory", ErrInvalidConfig, c.ModelFile))
	}
	return errors.Join(errs...)
}
