// Package eval measures a re-ranker on a user's own data, through the same
// service that runs in production: it reads the standard IR files (queries
// and collection TSV, TREC runs, qrels), builds one re-ranking job per query
// from a first-stage run (its scores travel as the jobs' bm25, a second run's
// as their dpr), hands the jobs to a Reranker, writes the re-ranked run, and
// compares first stage and re-ranked run on MRR@10, nDCG@10, MAP and
// Recall@100/@1000 with a paired two-sided t-test per metric.
//
// It owns:
//
//   - the readers (read.go, load.go): the collection is streamed once and only
//     the passages the run references are kept, so the 8.8M-passage MS MARCO
//     collection is never loaded whole;
//   - the metrics (metrics.go), defined exactly as trec_eval computes them
//     (ranking by score then docno descending, -l relevance threshold, graded
//     ndcg_cut, queries counted when they are in both the run and the qrels);
//   - the paired t-test (ttest.go), with the Student t distribution computed
//     from the regularized incomplete beta function;
//   - job building (jobs.go), the run writer (runfile.go), the Runner
//     (runner.go) and a terminal progress bar (progress.go).
//
// It declares the Reranker interface it needs; package client (over NATS)
// and package pipeline (in process) are plugged in by cmd/rerank, never
// imported here. It may import schemas and the standard library only.
package eval
