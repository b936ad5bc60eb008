// Package inject owns how a job becomes model input text: normalizing
// first-stage scores (BM25, DPR) and writing them into the text pair exactly
// as a checkpoint was trained (Askari et al., ECIR 2023). A model's input
// format is a small declarative Config, built from a named preset and
// overridden by the model directory's rerank.json.
//
// It may import schemas, model/wordpiece (for Pair, the text pair it
// renders and the tokenizer encodes: pure Go, no cgo) and the standard
// library only.
package inject
