package schemas

import (
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits bound what a job may hold. The zero value of a field means its default.
type Limits struct {
	MaxCandidates   int // default 4,096
	MaxTextBytes    int // per candidate text; default 64 KiB
	MaxQueryBytes   int // default 1 KiB
	MaxPayloadBytes int // encoded job; default 8 MiB (the NATS max payload)
	MaxMetaEntries  int // entries of meta; default 64
	// ReplyAllow, when set, is the operator's allow-list for reply_to: a
	// subject must equal one of these prefixes or start with one followed
	// by a dot. Empty allows every subject CheckReplyTo accepts.
	ReplyAllow []string
}

// Default limits.
const (
	DefaultMaxCandidates   = 4096
	DefaultMaxTextBytes    = 64 << 10
	DefaultMaxQueryBytes   = 1 << 10
	DefaultMaxPayloadBytes = 8 << 20
	DefaultMaxMetaEntries  = 64
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
	if l.MaxMetaEntries <= 0 {
		l.MaxMetaEntries = DefaultMaxMetaEntries
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
		if err := CheckReplyTo(j.ReplyTo, j.ID, limits.ReplyAllow); err != nil {
			return err
		}
	}
	if len(j.Meta) > limits.MaxMetaEntries {
		return Errorf(CodeMetaTooLarge, "%d meta entries, limit %d", len(j.Meta), limits.MaxMetaEntries)
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

// MaxReplyToBytes bounds reply_to.
const MaxReplyToBytes = 256

// CheckReplyTo accepts a NATS subject the worker may publish job id's result
// to. It refuses, whatever the operator allows:
//   - anything but dot-separated non-empty tokens of printable characters
//     without whitespace or the wildcards '*' and '>';
//   - every subject starting with '$' (the JetStream, KV, system and
//     account APIs: a result published there would act on the server);
//   - every tenant's namespace (rerank.tenant.: a tenant's results are
//     the worker's to address, from the tenant the job came from);
//   - the job and dead-letter subjects (a result there would be read as a
//     job) and another job's result subject: under rerank.results. the
//     last token must be the job's id (rerank.results.<id>, or a client's
//     namespace rerank.results.<client>.<id>), so a job cannot answer, or
//     overwrite the stored result of, a job with another id.
//
// allow, when not empty, is the operator's allow-list of prefixes.
func CheckReplyTo(s, jobID string, allow []string) error {
	if len(s) > MaxReplyToBytes || !utf8.ValidString(s) {
		return Errorf(CodeInvalidReplyTo, "reply_to is not a valid subject (at most %d bytes of UTF-8)", MaxReplyToBytes)
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '*' || r == '>' || !unicode.IsPrint(r) {
			return Errorf(CodeInvalidReplyTo, "reply_to %q holds whitespace, a control character or a wildcard", s)
		}
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return Errorf(CodeInvalidReplyTo, "reply_to %q has an empty token", s)
		}
	}
	switch {
	case strings.HasPrefix(s, "$"):
		return Errorf(CodeInvalidReplyTo, "reply_to %q is a system subject ('$' prefix)", s)
	case strings.HasPrefix(s, TenantPrefix), s+"." == TenantPrefix:
		return Errorf(CodeInvalidReplyTo, "reply_to %q points into a tenant's namespace", s)
	case strings.HasPrefix(s, JobsPrefix), strings.HasPrefix(s, DeadPrefix), s+"." == JobsPrefix, s+"." == DeadPrefix:
		return Errorf(CodeInvalidReplyTo, "reply_to %q points into the job or dead-letter subjects", s)
	case strings.HasPrefix(s, ResultsPrefix) && s[strings.LastIndexByte(s, '.')+1:] != jobID:
		return Errorf(CodeInvalidReplyTo, "reply_to %q is another job's result subject (under %s the last token must be the job id %q)", s, ResultsPrefix, jobID)
	}
	if len(allow) == 0 {
		return nil
	}
	for _, p := range allow {
		if p = strings.TrimSuffix(p, "."); s == p || strings.HasPrefix(s, p+".") {
			return nil
		}
	}
	return Errorf(CodeInvalidReplyTo, "reply_to %q is outside the subjects this worker may answer on", s)
}

// CheckResult reports whether res can be the answer to job: it names the
// job's id, and every ranked entry points at one of the job's candidates
// (index in range, same id), at most once. A client uses it to ignore
// results that are not its job's: anyone who may publish to a result
// subject could otherwise answer in the worker's place.
func CheckResult(job *Job, res *Result) error {
	if res.ID != job.ID {
		return Errorf(CodeBadEncoding, "result is for job %q, not %q", truncateForMessage(res.ID), job.ID)
	}
	if len(res.Results) > len(job.Candidates) {
		return Errorf(CodeBadEncoding, "result ranks %d entries for %d candidates", len(res.Results), len(job.Candidates))
	}
	seen := make(map[int]bool, len(res.Results))
	for k, r := range res.Results {
		if r.Index < 0 || r.Index >= len(job.Candidates) || seen[r.Index] {
			return Errorf(CodeBadEncoding, "result entry %d has index %d: out of range or repeated", k, r.Index)
		}
		if r.ID != job.Candidates[r.Index].ID {
			return Errorf(CodeBadEncoding, "result entry %d names candidate %q at index %d, which is %q", k, truncateForMessage(r.ID), r.Index, job.Candidates[r.Index].ID)
		}
		seen[r.Index] = true
	}
	return nil
}

func truncateForMessage(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
