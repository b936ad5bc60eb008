package schemas

import (
	"math"
	"strings"
	"unicode/utf8"
)

// Limits bound what a job may hold. The zero value of a field means its default.
type Limits struct {
	MaxCandidates   int // default 4,096
	MaxTextBytes    int // per candidate text; default 64 KiB
	MaxQueryBytes   int // default 1 KiB
	MaxPayloadBytes int // encoded job; default 8 MiB (the NATS max payload)
}

// Default limits.
const (
	DefaultMaxCandidates   = 4096
	DefaultMaxTextBytes    = 64 << 10
	DefaultMaxQueryBytes   = 1 << 10
	DefaultMaxPayloadBytes = 8 << 20
	// MaxIDBytes bounds job ids, which also name result subjects and dedup keys.
	MaxIDBytes = 256
)

// DefaultLimits returns the default limits.
func DefaultLimits() Limits { return Limits{}.withDefaults() }

func (l Limits) withDefaults() Limits {
	if l.MaxCandidates <= 0 {
		l.MaxCandidates = DefaultMaxCandidates
	}
	if l.MaxTextBytes <= 0 {
		l.MaxTextBytes = DefaultMaxTextBytes
	}
	if l.MaxQueryBytes <= 0 {
		l.MaxQueryBytes = DefaultMaxQueryBytes
	}
	if l.MaxPayloadBytes <= 0 {
		l.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	return l
}

// Validate checks a decoded job against the contract and limits. subjectModel
// is the model named by the subject the job arrived on ("" when unknown); a
// job that names a different model is rejected. It returns the first problem
// found as an *Error; checks that need the model's configuration (such as
// missing_score) belong to the injection step.
func Validate(j *Job, subjectModel string, limits Limits) error {
	limits = limits.withDefaults()
	if j.V > Version {
		return Errorf(CodeUnsupportedVersion, "job schema version %d is newer than this worker's %d", j.V, Version)
	}
	if j.V < 0 {
		return Errorf(CodeUnsupportedVersion, "job schema version %d is invalid", j.V)
	}
	if err := CheckID(j.ID); err != nil {
		return err
	}
	if j.Model != "" && subjectModel != "" && j.Model != subjectModel {
		return Errorf(CodeModelMismatch, "job names model %q but was published for model %q", j.Model, subjectModel)
	}
	if j.ReplyTo != "" {
		if err := CheckReplyTo(j.ReplyTo); err != nil {
			return err
		}
	}
	if strings.TrimSpace(j.Query) == "" {
		return Errorf(CodeMissingQuery, "query is required")
	}
	if len(j.Query) > limits.MaxQueryBytes {
		return Errorf(CodeTextTooLong, "query is %d bytes, limit %d", len(j.Query), limits.MaxQueryBytes)
	}
	if !utf8.ValidString(j.Query) {
		return Errorf(CodeBadEncoding, "query is not valid UTF-8")
	}
	if len(j.Candidates) == 0 {
		return Errorf(CodeNoCandidates, "at least one candidate is required")
	}
	if len(j.Candidates) > limits.MaxCandidates {
		return Errorf(CodeTooManyCandidates, "%d candidates, limit %d", len(j.Candidates), limits.MaxCandidates)
	}
	if j.TopN < 0 {
		return Errorf(CodeBadEncoding, "top_n must be 0 (all) or positive, got %d", j.TopN)
	}
	seen := make(map[string]int, len(j.Candidates))
	for i := range j.Candidates {
		c := &j.Candidates[i]
		if c.ID == "" {
			return CandidateErrorf(CodeEmptyCandidateID, i, "", "candidate id is empty")
		}
		if first, dup := seen[c.ID]; dup {
			return CandidateErrorf(CodeDuplicateCandidateID, i, c.ID, "id also used by candidate %d", first)
		}
		seen[c.ID] = i
		if len(c.Text) > limits.MaxTextBytes {
			return CandidateErrorf(CodeTextTooLong, i, c.ID, "text is %d bytes, limit %d", len(c.Text), limits.MaxTextBytes)
		}
		if !utf8.ValidString(c.Text) || !utf8.ValidString(c.ID) {
			return CandidateErrorf(CodeBadEncoding, i, c.ID, "text or id is not valid UTF-8")
		}
		if c.BM25 != nil && !isFinite(*c.BM25) {
			return CandidateErrorf(CodeNonFiniteScore, i, c.ID, "bm25 score is %v", *c.BM25)
		}
		if c.DPR != nil && !isFinite(*c.DPR) {
			return CandidateErrorf(CodeNonFiniteScore, i, c.ID, "dpr score is %v", *c.DPR)
		}
	}
	return nil
}

// CheckID rejects job ids that are empty or cannot name a NATS subject
// token or a dedup key.
func CheckID(id string) error {
	if id == "" {
		return Errorf(CodeMissingID, "job id is required")
	}
	if len(id) > MaxIDBytes {
		return Errorf(CodeInvalidID, "job id is %d bytes, limit %d", len(id), MaxIDBytes)
	}
	if !utf8.ValidString(id) {
		return Errorf(CodeInvalidID, "job id is not valid UTF-8")
	}
	for _, r := range id {
		if r <= ' ' || r == 0x7f || r == '*' || r == '>' || r == '.' {
			return Errorf(CodeInvalidID, "job id %q may not contain whitespace, control characters, '.', '*' or '>'", id)
		}
	}
	return nil
}

func isFinite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// CheckReplyTo accepts a NATS subject to publish to: dot-separated non-empty
// tokens without whitespace or wildcards, outside the job and dead-letter
// subjects (a result published there would be read as a job).
func CheckReplyTo(s string) error {
	if len(s) > 512 || !utf8.ValidString(s) {
		return Errorf(CodeInvalidReplyTo, "reply_to is not a valid subject")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return Errorf(CodeInvalidReplyTo, "reply_to %q is not a valid subject to publish to", s)
		}
	}
	if strings.HasPrefix(s, "rerank.jobs.") || strings.HasPrefix(s, "rerank.dead.") {
		return Errorf(CodeInvalidReplyTo, "reply_to %q points into the job or dead-letter subjects", s)
	}
	return nil
}
