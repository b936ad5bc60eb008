// Package model owns cross-encoder inference: the process's ONNX Runtime
// environment, model directories (model.onnx, tokenizer.json, rerank.json),
// tokenizing pairs with the directory's tokenizer, and batched scoring that
// sorts pairs by length, pads each batch only to its own longest sequence
// and returns scores in the caller's order. ONNX Runtime gets a
// prepared copy of the graph (prepare.go: weights mapped from the model
// file, residual LayerNormalizations fused on CPU), and LoadObserved runs a
// graph with extra outputs for calibration.
//
// From this repository it imports only internal/onnxpb (onnx.proto's field
// numbers, to read a graph's interface without loading it) and model/wordpiece
// (Hugging Face-exact BERT WordPiece tokenization, pure Go). The subpackage
// testmodel writes the random-weight models that tests and demos use;
// quantize writes int8 copies of model directories (pipeline/calibrate
// measures the activation ranges they need).
package model
