// Package model owns cross-encoder inference: the process's ONNX Runtime
// environment, model directories (model.onnx, tokenizer.json, rerank.json),
// Hugging Face-exact BERT WordPiece tokenization, and batched scoring that
// sorts pairs by length, pads each batch only to its own longest sequence
// and returns scores in the caller's order.
//
// It imports nothing from this repository (the subpackage testmodel writes
// the random-weight models that tests and demos use).
package model
