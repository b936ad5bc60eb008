package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// Format is a wire encoding.
type Format int

// The supported wire encodings. Msgpack is the default.
const (
	Msgpack Format = iota
	JSON
)

// Content types, as carried in the NATS "Content-Type" header.
const (
	ContentTypeMsgpack = "application/msgpack"
	ContentTypeJSON    = "application/json"
)

func (f Format) String() string {
	if f == JSON {
		return "json"
	}
	return "msgpack"
}

// ContentType is the header value for f.
func (f Format) ContentType() string {
	if f == JSON {
		return ContentTypeJSON
	}
	return ContentTypeMsgpack
}

// ParseContentType maps a Content-Type header value to a Format. An empty
// value means msgpack; parameters such as charset are ignored.
func ParseContentType(ct string) (Format, error) {
	ct = strings.TrimSpace(ct)
	if ct == "" {
		return Msgpack, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return Msgpack, Errorf(CodeBadEncoding, "unparsable content type %q", ct)
	}
	switch mt {
	case ContentTypeMsgpack, "application/x-msgpack", "application/vnd.msgpack":
		return Msgpack, nil
	case ContentTypeJSON:
		return JSON, nil
	}
	return Msgpack, Errorf(CodeBadEncoding, "unsupported content type %q (want %s or %s)", ct, ContentTypeMsgpack, ContentTypeJSON)
}

// maxMsgpackDepth bounds nesting in msgpack input; a job needs 4 levels
// (job, candidates, candidate, meta), so anything deep is hostile.
const maxMsgpackDepth = 32

// DecodeJob decodes a job in the given format. Its size, the number of
// candidates and of meta entries, and nesting are checked before anything is
// allocated for them, so a hostile payload costs little more than its own
// bytes. It does not validate the job's content: call Validate for that.
// Every failure is an *Error with code bad_encoding, payload_too_large,
// too_many_candidates or meta_too_large.
func DecodeJob(data []byte, f Format, limits Limits) (*Job, error) {
	limits = limits.withDefaults()
	if len(data) > limits.MaxPayloadBytes {
		return nil, Errorf(CodePayloadTooLarge, "payload is %d bytes, limit %d", len(data), limits.MaxPayloadBytes)
	}
	var job Job
	switch f {
	case JSON:
		if err := scanJSONJob(data, limits); err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&job); err != nil {
			return nil, Errorf(CodeBadEncoding, "decoding JSON job: %v", err)
		}
		if dec.More() {
			return nil, Errorf(CodeBadEncoding, "decoding JSON job: trailing data after the job object")
		}
	default:
		shape := jobShape{limits: limits}
		if err := walkMsgpack(data, maxMsgpackDepth, shape.visit); err != nil {
			if ce := AsError(err); ce != nil {
				return nil, ce
			}
			return nil, Errorf(CodeBadEncoding, "decoding msgpack job: %v", err)
		}
		if err := msgpack.Unmarshal(data, &job); err != nil {
			return nil, Errorf(CodeBadEncoding, "decoding msgpack job: %v", err)
		}
	}
	return &job, nil
}

// jobShape counts, across the whole payload, the elements that decoding
// would allocate per item: candidates and meta entries.
type jobShape struct {
	limits     Limits
	candidates uint64
	meta       uint64
}

func (s *jobShape) visit(depth int, key string, isMap bool, n uint64) error {
	if depth == 1 && !isMap {
		return Errorf(CodeBadEncoding, "a job is a map, not an array")
	}
	if depth != 2 {
		return nil
	}
	switch key {
	case "candidates":
		s.candidates += n
		if s.candidates > uint64(s.limits.MaxCandidates) {
			return Errorf(CodeTooManyCandidates, "more than %d candidates", s.limits.MaxCandidates)
		}
	case "meta":
		s.meta += n
		if s.meta > uint64(s.limits.MaxMetaEntries) {
			return Errorf(CodeMetaTooLarge, "more than %d meta entries", s.limits.MaxMetaEntries)
		}
	}
	return nil
}

// scanJSONJob reads a JSON job token by token before it is decoded,
// counting candidates and meta entries (under the case-insensitive key match
// encoding/json uses) without keeping them, so the decoder proper never
// allocates for more than the limits allow.
func scanJSONJob(data []byte, limits Limits) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	bad := func(err error) error { return Errorf(CodeBadEncoding, "decoding JSON job: %v", err) }
	tok, err := dec.Token()
	if err != nil {
		return bad(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return Errorf(CodeBadEncoding, "decoding JSON job: a job is a JSON object")
	}
	shape := jobShape{limits: limits}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bad(err)
		}
		key, _ := tok.(string)
		field := ""
		switch {
		case strings.EqualFold(key, "candidates"):
			field = "candidates"
		case strings.EqualFold(key, "meta"):
			field = "meta"
		}
		if field == "" {
			if err := skipJSON(dec); err != nil {
				return bad(err)
			}
			continue
		}
		// Count the elements of the array or object one by one.
		tok, err = dec.Token()
		if err != nil {
			return bad(err)
		}
		d, ok := tok.(json.Delim)
		if !ok {
			continue // a scalar: the decoder reports the type error
		}
		for dec.More() {
			if d == '{' {
				if _, err := dec.Token(); err != nil { // the entry's key
					return bad(err)
				}
			}
			if err := shape.visit(2, field, false, 1); err != nil {
				return err
			}
			if err := skipJSON(dec); err != nil {
				return bad(err)
			}
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return bad(err)
		}
	}
	return nil
}

