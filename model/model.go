package model

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/rerank/rerank/model/wordpiece"
)

// Stats describes one Score call, for the worker's metrics.
type Stats struct {
	Pairs         int
	Batches       int
	RealTokens    int // tokens of the pairs themselves
	PaddedTokens  int // tokens fed to the model, padding included
	TokenizeTime  time.Duration
	InferenceTime time.Duration
	BatchSizes    []int
}

// PaddingRatio is padded over real tokens (1 means no padding).
func (s Stats) PaddingRatio() float64 {
	if s.RealTokens == 0 {
		return 1
	}
	return float64(s.PaddedTokens) / float64(s.RealTokens)
}

// Add accumulates another call's stats.
func (s *Stats) Add(o Stats) {
	s.Pairs += o.Pairs
	s.Batches += o.Batches
	s.RealTokens += o.RealTokens
	s.PaddedTokens += o.PaddedTokens
	s.TokenizeTime += o.TokenizeTime
	s.InferenceTime += o.InferenceTime
	s.BatchSizes = append(s.BatchSizes, o.BatchSizes...)
}

// Model is a loaded cross-encoder: tokenizer, ONNX session and output
// mapping. It is safe for concurrent use; Close is idempotent.
type Model struct {
	dir    string
	cfg    Config
	opts   Options
	tok    *wordpiece.Tokenizer
	inputs []string // graph inputs to feed, in our fixed order
	output string
	logit  int
	width  int64 // output's second dimension, or -1 when dynamic
	// positions is the size of the position embeddings, the longest
	// input the graph takes; 0 when neither the graph nor config.json says.
	positions  int
	activation Activation
	// dynamicQuant: the graph quantizes its activations per batch tensor.
	dynamicQuant bool
	// prepared: what the graph handed to onnxruntime changed (prepare.go).
	prepared prepared
	// digestHex is the model's provenance (Digest).
	digestHex string

	runs chan struct{} // semaphore over concurrent ORT runs

	// observed are extra graph outputs handed to observe after each run
	// (LoadObserved).
	observed []string
	observe  Observer

	mu     sync.RWMutex // guards sess against Close during a run
	sess   *ort.DynamicAdvancedSession
	closed bool
}

// Input names of the Hugging Face BERT export.
const (
	inputIDs      = "input_ids"
	inputMask     = "attention_mask"
	inputTypeIDs  = "token_type_ids"
	defaultOutput = "logits"
)

// Load opens the model directory dir (model.onnx, tokenizer.json,
// rerank.json): it checks the graph's inputs and outputs against the BERT
// cross-encoder interface and creates the session.
func (r *Runtime) Load(dir string, opts Options) (*Model, error) {
	return r.load(dir, nil, opts)
}

// Observer receives, after each run of a model loaded with LoadObserved,
// the shape and values of one observed output (ORT's buffer: valid during
// the call only).
type Observer func(name string, shape []int64, values []float32)

// LoadObserved opens the model directory dir like Load but runs graph, a
// copy of dir's graph with more float outputs (quantize.Observe), in its
// place, and hands observe the values of the outputs named in observed
// after every run: a calibration run that scores as the model does. Runs
// are one at a time, one pair each (no padding rows among the values);
// observe needs no locking.
func (r *Runtime) LoadObserved(dir string, graph []byte, observed []string, opts Options, observe Observer) (*Model, error) {
	if len(graph) == 0 || observe == nil {
		return nil, errors.New("loading an observed model: no graph or no observer")
	}
	opts.ConcurrentRuns, opts.MaxBatchSize = 1, 1
	return r.load(dir, &observedGraph{graph, observed, observe}, opts)
}

type observedGraph struct {
	data    []byte
	outputs []string
	observe Observer
}

