package inject

import (
	"math"
	"strconv"
	"strings"

	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/schemas"
)

// Render writes the text pair the model reads for each candidate, in
// candidate order. A candidate that lacks a score the templates need fails
// the job with missing_score naming it: a score is never guessed. The
// config must have been validated (Resolve and Preset do that).
func (c *Config) Render(job *schemas.Job) ([]wordpiece.Pair, error) {
	var bm25, dpr []string
	var err error
	if c.NeedsBM25() {
		if bm25, err = c.Scores.BM25.formatAll(job, "bm25", func(x *schemas.Candidate) *float64 { return x.BM25 }); err != nil {
			return nil, err
		}
	}
	if c.NeedsDPR() {
		if dpr, err = c.Scores.DPR.formatAll(job, "dpr", func(x *schemas.Candidate) *float64 { return x.DPR }); err != nil {
			return nil, err
		}
	}
	pairs := make([]wordpiece.Pair, len(job.Candidates))
	var sb strings.Builder
	v := values{query: job.Query}
	for i := range job.Candidates {
		v.passage = job.Candidates[i].Text
		if bm25 != nil {
			v.bm25 = bm25[i]
		}
		if dpr != nil {
			v.dpr = dpr[i]
		}
		pairs[i].A = c.a.render(&sb, &v)
		pairs[i].B = c.b.render(&sb, &v)
	}
	return pairs, nil
}

func (s *ScoreSpec) formatAll(job *schemas.Job, name string, get func(*schemas.Candidate) *float64) ([]string, error) {
	raw := make([]float64, len(job.Candidates))
	for i := range job.Candidates {
		p := get(&job.Candidates[i])
		if p == nil {
			return nil, schemas.CandidateErrorf(schemas.CodeMissingScore, i, job.Candidates[i].ID,
				"the model's input template needs a %s score and the candidate has none", name)
		}
		if math.IsNaN(*p) || math.IsInf(*p, 0) {
			return nil, schemas.CandidateErrorf(schemas.CodeNonFiniteScore, i, job.Candidates[i].ID, "%s score is %v", name, *p)
		}
		raw[i] = *p
	}
	norm := s.Normalize(raw)
	out := make([]string, len(norm))
	for i, v := range norm {
		out[i] = s.FormatValue(v)
	}
	return out, nil
}

// Normalize maps a job's raw scores to normalized, scaled values, computed
// in float64 in the order the authors' Python does: ((s - min) / (max -
// min)) * scale. In local normalizations a zero range, zero std or zero sum
// gives 0 for every candidate.
func (s *ScoreSpec) Normalize(raw []float64) []float64 {
	out := make([]float64, len(raw))
	scale := s.scale()
	switch s.Normalization {
	case None:
		for i, x := range raw {
			out[i] = x * scale
		}
	case GlobalMinMax:
		lo, hi := *s.Min, *s.Max
		for i, x := range raw {
			out[i] = ((x - lo) / (hi - lo)) * scale
		}
	case LocalMinMax:
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, x := range raw {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
		if hi > lo {
			for i, x := range raw {
				out[i] = ((x - lo) / (hi - lo)) * scale
			}
		}
	case GlobalZScore:
		for i, x := range raw {
			out[i] = ((x - *s.Mean) / *s.Std) * scale
		}
	case LocalZScore:
		var sum float64
		for _, x := range raw {
			sum += x
		}
		mean := sum / float64(len(raw))
		var ss float64
		for _, x := range raw {
			ss += (x - mean) * (x - mean)
		}
		if std := math.Sqrt(ss / float64(len(raw))); std > 0 {
			for i, x := range raw {
				out[i] = ((x - mean) / std) * scale
			}
		}
	case Sum:
		var sum float64
		for _, x := range raw {
			sum += x
		}
		if sum != 0 {
			for i, x := range raw {
				out[i] = (x / sum) * scale
			}
		}
	}
	return out
}

// FormatValue writes a normalized, scaled value as the model was trained to
// read it: Int truncates toward zero with no clipping (Python's int()),
// Float rounds to Decimals digits (Python's f"{x:.{d}f}").
func (s *ScoreSpec) FormatValue(v float64) string {
	if s.Format == Float {
		return strconv.FormatFloat(v, 'f', s.Decimals, 64)
	}
	t := math.Trunc(v)
	if t == 0 {
		return "0" // Python's int(-0.5) is 0, not -0
	}
	return strconv.FormatFloat(t, 'f', 0, 64)
}

// Line is one line of `rerank inject` output and of the golden files: what
// the model will read for one candidate.
type Line struct {
	Index int    `json:"index"`
	ID    string `json:"id"`
	TextA string `json:"text_a"`
	TextB string `json:"text_b"`
}

// Lines pairs a job's candidates with their rendered text.
func Lines(job *schemas.Job, pairs []wordpiece.Pair) []Line {
	out := make([]Line, len(pairs))
	for i, p := range pairs {
		out[i] = Line{Index: i, ID: job.Candidates[i].ID, TextA: p.A, TextB: p.B}
	}
	return out
}
