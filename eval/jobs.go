package eval

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/rerank/rerank/schemas"
)

// maxQIDBytes bounds the query-id part of a job id, leaving room for the
// prefix and a hash suffix under schemas.MaxIDBytes.
const maxQIDBytes = 160

// NewIDPrefix returns "eval-<8 random hex digits>-". A fresh prefix per
// evaluation keeps its job ids apart from an earlier evaluation's of the
// same queries: the client looks a result up by job id in the results
// stream, and JetStream drops a job id seen within its dedup window, so
// reusing ids could return an earlier run's (another model's) result.
func NewIDPrefix() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return "eval-" + hex.EncodeToString(b[:]) + "-"
}

// JobID makes a job id that satisfies schemas.CheckID from a prefix and a
// query id: characters a job id may not hold (whitespace, control
// characters, '.', '*', '>', invalid UTF-8) become '_', and a long query id
// is cut. When the query id had to change, a hash of the original is
// appended so two query ids never share a job id ("a.b" → "a_b~1b2c3d4e").
func JobID(prefix, qid string) string {
	var sb strings.Builder
	changed := !utf8.ValidString(qid)
	for _, r := range strings.ToValidUTF8(qid, "_") {
		if r <= ' ' || r == 0x7f || r == '.' || r == '*' || r == '>' || r == utf8.RuneError {
			r = '_'
			changed = true
		}
		if sb.Len()+utf8.RuneLen(r) > maxQIDBytes {
			changed = true
			break
		}
		sb.WriteRune(r)
	}
	if sb.Len() == 0 {
		changed = true
	}
	id := prefix + sb.String()
	if changed {
		h := fnv.New32a()
		h.Write([]byte(qid))
		id += fmt.Sprintf("~%08x", h.Sum32())
	}
	return id
}

// DPRMissing says what a job gets for a candidate that the DPR run does not
// score.
type DPRMissing string

// The DPRMissing policies.
const (
	// DPROmit leaves dpr unset: models that inject dpr then reject the job
	// with missing_score, so nothing is silently made up.
	DPROmit DPRMissing = "omit"
	// DPRMin uses the lowest dpr score the DPR run gives that query (the
	// score of a passage the dense retriever ranked below its cut-off is at
	// most that).
	DPRMin DPRMissing = "min"
)

// ParseDPRMissing parses a DPRMissing policy ("" means DPROmit).
func ParseDPRMissing(s string) (DPRMissing, error) {
	switch DPRMissing(s) {
	case "", DPROmit:
		return DPROmit, nil
	case DPRMin:
		return DPRMin, nil
	}
	return "", fmt.Errorf("dpr-missing %q: want %s or %s", s, DPROmit, DPRMin)
}

// BuildJob builds the re-ranking job of one query: the candidates are the
// first stage's ranked entries in order (already cut to depth), each with
// its passage text, its first-stage score as bm25 and, when dpr is not nil,
// the DPR run's score for it (entries of that query, any order). The job
// carries meta {"qid": qid} and leaves model unset (the Reranker chooses).
func BuildJob(id, qid, query string, ranked []Entry, texts map[string]string, dpr []Entry, missing DPRMissing) (*schemas.Job, error) {
	if err := schemas.CheckID(id); err != nil {
		return nil, err
	}
	var dprScores map[string]float64
	fill := math.NaN()
	if dpr != nil {
		dprScores = make(map[string]float64, len(dpr))
		for _, e := range dpr {
			dprScores[e.Doc] = e.Score
			if missing == DPRMin && (math.IsNaN(fill) || e.Score < fill) {
				fill = e.Score
			}
		}
	}
	job := &schemas.Job{
		ID:         id,
		Query:      query,
		Candidates: make([]schemas.Candidate, len(ranked)),
		Meta:       map[string]string{"qid": qid},
	}
	for i, e := range ranked {
		text, ok := texts[e.Doc]
		if !ok {
			return nil, fmt.Errorf("query %s: passage %s is not in the collection", qid, e.Doc)
		}
		bm25 := e.Score
		c := schemas.Candidate{ID: e.Doc, Text: text, BM25: &bm25}
		if v, ok := dprScores[e.Doc]; ok {
			c.DPR = &v
		} else if dpr != nil && !math.IsNaN(fill) {
			v := fill
			c.DPR = &v
		}
		job.Candidates[i] = c
	}
	return job, nil
}