func (r *Runtime) load(dir string, og *observedGraph, opts Options) (*Model, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("loading model %s: %w", dir, err)
	}
	if cfg.Name == "" {
		cfg.Name = filepath.Base(filepath.Clean(dir))
	}
	tok, err := wordpiece.Load(filepath.Join(dir, TokenizerFile))
	if err != nil {
		return nil, fmt.Errorf("loading model %s: %w", dir, err)
	}
	path, err := graphFile(dir, cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("loading model %s: %w", dir, err)
	}
	info, err := readGraphInfo(path)
	if err != nil {
		return nil, fmt.Errorf("loading model %s: %w", path, err)
	}
	if info.dynamicQuant && opts.MaxBatchSize <= 0 {
		// One activation scale per batch tensor: scored one pair per run,
		// a pair's score never depends on the pairs it arrived with.
		opts.MaxBatchSize = 1
	}
	m := &Model{dir: dir, cfg: cfg, opts: opts.withDefaults(), tok: tok, positions: info.positions, dynamicQuant: info.dynamicQuant}
	if err := m.checkGraph(info); err != nil {
		return nil, fmt.Errorf("loading model %s: %w", path, err)
	}
	if m.digestHex, err = m.digest(path); err != nil {
		return nil, fmt.Errorf("loading model %s: %w", dir, err)
	}
	if m.positions == 0 {
		m.positions = cfg.Export.MaxPositions
	}
	if m.positions > 0 && cfg.MaxLength > m.positions {
		return nil, fmt.Errorf("loading model %s: %w: max_length %d is over the model's %d position embeddings (inputs that long would fail in the model)",
			dir, ErrInvalidConfig, cfg.MaxLength, m.positions)
	}
	so, err := m.opts.sessionOptions()
	if err != nil {
		return nil, fmt.Errorf("loading model %s: %w", path, err)
	}
	defer so.Destroy()
	if og == nil {
		m.sess, m.prepared, err = newSession(path, m.inputs, []string{m.output}, m.opts, so)
	} else {
		// External data of the graph's is relative to its file's folder.
		m.observed, m.observe = og.outputs, og.observe
		if err = setExternalFolder(so, path); err == nil {
			m.sess, err = ort.NewDynamicAdvancedSessionWithONNXData(og.data, m.inputs, append([]string{m.output}, og.outputs...), so)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading model %s: creating session: %w", path, err)
	}
	m.runs = make(chan struct{}, m.opts.ConcurrentRuns)
	return m, nil
}

