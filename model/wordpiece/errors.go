package wordpiece

import "errors"

// Sentinel errors. Every error this package returns wraps one of them (or an
// I/O or JSON error), so callers can test with errors.Is.
var (
	// ErrUnsupported: tokenizer.json describes something other than a BERT
	// WordPiece tokenizer (another model, normalizer, pre-tokenizer or
	// post-processor), which this package refuses rather than tokenizing wrongly.
	ErrUnsupported = errors.New("unsupported tokenizer: not a BERT WordPiece tokenizer")
	// ErrInvalid: tokenizer.json is a BERT WordPiece tokenizer but is
	// malformed (missing [UNK]/[CLS]/[SEP]/[PAD], negative ids, ...).
	ErrInvalid = errors.New("invalid tokenizer")
	// ErrBadTruncation: a Truncation other than LongestFirst or OnlySecond.
	ErrBadTruncation = errors.New("bad truncation strategy")
	// ErrBadMaxLength: a max length below 3, which cannot hold the three
	// special tokens of a pair.
	ErrBadMaxLength = errors.New("bad max length")
	// ErrSequenceTooShort: OnlySecond truncation cannot reach max length
	// because text A alone (plus at least one token of text B) does not fit.
	// Hugging Face fails the same way (TruncationError::SequenceTooShort).
	ErrSequenceTooShort = errors.New("sequence to truncate too short to respect the provided max_length")
)
