// Package paircache is the worker's cache of pair scores: a cross-encoder's
// score is a pure function of the model (its provenance digest) and the
// pair's token ids, so a pair scored once need not be scored again. Keys
// are a 128-bit digest of both; values the score. The cache is bounded by
// bytes and evicts the least recently used entry (an O(1) list over a
// pointer-free slice, which the garbage collector never scans), and it
// computes a pair that several jobs need at once only once (Claim: one
// owner scores it, the others wait for its score).
//
// It owns nothing but memory; it imports model/wordpiece for the
// encodings it keys, and the standard library.
package paircache
