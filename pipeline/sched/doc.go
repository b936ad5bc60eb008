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
// # Starvation bound
//
// Within a lane, a request's key (the smallest goes first, arrival breaks
// ties) is
//
//	key = remaining − AgingRate·(now − Arrived) − WorkAging·(pairs the lane handed out since it was added)
//
// Both credits run from the request's arrival and survive its chunks. (An
// earlier version restarted the time credit at each chunk: under small jobs
// filling the model, a 1,024-pair job took 359 times its run time alone, a
// 4,096-pair job an hour.) Two facts follow. Between two waiting requests
// the difference of keys does not change as time passes or pairs are handed
// out, only when one of them is served, and serving k pairs of a request
// lowers its key by k relative to every other. And a request x added, no
// earlier than B, once the lane has handed out W ≥ (P−1)/WorkAging pairs
// since a request B of P pairs was added never goes before B:
// key_x − key_B ≥ 1 − P + WorkAging·W ≥ 0. Call such requests late.
//
// So every pair the lane hands out from B's arrival until its last chunk is
// one of Q0 (the pairs waiting when B arrived), Λ (the pairs added while the
// lane hands out its first (P−1)/WorkAging pairs after that), B's own P, or
// a late request's. Late requests get pairs only in a call's second half,
// which goes to the shortest pairs of the window (Next): with B's pairs no
// longer than theirs, only in B's last call, so the lane hands out at most
//
//	Q0 + Λ + P + BatchPairs
//
// pairs; whatever the lengths, a call gives late requests no more pairs
// than the requests before them in key order, and those come from what was
// left of Q0 + Λ + P after the first (P−1)/WorkAging pairs, so at most
// max(Q0 + Λ + P, 2·(Q0 + Λ + P) − (P−1)/WorkAging) + BatchPairs.
//
// A lane that has B waiting is never idle, so with the lane serving μ pairs
// a second under a load that offers ρ·μ (Λ ≤ ρ·(P−1)/WorkAging), B is done
// within K times its run time alone, P/μ, plus the call in flight, where
//
//	K = 1 + ρ/WorkAging + (Q0 + BatchPairs)/P             B's pairs no longer than the others'
//	K = 2 + (2ρ − 1)/WorkAging + (2·Q0 + BatchPairs)/P    any lengths, where larger than the first
//
// At the defaults (WorkAging ½, BatchPairs 16) and a full load that has
// not built a backlog (ρ = 1, Q0 ≈ 0), K = 3.0 (4.0 for any lengths) for
// 1,024 or 4,096 pairs: 1.9 s (2.6 s) and 7.7 s (10.3 s) for the reference model
// (0.625 ms a pair), against 0.64 s and 2.56 s alone. The time credit only
// lowers K (to 2.7 in the first case: it adds AgingRate/μ to WorkAging),
// but its own bound, 1 + ρ·μ/AgingRate, depends on the model's speed, which
// the policy does not know. In the bulk lane, μ is the share of the calls
// bulk gets. Under a sustained overload (ρ > 1) Q0 grows with the
// overload's length, for every job alike; only shedding load bounds that.
//
// Small jobs still go first in the normal case: a fresh job of s pairs goes
// before B unless the lane has handed out (B's remaining − s)/WorkAging
// pairs since B arrived, twice B's own work at the default, which happens
// only when other work has kept the lane busy that long. Once B is ahead of
// fresh jobs it keeps the lane (at least half of each call) until it is
// done, so jobs arriving then wait up to its remaining run time: that is
// the price of the bound.
//
// It may import schemas only.
package sched
