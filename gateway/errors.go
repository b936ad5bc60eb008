package gateway

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/rerank/rerank/schemas"
)

// Errors a Queue returns, which the gateway maps onto HTTP statuses.
var (
	// ErrUnavailable: the queue cannot be reached (503).
	ErrUnavailable = errors.New("queue unavailable")
	// ErrNotFound: no result and no pending job with that id (404).
	ErrNotFound = errors.New("job not found")
)

// Codes of the gateway's own errors, beside those of schemas.
const (
	codeUnauthorized schemas.Code = "unauthorized"
	codeTimeout      schemas.Code = "timeout"
	codeUnavailable  schemas.Code = "unavailable"
	codeNotFound     schemas.Code = "not_found"
	codeBadRequest   schemas.Code = "bad_request"
	codeNoModel      schemas.Code = "no_model"
)

// status is the HTTP status of an error code.
func status(code schemas.Code) int {
	switch code {
	case codeUnauthorized:
		return http.StatusUnauthorized
	case codeTimeout:
		return http.StatusGatewayTimeout
	case codeUnavailable, schemas.CodeQueueFull:
		return http.StatusServiceUnavailable
	case codeNotFound, schemas.CodeUnknownModel:
		return http.StatusNotFound
	case schemas.CodePayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case schemas.CodeInputTooLong, schemas.CodeResultTooLarge:
		return http.StatusUnprocessableEntity
	case schemas.CodeInternal:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// apiError is an error answered to a client.
type apiError struct {
	code    schemas.Code
	message string
	jobID   string // set when the job exists (a timeout: fetch it later)
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
		return &apiError{code: se.Code, message: se.Message}
	}
	switch {
	case errors.Is(err, ErrUnavailable):
		return errorf(codeUnavailable, err.Error())
	case errors.Is(err, ErrNotFound):
		return errorf(codeNotFound, err.Error())
	}
	return errorf(schemas.CodeInternal, err.Error())
}

// dialect writes errors the way its clients parse them.
type dialect int

const (
	dialectCohere dialect = iota // {"message", "code"} (Cohere, Jina, and the native endpoints)
	dialectTEI                   // {"error", "error_type"}
)

func writeError(w http.ResponseWriter, d dialect, e *apiError) {
	var body any
	switch d {
	case dialectTEI:
		body = struct {
			Error     string `json:"error"`
			ErrorType string `json:"error_type"`
			ID        string `json:"id,omitempty"`
		}{e.message, string(e.code), e.jobID}
	default:
		body = struct {
			Message string `json:"message"`
			Code    string `json:"code"`
			ID      string `json:"id,omitempty"`
		}{e.message, string(e.code), e.jobID}
	}
	if e.jobID != "" {
		w.Header().Set(HeaderJobID, e.jobID)
	}
	if e.code == schemas.CodeQueueFull || e.code == codeUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, status(e.code), body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
