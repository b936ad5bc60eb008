// Package quantize rewrites an exported BERT-family ONNX model into a
// dynamically quantized int8 one: every selected weight MatMul (and Gemm)
// becomes DynamicQuantizeLinear → MatMulInteger → Cast → Mul, the operator
// form that ONNX Runtime's CPU provider fuses into DynamicQuantizeMatMul and
// runs with VNNI on CPUs that have it. Weights are stored as int8 with
// symmetric per-output-channel (or per-tensor) scales; activations are
// quantized at run time, per tensor, to uint8.
//
// It is an offline tool (`rerank quantize`): the runtime loads a quantized
// model directory like any other. It owns the graph rewrite and the model
// directory it writes; it reads and writes the ONNX protobuf with protowire,
// one message at a time, and may import only the standard library,
// google.golang.org/protobuf/encoding/protowire and internal/onnxpb.
package quantize