// skipJSON skips one value without keeping it, refusing nesting deeper
// than the msgpack decoder allows.
func skipJSON(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
				if depth > maxMsgpackDepth {
					return fmt.Errorf("nesting deeper than %d levels", maxMsgpackDepth)
				}
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// EncodeJob encodes a job for publishing.
func EncodeJob(j *Job, f Format) ([]byte, error) {
	if f == JSON {
		return json.Marshal(j)
	}
	return msgpack.Marshal(j)
}

// EncodeResult encodes a result, normally in the format its job came in.
func EncodeResult(r *Result, f Format) ([]byte, error) {
	if f == JSON {
		return json.Marshal(r)
	}
	return msgpack.Marshal(r)
}

// DecodeResult decodes a result (for clients).
func DecodeResult(data []byte, f Format) (*Result, error) {
	var r Result
	var err error
	if f == JSON {
		err = json.Unmarshal(data, &r)
	} else {
		if err = checkMsgpack(data, maxMsgpackDepth); err == nil {
			err = msgpack.Unmarshal(data, &r)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("decoding %s result: %w", f, err)
	}
	return &r, nil
}

// checkMsgpack walks one msgpack value without recursion and without
// allocating per element, rejecting truncation, trailing bytes, reserved
// type bytes and nesting deeper than maxDepth. The decoder proper then never
// sees input that could exhaust the stack or promise more elements than the
// payload can hold.
func checkMsgpack(b []byte, maxDepth int) error { return walkMsgpack(b, maxDepth, nil) }

// msgpackFrame is one open container of walkMsgpack: elements left, elements
// in all (a map counts keys and values), and whether it is a map.
type msgpackFrame struct {
	left, total uint64
	isMap       bool
}

// walkMsgpack is checkMsgpack with a visitor, called for every container
// before any of its elements is read: depth 1 is the top-level value, and
// key is the top-level map key a depth-2 container is the value of ("" for
// any other). An error from visit stops the walk and is returned as is.
func walkMsgpack(b []byte, maxDepth int, visit func(depth int, key string, isMap bool, n uint64) error) error {
	stack := make([]msgpackFrame, 1, 8)
	stack[0] = msgpackFrame{left: 1, total: 1}
	pos := 0
	topKey := "" // the last key read in the top-level map
	need := func(n uint64) error {
		if uint64(len(b)-pos) < n {
			return fmt.Errorf("truncated input at byte %d", pos)
		}
		return nil
	}
	uintN := func(n int) (uint64, error) {
		if err := need(uint64(n)); err != nil {
			return 0, err
		}
		var v uint64
		for i := 0; i < n; i++ {
			v = v<<8 | uint64(b[pos+i])
		}
		pos += n
		return v, nil
	}
	for {
		for stack[len(stack)-1].left == 0 {
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				if pos != len(b) {
					return fmt.Errorf("%d trailing bytes after the value", len(b)-pos)
				}
				return nil
			}
		}
		top := &stack[len(stack)-1]
		isKey := top.isMap && (top.total-top.left)%2 == 0
		top.left--
		depth := len(stack)
		if err := need(1); err != nil {
			return err
		}
		c := b[pos]
		pos++
		var skip, children uint64
		container, isMap, isString := false, false, false
		var err error
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			children, container, isMap = uint64(c&0x0f)*2, true, true
		case c >= 0x90 && c <= 0x9f:
			children, container = uint64(c&0x0f), true
		case c >= 0xa0 && c <= 0xbf:
			skip, isString = uint64(c&0x1f), true
		case c == 0xc4, c == 0xd9:
			skip, err = uintN(1)
			isString = true
		case c == 0xc5, c == 0xda:
			skip, err = uintN(2)
			isString = true
		case c == 0xc6, c == 0xdb:
			skip, err = uintN(4)
			isString = true
		case c == 0xc7:
			skip, err = uintN(1)
			skip++
		case c == 0xc8:
			skip, err = uintN(2)
			skip++
		case c == 0xc9:
			skip, err = uintN(4)
			skip++
		case c == 0xca, c == 0xce, c == 0xd2:
			skip = 4
		case c == 0xcb, c == 0xcf, c == 0xd3:
			skip = 8
		case c == 0xcc, c == 0xd0:
			skip = 1
		case c == 0xcd, c == 0xd1:
			skip = 2
		case c >= 0xd4 && c <= 0xd8:
			skip = 1 + (1 << (c - 0xd4))
		case c == 0xdc:
			children, err = uintN(2)
			container = true
		case c == 0xdd:
			children, err = uintN(4)
			container = true
		case c == 0xde:
			children, err = uintN(2)
			children *= 2
			container, isMap = true, true
		case c == 0xdf:
			children, err = uintN(4)
			children *= 2
			container, isMap = true, true
		default: // 0xc1 is never used
			return fmt.Errorf("invalid type byte 0x%02x at byte %d", c, pos-1)
		}
		if err != nil {
			return err
		}
		if err := need(skip); err != nil {
			return err
		}
		if depth == 2 && isKey {
			topKey = ""
			if isString && skip <= 64 {
				topKey = string(b[pos : pos+int(skip)])
			}
		}
		pos += int(skip)
		if container && visit != nil {
			key := ""
			if depth == 2 && !isKey {
				key = topKey
			}
			n := children
			if isMap {
				n /= 2
			}
			if err := visit(depth, key, isMap, n); err != nil {
				return err
			}
		}
		if container && children > 0 {
			// Every element takes at least one byte.
			if err := need(children); err != nil {
				return fmt.Errorf("container at byte %d promises %d elements: %w", pos, children, err)
			}
			if len(stack) >= maxDepth {
				return fmt.Errorf("nesting deeper than %d levels", maxDepth)
			}
			stack = append(stack, msgpackFrame{left: children, total: children, isMap: isMap})
		}
	}
}

// CheckMsgpack reports whether b is one well-formed msgpack value no deeper
// than the contract allows.
func CheckMsgpack(b []byte) error { return checkMsgpack(b, maxMsgpackDepth) }
