package schemas

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code carried in Result.Error.
// Clients switch on it; its values never change meaning.
type Code string

// The error codes of the wire contract.
const (
	CodeBadEncoding          Code = "bad_encoding"
	CodeUnsupportedVersion   Code = "unsupported_version"
	CodeMissingID            Code = "missing_id"
	CodeInvalidID            Code = "invalid_id"
	CodeMissingQuery         Code = "missing_query"
	CodeNoCandidates         Code = "no_candidates"
	CodeTooManyCandidates    Code = "too_many_candidates"
	CodeDuplicateCandidateID Code = "duplicate_candidate_id"
	CodeEmptyCandidateID     Code = "empty_candidate_id"
	CodeTextTooLong          Code = "text_too_long"
	CodeNonFiniteScore       Code = "non_finite_score"
	CodeMissingScore         Code = "missing_score"
	CodeUnknownModel         Code = "unknown_model"
	CodeModelMismatch        Code = "model_mismatch"
	CodePayloadTooLarge      Code = "payload_too_large"
	CodeInvalidReplyTo       Code = "invalid_reply_to"
	CodeMetaTooLarge         Code = "meta_too_large"
	// CodeInputTooLong marks a pair the model cannot take: the tokenizer
	// found no room for the passage within max_length (only_second
	// truncation with a query that fills it).
	CodeInputTooLong Code = "input_too_long"
	// CodeResultTooLarge marks a result over the server's payload limit;
	// ask for fewer (top_n) or drop return_documents.
	CodeResultTooLarge Code = "result_too_large"
	// CodeInternal marks a job that could not be processed after every
	// allowed delivery, for reasons that are not the job's fault.
	CodeInternal Code = "internal"

	// CodeQueueFull: the job stream is at its limit and refused the job at
	// publish time (it was not queued). Never a result: producers see it,
	// and retry later.
	CodeQueueFull Code = "queue_full"
)

// Permanent reports whether a job failing with this code will fail again on
// redelivery (the job itself is at fault), as opposed to a worker-side failure.
func (c Code) Permanent() bool { return c != CodeInternal && c != CodeQueueFull }

// CandidateRef names the candidate an error is about.
type CandidateRef struct {
	Index int    `msgpack:"index" json:"index"`
	ID    string `msgpack:"id" json:"id"`
}

// Error is a coded contract error. It travels as Result.Error and is what
// DecodeJob and Validate return.
type Error struct {
	Code      Code          `msgpack:"code" json:"code"`
	Message   string        `msgpack:"message" json:"message"`
	Candidate *CandidateRef `msgpack:"candidate,omitempty" json:"candidate,omitempty"`
}

func (e *Error) Error() string {
	if e.Candidate != nil {
		return fmt.Sprintf("%s: candidate %d (id %q): %s", e.Code, e.Candidate.Index, e.Candidate.ID, e.Message)
	}
	if e.Message == "" {
		return string(e.Code)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Is makes errors.Is(err, ErrMissingQuery) true for any *Error of that code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Message == "" && t.Candidate == nil
}

// Sentinels for errors.Is; each matches every *Error of its code.
var (
	ErrBadEncoding          = &Error{Code: CodeBadEncoding}
	ErrUnsupportedVersion   = &Error{Code: CodeUnsupportedVersion}
	ErrMissingID            = &Error{Code: CodeMissingID}
	ErrInvalidID            = &Error{Code: CodeInvalidID}
	ErrMissingQuery         = &Error{Code: CodeMissingQuery}
	ErrNoCandidates         = &Error{Code: CodeNoCandidates}
	ErrTooManyCandidates    = &Error{Code: CodeTooManyCandidates}
	ErrDuplicateCandidateID = &Error{Code: CodeDuplicateCandidateID}
	ErrEmptyCandidateID     = &Error{Code: CodeEmptyCandidateID}
	ErrTextTooLong          = &Error{Code: CodeTextTooLong}
	ErrNonFiniteScore       = &Error{Code: CodeNonFiniteScore}
	ErrMissingScore         = &Error{Code: CodeMissingScore}
	ErrUnknownModel         = &Error{Code: CodeUnknownModel}
	ErrModelMismatch        = &Error{Code: CodeModelMismatch}
	ErrPayloadTooLarge      = &Error{Code: CodePayloadTooLarge}
	ErrInvalidReplyTo       = &Error{Code: CodeInvalidReplyTo}
	ErrMetaTooLarge         = &Error{Code: CodeMetaTooLarge}
	ErrInputTooLong         = &Error{Code: CodeInputTooLong}
	ErrResultTooLarge       = &Error{Code: CodeResultTooLarge}
	ErrInternal             = &Error{Code: CodeInternal}
)

// Errorf builds a coded error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CandidateErrorf builds a coded error that names candidate i.
func CandidateErrorf(code Code, i int, id string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Candidate: &CandidateRef{Index: i, ID: id}}
}

// AsError extracts the coded error from err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
