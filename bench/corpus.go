package main

import (
	"math/rand/v2"

	"github.com/rerank/rerank/eval"
	"github.com/rerank/rerank/schemas"
)

// makeJob builds one job of n candidates with realistic lengths and BM25s.
func makeJob(r *rand.Rand, id string, n int, meanWords float64) *schemas.Job {
	return eval.SyntheticJob(r, id, n, meanWords)
}
