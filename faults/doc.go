// Package faults holds rerank's fault-injection and security tests: real
// `rerank serve` processes against real NATS servers on 127.0.0.1, killed,
// restarted, starved and fed hostile jobs, each scenario ending in one line
//
//	scenario: submitted=N results=N duplicates_visible=0 lost=0 dead_lettered=K
//
// (and scenario-specific figures after it). RELIABILITY.md states the
// promises these tests check and their last figures.
//
// Sizes: the default (and -short) is the CI form; RERANK_FAULTS=full runs
// the full loads (`make test-faults`).
//
// The package has no non-test code.
package faults
