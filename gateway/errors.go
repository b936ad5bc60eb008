package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/rerank/rerank/schemas"
)

// Errors a Queue returns, which the gateway maps onto HTTP statuses.
var (
	// ErrUnavailable: the queue cannot be reached (503).
	ErrUnavailable = errors.New("queue unavailable")
	// ErrNotFound: no result and no pending job with that id (404).
	ErrNotFound = errors.New("job not found")
	// ErrGone: the job was accepted but its result is no longer stored,
	// or it has waited longer than results are kept (410).
	ErrGone = errors.New("job result expired")
	// ErrConflict: the job id (Idempotency-Key) names a job that was
	// submitted with other content (409): a key is one request, not a
	// name to reuse.
	ErrConflict = errors.New("job id reused with other content")
)

// Codes of the gateway's own errors, beside those of schemas.
const (
	codeUnauthorized     schemas.Code = "unauthorized"
	codeTimeout          schemas.Code = "timeout"
	codeUnavailable      schemas.Code = "unavailable"
	codeNotFound         schemas.Code = "not_found"
	codeGone             schemas.Code = "gone"
	codeConflict         schemas.Code = "conflict"
	codeBadRequest       schemas.Code = "bad_request"
	codeNoModel          schemas.Code = "no_model"
	codeRequestTimeout   schemas.Code = "request_timeout"
	codeUnsupportedMedia schemas.Code = "unsupported_media_type"
	codeForbiddenOrigin  schemas.Code = "forbidden_origin"
	codeMisdirected      schemas.Code = "misdirected_request"
	// codeClientClosed is a request whose client went away before its
	// answer: recorded (499, as nginx does), never an error of the gateway.
	codeClientClosed schemas.Code = "client_closed"
)

// statusClientClosed is nginx's status for a request its client abandoned.
const statusClientClosed = 499

// httpStatus is the HTTP status of each error code; any other code is a
// 400 (a job the contract refuses).
var httpStatus = map[schemas.Code]int{
	codeUnauthorized:            http.StatusUnauthorized,
	codeForbiddenOrigin:         http.StatusForbidden,
	codeNotFound:                http.StatusNotFound,
	schemas.CodeUnknownModel:    http.StatusNotFound,
	codeRequestTimeout:          http.StatusRequestTimeout,
	codeGone:                    http.StatusGone,
	codeConflict:                http.StatusConflict,
	schemas.CodePayloadTooLarge: http.StatusRequestEntityTooLarge,
	codeUnsupportedMedia:        http.StatusUnsupportedMediaType,
	codeMisdirected:             http.StatusMisdirectedRequest,
	schemas.CodeInputTooLong:    http.StatusUnprocessableEntity,
	schemas.CodeResultTooLarge:  http.StatusUnprocessableEntity,
	codeClientClosed:            statusClientClosed,
	schemas.CodeInternal:        http.StatusInternalServerError,
	codeUnavailable:             http.StatusServiceUnavailable,
	schemas.CodeQueueFull:       http.StatusServiceUnavailable,
	codeTimeout:                 http.StatusGatewayTimeout,
}

// retryAfter is the Retry-After of the transient refusals: NATS reconnects
// within about a second, a full queue drains more slowly.
var retryAfter = map[schemas.Code]time.Duration{
	codeUnavailable:       2 * time.Second,
	schemas.CodeQueueFull: 5 * time.Second,
}

// status is the HTTP status of an error code.
func status(code schemas.Code) int {
	if s, ok := httpStatus[code]; ok {
		return s
	}
	return http.StatusBadRequest
}

// apiError is an error answered to a client.
type apiError struct {
	code    schemas.Code
	message string
	jobID   string // set when the job exists (a timeout: fetch it later)
	// candidate is the document (candidate) a contract error is about.
	candidate *schemas.CandidateRef
	// unread marks an answer given without reading the request body: the
	// connection is closed instead of waiting for a body nobody wants.
	unread bool
}

func (e *apiError) Error() string { return string(e.code) + ": " + e.message }

func errorf(code schemas.Code, msg string) *apiError { return &apiError{code: code, message: msg} }

// asAPIError classifies any error of a request.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if se := schemas.AsError(err); se != nil {
		msg := se.Message
		if c := se.Candidate; c != nil {
			msg = fmt.Sprintf("document %d (id %q): %s", c.Index, c.ID, msg)
		}
		return &apiError{code: se.Code, message: msg, candidate: se.Candidate}
	}
	switch {
	case errors.Is(err, ErrUnavailable):
		return errorf(codeUnavailable, err.Error())
	case errors.Is(err, ErrNotFound):
		return errorf(codeNotFound, err.Error())
	case errors.Is(err, ErrGone):
		return errorf(codeGone, err.Error())
	case errors.Is(err, ErrConflict):
		return errorf(codeConflict, err.Error())
	}
	return errorf(schemas.CodeInternal, err.Error())
}

// dialect writes errors the way its clients parse them.
type dialect int

const (
	dialectCohere dialect = iota // {"message", "code"} (Cohere, Jina, and the native endpoints)
	dialectTEI                   // {"error", "error_type"}
)

// writeError is the one place an error answer is written: its status comes
// from httpStatus, its body from the dialect.
func writeError(w http.ResponseWriter, d dialect, e *apiError) {
	var body any
	switch d {
	case dialectTEI:
		body = struct {
			Error     string                `json:"error"`
			ErrorType string                `json:"error_type"`
			ID        string                `json:"id,omitempty"`
			Candidate *schemas.CandidateRef `json:"candidate,omitempty"`
		}{e.message, string(e.code), e.jobID, e.candidate}
	default:
		body = struct {
			Message   string                `json:"message"`
			Code      string                `json:"code"`
			ID        string                `json:"id,omitempty"`
			Candidate *schemas.CandidateRef `json:"candidate,omitempty"`
		}{e.message, string(e.code), e.jobID, e.candidate}
	}
	if e.jobID != "" {
		w.Header().Set(HeaderJobID, e.jobID)
	}
	if d, ok := retryAfter[e.code]; ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(d/time.Second)))
	}
	if e.unread {
		// Connection: close spares the server reading (and waiting for)
		// the body before answering; the read deadline makes the body's
		// close after the handler fail at once instead of draining it.
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now()) // not supported by test recorders
	}
	writeJSON(w, status(e.code), body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
