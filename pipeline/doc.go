// Package pipeline owns a job's way from decoded request to ranked result:
// validate → inject scores as text (per the model's config) → tokenize →
// score → sort → top_n. One bad job never fails its batch-mates: each job
// gets its own outcome. Pairs of concurrent jobs for the same model share
// inference batches (cross-job batching): a per-model batcher gathers them
// for at most MaxBatchDelay, and longer while the model is busy.
//
// It declares the Scorer interface it needs (package model satisfies it)
// and may import schemas, inject, model (for the Stats and PairError types)
// and model/wordpiece (for Pair and Encoding), never worker or cmd.
package pipeline
