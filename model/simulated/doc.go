// Package simulated owns a stand-in cross-encoder for scale tests and
// benchmarks: it costs a configured time per scoring call and per pair by
// waiting, not computing, so that one small machine can host tens of
// workers and the broker, not the model, is what a scale benchmark
// measures. Its scores are a deterministic function of each pair's text.
// `rerank serve` offers it only behind the --test-simulated-model flag,
// never from a model directory.
//
// It may import model (for the Stats type) and model/wordpiece (for the Pair
// and Encoding types) only.
package simulated
