package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/rerank/rerank/schemas"
)

// cohereRequest is the body of POST /v1/rerank and /v2/rerank: Cohere's
// (and Jina's) re-rank request. Documents are strings, or objects with a
// text; as this project's extension an object may carry the first-stage
// scores the injecting presets read ("bm25", "dpr") and an "id".
type cohereRequest struct {
	Model           string           `json:"model"`
	Query           string           `json:"query"`
	Documents       []cohereDocument `json:"documents"`
	TopN            *int             `json:"top_n"`
	ReturnDocuments bool             `json:"return_documents"`
	// Priority (Cohere v2): 0, the default, is the interactive lane; a
	// higher number the bulk lane.
	Priority int `json:"priority"`
	// Timeout is this gateway's extension: seconds to wait for the result.
	Timeout float64 `json:"timeout"`
	// Accepted for compatibility; truncation follows the model's config.
	MaxChunksPerDoc int      `json:"max_chunks_per_doc"`
	MaxTokensPerDoc int      `json:"max_tokens_per_doc"`
	RankFields      []string `json:"rank_fields"`
}

type cohereDocument struct {
	ID   string
	Text string
	BM25 *float64
	DPR  *float64
}

func (d *cohereDocument) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &d.Text)
	}
	var o struct {
		ID   json.RawMessage `json:"id"`
		Text *string         `json:"text"`
		BM25 *float64        `json:"bm25"`
		DPR  *float64        `json:"dpr"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("a document is a string or an object with a text: %w", err)
	}
	if o.Text == nil {
		return fmt.Errorf("a document object has no \"text\"")
	}
	d.Text, d.BM25, d.DPR = *o.Text, o.BM25, o.DPR
	if len(o.ID) > 0 && string(o.ID) != "null" {
		var s string
		if json.Unmarshal(o.ID, &s) != nil {
			s = string(o.ID) // a number
		}
		d.ID = s
	}
	return nil
}

type cohereResult struct {
	Index          int                 `json:"index"`
	RelevanceScore float64             `json:"relevance_score"`
	Document       *cohereResultDocOut `json:"document,omitempty"`
}

type cohereResultDocOut struct {
	Text string `json:"text"`
}

type cohereResponse struct {
	ID      string         `json:"id"`
	Results []cohereResult `json:"results"`
	Meta    cohereMeta     `json:"meta"`
}

type cohereMeta struct {
	APIVersion struct {
		Version string `json:"version"`
	} `json:"api_version"`
	BilledUnits struct {
		SearchUnits int `json:"search_units"`
	} `json:"billed_units"`
	// Rerank is this gateway's own: the model, its provenance digest, the
	// pairs taken from the pair cache and the worker's timing.
	Rerank struct {
		Model       string         `json:"model"`
		ModelDigest string         `json:"model_digest,omitempty"`
		Cached      int            `json:"cached,omitempty"`
		Attempt     int            `json:"attempt,omitempty"`
		Timing      schemas.Timing `json:"timing"`
	} `json:"rerank"`
}

// cohere serves Cohere's re-rank API, version 1 or 2.
func (s *Server) cohere(version int) handler {
	return func(w http.ResponseWriter, r *http.Request, t tenant) error {
		var req cohereRequest
		if err := s.decodeBody(w, r, &req); err != nil {
			return err
		}
		size := len(req.Query)
		for _, d := range req.Documents {
			size += len(d.Text)
		}
		job, wait, err := s.newJob(r, t, req.Model, req.Timeout, len(req.Documents), size)
		if err != nil {
			return err
		}
		id := job.ID
		job.Query, job.ReturnDocuments = req.Query, req.ReturnDocuments
		if req.TopN != nil { // 0 is every document, as in native jobs
			if *req.TopN < 0 {
				return errorf(codeBadRequest, "top_n must be 0 (every document) or more")
			}
			job.TopN = min(*req.TopN, len(req.Documents))
		}
		job.Candidates = make([]schemas.Candidate, len(req.Documents))
		for i, d := range req.Documents {
			cid := d.ID
			if cid == "" {
				cid = strconv.Itoa(i)
			}
			job.Candidates[i] = schemas.Candidate{ID: cid, Text: d.Text, BM25: d.BM25, DPR: d.DPR}
		}
		lane := schemas.Interactive
		if req.Priority > 0 {
			lane = schemas.Bulk
		}
		res, err := s.rerank(r.Context(), job, lane, wait)
		if err != nil {
			return err
		}
		out := cohereResponse{ID: id, Results: make([]cohereResult, len(res.Results))}
		for i, rk := range res.Results {
			out.Results[i] = cohereResult{Index: rk.Index, RelevanceScore: rk.RelevanceScore}
			if req.ReturnDocuments && rk.Document != nil {
				out.Results[i].Document = &cohereResultDocOut{Text: *rk.Document}
			}
		}
		out.Meta.APIVersion.Version = strconv.Itoa(version)
		out.Meta.BilledUnits.SearchUnits = 1
		out.Meta.Rerank.Model, out.Meta.Rerank.Attempt, out.Meta.Rerank.Timing = res.Model, res.Attempt, res.Timing
		out.Meta.Rerank.ModelDigest, out.Meta.Rerank.Cached = res.ModelDigest, res.Cached
		w.Header().Set(HeaderJobID, id)
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}
