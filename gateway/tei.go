package gateway

import (
	"net/http"
	"strconv"

	"github.com/rerank/rerank/schemas"
)

// teiRequest is the body of POST /rerank, Hugging Face Text Embeddings
// Inference's re-rank request. TEI serves one model: here the gateway's
// default model (or the "model" extension field).
type teiRequest struct {
	Query      string   `json:"query"`
	Texts      []string `json:"texts"`
	RawScores  bool     `json:"raw_scores"`
	ReturnText bool     `json:"return_text"`
	// Truncate is accepted: inputs are always truncated as the model was
	// trained (its max_length and truncation strategy).
	Truncate            *bool   `json:"truncate"`
	TruncationDirection string  `json:"truncation_direction"`
	Model               string  `json:"model"`
	Timeout             float64 `json:"timeout"`
}

type teiResult struct {
	Index int     `json:"index"`
	Score float64 `json:"score"`
	Text  *string `json:"text,omitempty"`
}

func (s *Server) tei(w http.ResponseWriter, r *http.Request, tn tenant) error {
	var req teiRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.RawScores {
		// The workers answer the model's activated score (sigmoid or
		// softmax, as sentence-transformers prints it); the logits are not
		// on the wire.
		return errorf(codeBadRequest, "raw_scores is not supported: each model answers the score its configuration names (rerank.json output.activation: sigmoid or softmax as sentence-transformers' CrossEncoder.predict prints them, or none for the raw logit), the same for every request")
	}
	if req.TruncationDirection != "" && req.TruncationDirection != "right" && req.TruncationDirection != "Right" {
		return errorf(codeBadRequest, "truncation_direction: only right truncation is supported (the model's configured truncation applies)")
	}
	size := len(req.Query)
	for _, t := range req.Texts {
		size += len(t)
	}
	job, wait, err := s.newJob(r, tn, req.Model, req.Timeout, len(req.Texts), size)
	if err != nil {
		return err
	}
	id := job.ID
	job.Query, job.ReturnDocuments = req.Query, req.ReturnText
	job.Candidates = make([]schemas.Candidate, len(req.Texts))
	for i, t := range req.Texts {
		job.Candidates[i] = schemas.Candidate{ID: strconv.Itoa(i), Text: t}
	}
	res, err := s.rerank(r.Context(), job, schemas.Interactive, wait)
	if err != nil {
		return err
	}
	out := make([]teiResult, len(res.Results))
	for i, rk := range res.Results {
		out[i] = teiResult{Index: rk.Index, Score: rk.RelevanceScore}
		if req.ReturnText {
			out[i].Text = rk.Document
		}
	}
	w.Header().Set(HeaderJobID, id)
	writeJSON(w, http.StatusOK, out)
	return nil
}
