package quantize

import (
	"errors"
	"fmt"
	"math"
	"regexp"
)

// Granularity is how weight scales are shared.
type Granularity string

// The weight scale granularities.
const (
	// PerChannel gives every output column of a weight its own scale (the
	// default: a column with small weights keeps its precision).
	PerChannel Granularity = "per-channel"
	// PerTensor gives a whole weight one scale.
	PerTensor Granularity = "per-tensor"
)

// Activations is how an activation is given its uint8 scale and zero point.
type Activations string

// The activation quantizations.
const (
	// Static quantizes each activation with a fixed range, measured on a
	// calibration job by running the fp32 model (Options.Ranges; Observe
	// writes the graph that measures them). A pair's scores then do not
	// depend on what else is in its batch, so the model is served in batches
	// like fp32, and the run does no range search (the default).
	Static Activations = "static"
	// PerBatch takes each activation's range from the whole tensor of a
	// run, at run time: onnxruntime's quantize_dynamic form
	// (DynamicQuantizeMatMul). No calibration, but a pair's scores depend on
	// its batch neighbours, so such a model is served one pair per run.
	PerBatch Activations = "per-batch"
)

// Range is what calibration measured of an activation: its range over all
// values and, per channel (its last dimension), range and mean. The channel
// figures are optional: without them there is no smoothing and no bias
// correction.
type Range struct {
	Min, Max               float32
	ChannelMin, ChannelMax []float32
	// ChannelMean is each channel's mean over its finite calibration
	// values: the bias of each quantized product absorbs the mean error of
	// its rounded weights (bias correction, see biasCorrection).
	ChannelMean []float64
	// Rows is how many rows (vectors of the last dimension) calibration
	// read; the quantizer does not use it.
	Rows int
}

// finite reports whether every figure of the range is a finite number.
func (rg Range) finite() bool {
	ok := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if !ok(float64(rg.Min)) || !ok(float64(rg.Max)) || rg.Min > rg.Max {
		return false
	}
	for i := range rg.ChannelMin {
		if !ok(float64(rg.ChannelMin[i])) {
			return false
		}
	}
	for i := range rg.ChannelMax {
		if !ok(float64(rg.ChannelMax[i])) {
			return false
		}
	}
	for _, v := range rg.ChannelMean {
		if !ok(v) {
			return false
		}
	}
	return true
}

// DefaultExclude matches the nodes of a sequence-classification head (the
// pooler and the classifier): they run on one row per pair, so quantizing
// them saves no time and costs agreement.
const DefaultExclude = `(?i)(^|/)(pooler|classifier)(/|$)`

// Options selects what Graph quantizes. The zero value is not valid; start
// from DefaultOptions.
type Options struct {
	// Granularity of the weight scales.
	Granularity Granularity
	// Activations is how activations are quantized.
	Activations Activations
	// Ranges are the calibrated ranges of the activations that Static
	// quantizes, by value name (see Observe).
	Ranges map[string]Range
	// Smooth, in (0, 1], moves that much of each activation channel's
	// range into the weights before Static quantization (SmoothQuant's α):
	// x·W = (x/s)·(s·W) with s_k = max|x_k|^α / max|W_k|^(1-α), one Mul by
	// 1/s before the activation is quantized. It needs the channel ranges;
	// PerBatch ignores it. 0: off.
	Smooth float64
	// Calibration says what Ranges were measured on (Dir records it).
	Calibration string
	// OpTypes are the operators whose constant weight is quantized:
	// "MatMul", "Gemm" or both.
	OpTypes []string
	// Exclude keeps in fp32 every node whose name matches it (nil: none).
	Exclude *regexp.Regexp
	// KeepEdgeLayers keeps the first and the last encoder layer (node names
	// with "layer.N") in fp32.
	KeepEdgeLayers bool
	// MinColumns keeps in fp32 weights with fewer output columns (a
	// one-logit classifier has one).
	MinColumns int64
	// KeepAttention leaves each self-attention block as exported, its
	// query, key and value projections quantized one by one. By default a
	// block in the form BERT exports take becomes one com.microsoft
	// QAttention (see attention): the same integer products without the
	// head transposes, ~12 % of an int8 run.
	KeepAttention bool
}

// DefaultSmooth is the default Options.Smooth (SmoothQuant's usual α). On
// the demo model it raised τ against fp32 from 0.90 to 0.91–0.92 for ~3 %
// of int8's speed (BENCHMARKS.md).
const DefaultSmooth = 0.5

// DefaultOptions quantizes the weight MatMuls and Gemms of the encoder with
// per-channel scales, static activation ranges (to be calibrated) and
// smoothing, and keeps the classification head in fp32.
func DefaultOptions() Options {
	return Options{
		Granularity: PerChannel,
		Activations: Static,
		Smooth:      DefaultSmooth,
		OpTypes:     []string{"MatMul", "Gemm"},
		Exclude:     regexp.MustCompile(DefaultExclude),
		MinColumns:  16,
	}
}

// Validate reports options Graph cannot use.
func (o Options) Validate() error {
	if o.Granularity != PerChannel && o.Granularity != PerTensor {
		return fmt.Errorf("quantize: granularity %q: want %s or %s", o.Granularity, PerChannel, PerTensor)
	}
	if o.Activations != Static && o.Activations != PerBatch {
		return fmt.Errorf("quantize: activations %q: want %s or %s", o.Activations, Static, PerBatch)
	}
	if !(o.Smooth >= 0 && o.Smooth <= 1) {
		return fmt.Errorf("quantize: smooth %v: want 0 to 1", o.Smooth)
	}
	if len(o.OpTypes) == 0 {
		return errors.New("quantize: no operator types to quantize")
	}
	for _, op := range o.OpTypes {
		if op != "MatMul" && op != "Gemm" {
			return fmt.Errorf("quantize: operator %q: want MatMul or Gemm", op)
		}
	}
	if o.MinColumns < 1 {
		return fmt.Errorf("quantize: min columns %d: want at least 1", o.MinColumns)
	}
	return nil
}

// Report says what Graph did.
type Report struct {
	Quantized   []string // names of the quantized nodes
	Kept        []string // weight MatMul/Gemm nodes left in fp32, with why
	WeightBytes [2]int64 // bytes of the quantized weights before and after
	Smoothed    int      // activations smoothed
	Corrected   int      // biases corrected
	Attentions  int      // self-attention blocks written as one QAttention
	// Softmaxes counts the graph's Softmax nodes: the self-attention
	// blocks of an encoder, fused or not.
	Softmaxes int
}

// ErrUnsupported reports a model the rewrite cannot handle.
var ErrUnsupported = errors.New("model not supported by the quantizer")

// ErrUncalibrated reports a Static rewrite without the range of an
// activation it quantizes.
var ErrUncalibrated = errors.New("activation not calibrated")

// minOpset is the default-domain opset of DynamicQuantizeLinear.
const minOpset = 11

var layerRE = regexp.MustCompile(`(?:^|/)layer\.(\d+)(?:/|$)`)