// graphFile is the ONNX graph of a model directory: Options.ModelFile,
// else rerank.json's model_file, else model.onnx, onnx/model.onnx or
// onnx/model_quantized.onnx, the first present.
func graphFile(dir string, cfg Config, opts Options) (string, error) {
	for _, f := range []string{opts.ModelFile, cfg.ModelFile} {
		if f == "" {
			continue
		}
		if !filepath.IsAbs(f) {
			f = filepath.Join(dir, f)
		}
		return f, nil
	}
	for _, f := range []string{ModelFile, ExportModelFile, QuantizedModelFile} {
		p := filepath.Join(dir, f)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no %s, %s or %s (set model_file in %s)", ErrModelMismatch, ModelFile, ExportModelFile, QuantizedModelFile, ConfigFile)
}

// checkGraph checks the graph's inputs and outputs, read from the file
// (not from a temporary ORT session, which would cost a second load of the
// model at every start).
func (m *Model) checkGraph(info graphInfo) error {
	ins, outs := info.ortInfo()
	declared := map[string]bool{}
	for _, in := range ins {
		switch in.Name {
		case inputIDs, inputMask, inputTypeIDs:
		default:
			return fmt.Errorf("%w: unexpected input %q (a BERT cross-encoder takes input_ids, attention_mask and optionally token_type_ids)", ErrModelMismatch, in.Name)
		}
		if in.OrtValueType != ort.ONNXTypeTensor || in.DataType != ort.TensorElementDataTypeInt64 {
			return fmt.Errorf("%w: input %q is %s, want an int64 tensor", ErrModelMismatch, in.Name, in.String())
		}
		if len(in.Dimensions) != 2 {
			return fmt.Errorf("%w: input %q has shape %s, want [batch, sequence]", ErrModelMismatch, in.Name, in.Dimensions)
		}
		declared[in.Name] = true
	}
	for _, name := range []string{inputIDs, inputMask} {
		if !declared[name] {
			return fmt.Errorf("%w: the graph lacks the input %q", ErrModelMismatch, name)
		}
	}
	m.inputs = []string{inputIDs, inputMask}
	if declared[inputTypeIDs] {
		m.inputs = append(m.inputs, inputTypeIDs)
	}
	want := m.cfg.Output.Name
	var out *ort.InputOutputInfo
	for i := range outs {
		if outs[i].Name == want || (want == "" && outs[i].Name == defaultOutput) {
			out = &outs[i]
		}
	}
	if out == nil && want == "" && len(outs) == 1 {
		out = &outs[0]
	}
	if out == nil {
		names := make([]string, len(outs))
		for i, o := range outs {
			names[i] = o.Name
		}
		return fmt.Errorf("%w: no output %q among %v (set output.name in %s)", ErrModelMismatch, want, names, ConfigFile)
	}
	if out.OrtValueType != ort.ONNXTypeTensor || out.DataType != ort.TensorElementDataTypeFloat || len(out.Dimensions) != 2 {
		return fmt.Errorf("%w: output %q is %s, want a float32 [batch, K] tensor", ErrModelMismatch, out.Name, out.String())
	}
	m.output, m.width = out.Name, out.Dimensions[1]
	switch {
	case m.cfg.Output.Logit != nil:
		m.logit = *m.cfg.Output.Logit
	case m.width == 2:
		m.logit = 1
	case m.width == 1 || m.width < 0:
		m.logit = 0
	default:
		return fmt.Errorf("%w: output %q has %d logits; set output.logit in %s", ErrModelMismatch, out.Name, m.width, ConfigFile)
	}
	if m.width > 0 && int64(m.logit) >= m.width {
		return fmt.Errorf("%w: output.logit %d but output %q has %d columns", ErrModelMismatch, m.logit, out.Name, m.width)
	}
	m.activation = m.resolveActivation()
	return nil
}

// resolveActivation applies the defaults of OutputConfig.Activation: what
// rerank.json says, else the export's sentence-transformers activation_fn,
// else sigmoid for one label and softmax for more.
func (m *Model) resolveActivation() Activation {
	o := m.cfg.Output
	switch {
	case o.Activation != "":
		return o.Activation
	case o.Sigmoid != nil && *o.Sigmoid:
		return ActivationSigmoid
	case o.Sigmoid != nil:
		return ActivationNone
	}
	if a := m.cfg.Export.activation(); a != "" {
		return a
	}
	labels := int(m.width)
	if labels <= 0 {
		labels = m.cfg.Export.NumLabels
	}
	if labels >= 2 {
		return ActivationSoftmax
	}
	return ActivationSigmoid
}

// Activation is how the model's logits become scores.
func (m *Model) Activation() Activation { return m.activation }

// Name is the model's name (rerank.json "name", else the directory name).
func (m *Model) Name() string { return m.cfg.Name }

// Positions is the number of position embeddings the graph has (the
// longest input it takes), or 0 when it could not be read from the graph.
func (m *Model) Positions() int { return m.positions }

// DynamicallyQuantized reports whether the graph quantizes its activations
// at run time with one scale per tensor (an int8 export). Unless
// Options.MaxBatchSize says otherwise, such a model scores one pair per run.
func (m *Model) DynamicallyQuantized() bool { return m.dynamicQuant }

// WeightsMapped reports whether onnxruntime maps the model's weights from
// its file rather than holding a copy (Options.LoadAsIs).
func (m *Model) WeightsMapped() bool { return m.prepared.mapped > 0 }

// FusedNorms is the number of residual Add + LayerNormalization pairs run
// as one SkipLayerNormalization (Options.LoadAsIs).
func (m *Model) FusedNorms() int { return m.prepared.fused }

// Dir is the model directory.
func (m *Model) Dir() string { return m.dir }

// Config is the model's rerank.json.
func (m *Model) Config() Config { return m.cfg }

// Options are the options the model runs with, defaults filled in.
func (m *Model) Options() Options { return m.opts }

// Tokenizer is the model's tokenizer.
func (m *Model) Tokenizer() *wordpiece.Tokenizer { return m.tok }

// Inputs lists the graph inputs the model is fed.
func (m *Model) Inputs() []string { return slices.Clone(m.inputs) }

// Close releases the session. It is idempotent and waits for runs in flight.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if err := m.sess.Destroy(); err != nil {
		return fmt.Errorf("closing model %s: %w", m.cfg.Name, err)
	}
	return nil
}

