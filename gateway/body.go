package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/rerank/rerank/schemas"
)

// bodyLimit is the largest request body: a request is never larger than
// the job it becomes, give or take its JSON punctuation, so twice the job
// payload limit bounds it.
func (s *Server) bodyLimit() int64 { return 2 * int64(s.cfg.Limits.MaxPayloadBytes) }

// readBody reads the whole request body, at most bodyLimit bytes, into one
// buffer sized from Content-Length. A body announced over the limit is
// refused before any of it is read; one that stalls past ReadTimeout is a
// 408. Once the body is read, the connection's read deadline is lifted:
// ReadTimeout bounds reading the request, not the wait for its result, and
// left in place it would cancel the request when it passed during that wait
// (net/http's background read, which watches for the client going away,
// fails with it).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := s.bodyLimit()
	if r.ContentLength > limit {
		return nil, &apiError{code: schemas.CodePayloadTooLarge, unread: true,
			message: fmt.Sprintf("request body of %d bytes, limit %d", r.ContentLength, limit)}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead) // ReadFrom needs MinRead spare to read EOF without growing
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, errorf(schemas.CodePayloadTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit))
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, &apiError{code: codeRequestTimeout, unread: true,
			message: fmt.Sprintf("the request body did not arrive within %s", s.cfg.ReadTimeout)}
	case err != nil:
		return nil, errorf(codeBadRequest, "reading the body: "+err.Error())
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{}) // not supported by test recorders
	return buf.Bytes(), nil
}

// decodeBody reads a JSON request body into v. Its arrays (documents,
// texts, rank_fields) are counted against the candidate limit before v is
// decoded, so that a body of millions of tiny elements costs its own bytes,
// not a struct per element.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	if err := s.checkArrays(data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return errorf(codeBadRequest, "decoding the JSON body: "+err.Error())
	}
	return nil
}

// checkArrays refuses a body whose top-level object holds an array of more
// elements than the candidate limit.
func (s *Server) checkArrays(data []byte) error {
	max := s.cfg.Limits.MaxCandidates
	if key, n := longestArray(data, max); n > max {
		if len(key) > 64 {
			key = key[:64]
		}
		return schemas.Errorf(schemas.CodeTooManyCandidates, "%d elements in %q, limit %d", n, key, max)
	}
	return nil
}

// longestArray scans a JSON object and returns the first of its members
// whose value is an array of more than max elements, with that count (or
// nil, 0). It allocates nothing. It reads valid JSON correctly; anything
// else it may miscount, which is harmless: json.Unmarshal checks the whole
// input before it decodes (and allocates) any of it, and refuses it.
func longestArray(data []byte, max int) (key []byte, n int) {
	i := 0
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	if i == len(data) || data[i] != '{' {
		return nil, 0
	}
	var (
		depth   int    // containers open around data[i]
		lastStr []byte // the latest string at depth 1: the key, once ':' follows
		arrKey  []byte // the member whose value is the array being counted
		inArray bool   // the container at depth 2 is an array
		counted bool   // its current element is counted
		count   int
	)
	element := func() { // data[i] starts or continues a value at the current depth
		if depth == 2 && inArray && !counted {
			counted = true
			count++
		}
	}
	for ; i < len(data); i++ {
		switch c := data[i]; c {
		case '"':
			element()
			start := i + 1
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
			if depth == 1 {
				lastStr = data[start:min(i, len(data))]
			}
		case '{', '[':
			element()
			depth++
			if depth == 2 {
				inArray, arrKey, count, counted = c == '[', lastStr, 0, false
			}
		case '}', ']':
			if depth == 2 && inArray && count > max {
				return arrKey, count
			}
			depth--
		case ',':
			if depth == 2 {
				counted = false
			}
		case ':':
		default:
			if !isSpace(c) { // a number, true, false or null
				element()
			}
		}
	}
	return nil, 0
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
