// Package testmodel generates deterministic, random-weight BERT
// cross-encoders as ONNX files, for tests, demos and benchmarks on machines
// that cannot download trained weights.
//
// A generated model has exactly the interface of a Hugging Face optimum
// `text-classification` export of a BERT cross-encoder (such as
// cross-encoder/ms-marco-MiniLM-L-12-v2):
//
//	inputs  input_ids, attention_mask, token_type_ids: int64 [batch_size, sequence_length]
//	output  logits: float32 [batch_size, 1]
//
// and computes a standard BertForSequenceClassification forward pass
// (embeddings, post-LayerNorm encoder layers with exact GELU, tanh pooler over
// the [CLS] position, one-logit classifier). Its weights are drawn from a
// seeded PCG generator, so the scores it produces are meaningless, but they
// are reproducible and they do vary with the input.
//
// WriteONNX streams the ONNX protobuf, which the package encodes by hand with
// protowire; WriteDir lays out a model directory (model.onnx, onnx/model.onnx,
// tokenizer.json, tokenizer_config.json, config.json) that both
// this project's loader and transformers.js can open.
//
// The package owns only that generation. It may import only the standard
// library, google.golang.org/protobuf/encoding/protowire and
// internal/onnxpb (onnx.proto's field numbers, shared with model/quantize);
// its tests also
// use ONNX Runtime to check that the output loads and behaves like a BERT
// cross-encoder.
package testmodel