// PairError is a tokenizing failure of one pair; Index is its position in
// the pairs given to Tokenize.
type PairError struct {
	Index int
	Err   error
}

func (e *PairError) Error() string { return fmt.Sprintf("tokenizing pair %d: %v", e.Index, e.Err) }
func (e *PairError) Unwrap() error { return e.Err }

// Tokenize encodes pairs with the model's max_length and truncation. A pair
// that cannot be encoded fails the call with a *PairError naming it.
func (m *Model) Tokenize(pairs []wordpiece.Pair) ([]wordpiece.Encoding, error) {
	encs := make([]wordpiece.Encoding, len(pairs))
	for i, p := range pairs {
		if err := m.tok.AppendPair(&encs[i], p.A, p.B, m.cfg.MaxLength, m.cfg.Truncation); err != nil {
			return nil, &PairError{Index: i, Err: err}
		}
	}
	return encs, nil
}

// Score returns one relevance score per pair, in the caller's order. Pairs
// are tokenized, sorted by length, cut into batches bounded by MaxBatchSize
// and MaxBatchTokens (batch × longest sequence), each padded only to its own
// longest sequence. ctx is checked between batches.
func (m *Model) Score(ctx context.Context, pairs []wordpiece.Pair) ([]float32, Stats, error) {
	start := time.Now()
	encs, err := m.Tokenize(pairs)
	if err != nil {
		return nil, Stats{}, err
	}
	st := Stats{TokenizeTime: time.Since(start)}
	scores, rst, err := m.ScoreEncoded(ctx, encs)
	st.Add(rst)
	return scores, st, err
}

// Plan returns the batches (lists of indices into encs) Score would run.
func (m *Model) Plan(encs []wordpiece.Encoding) [][]int {
	return planBatches(encs, m.opts.MaxBatchSize, m.opts.MaxBatchTokens, m.opts.MaxBatchCells, m.opts.MaxBatchPadding, !m.opts.NoLengthSort)
}

// planBatches cuts encs, sorted by length unless told not to, into runs
// within the bounds; maxPadding (padded ÷ real tokens of a run) applies
// when positive.
func planBatches(encs []wordpiece.Encoding, maxBatch, maxTokens, maxCells int, maxPadding float64, sortByLength bool) [][]int {
	order := make([]int, len(encs))
	for i := range order {
		order[i] = i
	}
	if sortByLength {
		slices.SortStableFunc(order, func(a, b int) int { return len(encs[a].IDs) - len(encs[b].IDs) })
	}
	var batches [][]int
	var cur []int
	longest, real := 0, 0
	for _, i := range order {
		n := len(encs[i].IDs)
		l := max(longest, n)
		padded := sortByLength && maxPadding > 0 && float64((len(cur)+1)*l) > maxPadding*float64(real+n)
		if len(cur) > 0 && (len(cur)+1 > maxBatch || (len(cur)+1)*l > maxTokens || (len(cur)+1)*l*l > maxCells || padded) {
			batches = append(batches, cur)
			cur, l, real = nil, n, 0
		}
		cur = append(cur, i)
		longest = l
		real += n
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	return batches
}

// ScoreEncoded scores already tokenized pairs (see Score).
func (m *Model) ScoreEncoded(ctx context.Context, encs []wordpiece.Encoding) ([]float32, Stats, error) {
	st := Stats{Pairs: len(encs)}
	scores := make([]float32, len(encs))
	var buf Batch
	for _, b := range m.Plan(encs) {
		if err := ctx.Err(); err != nil {
			return nil, st, fmt.Errorf("scoring: %w", err)
		}
		t0 := time.Now()
		if err := m.runBatch(ctx, encs, b, scores, &buf, &st); err != nil {
			return nil, st, err
		}
		st.InferenceTime += time.Since(t0)
	}
	return scores, st, nil
}
