// Package sched decides which waiting pairs share the next scoring call of
// a model: a pure policy, with no goroutines and no clock of its own, that
// the pipeline's batcher drives (Add on arrival, Next when a scoring slot is
// free, Remove on cancellation).
//
// Each job's pairs are handed out in chunks of at most BatchPairs, so a big
// job never holds the model for longer than one call: interactive jobs go
// before bulk ones (bulk keeps a floor share of the calls), and within a
// lane the job with the fewest pairs left goes first, with aging so that a
// big job always progresses. Small jobs are batched together into one call.
//
// It may import schemas only.
package sched
