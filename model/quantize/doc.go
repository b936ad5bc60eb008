// Package quantize rewrites an exported BERT-family ONNX model into an int8
// one: every selected weight MatMul (and Gemm) becomes an integer product
// of uint8 activations and int8 weights (symmetric, per output channel or
// per tensor) that ONNX Runtime's CPU provider runs with VNNI on CPUs that
// have it, its bias folded in.
//
// Activations are quantized either with static ranges measured beforehand
// on a calibration job (Static, the default: QuantizeLinear with constant
// scales → MatMulIntegerToFloat; batch-independent scores, with per-channel
// smoothing and bias correction from the same calibration) or per run's
// tensor at run time (PerBatch: onnxruntime's quantize_dynamic form,
// DynamicQuantizeMatMul). Observe writes the calibration graph;
// pipeline/calibrate runs it.
//
// Each self-attention block in the form BERT exports take becomes one
// com.microsoft QAttention (attention.go): the query, key and value
// projections as one integer product written head by head, without the
// head Transposes and Reshapes around them (KeepAttention: not).
//
// Files by concept: options.go (Options, Report, errors), quantize.go (the
// entry points Graph and Observe, the model message), rewrite.go (the graph
// rewrite, node by node), attention.go (QAttention), int8.go (the int8
// arithmetic: weight scales, smoothing, bias correction), proto.go (the
// graph's messages), dir.go (model directories).
//
// It is an offline tool (`rerank quantize`): the runtime loads a quantized
// model directory like any other. It owns the graph rewrite and the model
// directory it writes; it reads and writes the ONNX protobuf with protowire,
// one message at a time, and may import only the standard library,
// google.golang.org/protobuf/encoding/protowire and internal/onnxpb.
package quantize
