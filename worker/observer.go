package worker

import "time"

// Observer receives the worker's events, for metrics. Every method must be
// cheap and safe for concurrent use; NopObserver ignores them all.
type Observer interface {
	JobDone(model, outcome string, attempt uint64, queued, total time.Duration)
	Redelivered(model string)
	DeadLettered(model, code string)
	InFlight(delta int)
	// Panicked counts a Go panic recovered while answering one job.
	Panicked(model string)
	// Backlog reports a lane's consumer every Config.BacklogInterval: jobs
	// waiting to be delivered, and delivered but not yet acknowledged.
	Backlog(model, lane string, pending, unacked uint64)
}

// Job outcomes reported to the Observer.
const (
	OutcomeOK        = "ok"
	OutcomeInvalid   = "invalid"
	OutcomeRetry     = "retry"
	OutcomeFailed    = "failed"
	OutcomeAbandoned = "abandoned" // nak'd at shutdown for another worker
	OutcomeStored    = "stored"    // redelivered, its result already stored: acked without recomputing
)

// NopObserver ignores events.
type NopObserver struct{}

func (NopObserver) JobDone(string, string, uint64, time.Duration, time.Duration) {}
func (NopObserver) Redelivered(string)                                           {}
func (NopObserver) DeadLettered(string, string)                                  {}
func (NopObserver) InFlight(int)                                                 {}
func (NopObserver) Backlog(string, string, uint64, uint64)                       {}
func (NopObserver) Panicked(string)                                              {}
