// Package wordpiece owns Hugging Face-exact BERT WordPiece tokenization: it
// reads a tokenizer.json and reproduces the `tokenizers` pipeline for
// BERT-style models,
//
//	added tokens (matched in the raw text) → BertNormalizer → BertPreTokenizer
//	→ WordPiece → pair truncation → [CLS] a [SEP] b [SEP]
//
// It also owns the Pair and Encoding types that inject, model and pipeline
// pass between them. Files: wordpiece.go (Tokenizer, Pair, Encoding,
// Truncation, Load, EncodePair/AppendPair), parse.go (Parse: tokenizer.json),
// normalize.go (BertNormalizer and the Unicode classes), pretokenize.go
// (BertPreTokenizer and WordPiece), added.go (the added-token matcher),
// errors.go.
//
// It exists because github.com/sugarme/tokenizer mis-tokenizes accented text,
// corrupts type ids with its zero padding direction, truncates pairs wrongly
// and calls log.Fatal, and because it is far too slow for the re-ranker's hot
// path (bench/tokenize_test.go: BenchmarkTokenizePairs against
// BenchmarkSugarmeTokenizePairs).
//
// It may import the standard library and golang.org/x/text only: no cgo and
// no onnxruntime_go, so its tests and fuzzing run with CGO_ENABLED=0.
package wordpiece
