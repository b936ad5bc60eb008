// Package sharedcache is the pair cache's shared tier: pair scores in a
// JetStream key-value bucket that a fleet of workers reads and fills, so
// that a pair scored by one worker is not scored again by another. It sits
// behind each worker's process cache (pipeline/paircache), which it never
// replaces: a job's pairs missing there are looked up here, many requests
// in flight at once, and the pairs scored are stored here without waiting
// for the server.
//
// The tier is a cache, never a dependency: a lookup that fails, is slow or
// finds a malformed value is a miss, and after a failure the tier is left
// alone for a while (a doubling backoff) while the worker computes every
// pair itself. No job fails or waits long because of it.
//
// It owns the bucket's definition and its connection's traffic; it imports
// pipeline/paircache (the keys), nats.go and the standard library.
package sharedcache
