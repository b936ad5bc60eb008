package pipeline

import "time"

// Observer is told what the pipeline does, for metrics (*metrics.Metrics
// is one). Its methods are called on the pipeline's goroutines: they must
// be cheap, never block, and be safe for concurrent use. Lanes are
// schemas.Lane's names.
type Observer interface {
	// ObserveScore is called after each scoring call: the scheduler's
	// decision (model, lane), the jobs the call served, its pairs, the
	// sizes of the model runs it took, padded over real tokens, and the
	// time spent in the model.
	ObserveScore(model, lane string, jobs, pairs int, batchSizes []int, paddingRatio float64, inference time.Duration)
	// ObserveLaneWait is called when a job's first chunk is scheduled,
	// with the time the job waited for it.
	ObserveLaneWait(model, lane string, wait time.Duration)
	// ChunksInFlight is called with +n when a call of n chunks starts and
	// -n when it ends.
	ChunksInFlight(model string, delta int)
}

// NopObserver observes nothing.
type NopObserver struct{}

func (NopObserver) ObserveScore(string, string, int, int, []int, float64, time.Duration) {}
func (NopObserver) ObserveLaneWait(string, string, time.Duration)                        {}
func (NopObserver) ChunksInFlight(string, int)                                           {}
