// Package schemas owns the wire contract between clients and re-ranking
// workers: the Job and Result types, their msgpack and JSON encodings, the
// size limits, and validation with stable, coded errors that clients can
// switch on. README.md beside this file is the human-readable contract.
//
// It imports nothing from this repository; every other package may import it.
package schemas
