package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/rerank/rerank/schemas"
)

// submitJob serves POST /v1/jobs: a native job (schemas.Job as JSON, the
// id optional), queued and answered 202 {id} at once. The lane is the
// body's "lane" ("interactive" or "bulk"); default bulk, for asynchronous
// bulk work. The result is read with GET /v1/jobs/{id}.
func (s *Server) submitJob(w http.ResponseWriter, r *http.Request, t tenant) error {
	raw, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	if err := s.checkArrays(raw); err != nil {
		return err
	}
	// The lane is not part of the job (the edge chooses it).
	var extra struct {
		Lane string `json:"lane"`
	}
	_ = json.Unmarshal(raw, &extra) // a body that is no JSON object is DecodeJob's to refuse
	lane := schemas.Bulk
	if extra.Lane != "" {
		l, err := schemas.ParseLane(extra.Lane)
		if err != nil {
			return errorf(codeBadRequest, err.Error())
		}
		lane = l
	}
	job, err := schemas.DecodeJob(bytes.TrimSpace(raw), schemas.JSON, s.cfg.Limits)
	if err != nil {
		return err
	}
	if job.ReplyTo != "" {
		return errorf(schemas.CodeInvalidReplyTo, "reply_to is not taken over HTTP: results are stored and read with GET /v1/jobs/{id}")
	}
	key := job.ID
	if key == "" {
		if key, err = jobID(r); err != nil {
			return err
		}
	} else if k := r.Header.Get(HeaderIdempotencyKey); k != "" && k != key {
		return errorf(codeBadRequest, "the job id and the "+HeaderIdempotencyKey+" header differ")
	}
	job.ID, job.Tenant = key, string(t)
	if job.Model, err = s.model(r.Context(), job.Model); err != nil {
		return err
	}
	p, err := s.q.Submit(r.Context(), job, lane)
	if err != nil {
		return err
	}
	p.Cancel() // the result is stored; nobody waits here
	w.Header().Set(HeaderJobID, key)
	w.Header().Set("Location", jobPath(key))
	writeJSON(w, http.StatusAccepted, map[string]string{"id": key, "status": "queued"})
	return nil
}

// getJob serves GET /v1/jobs/{id}: the stored result (200; a job answered
// with an error is still 200, its "error" set), 202 while the job waits,
// 410 when it was accepted but its result is no longer stored, or 404.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request, t tenant) error {
	id := r.PathValue("id")
	if err := schemas.CheckID(id); err != nil {
		return err
	}
	res, pending, err := s.q.Lookup(r.Context(), string(t), id)
	w.Header().Set(HeaderJobID, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return &apiError{code: codeNotFound, message: "no job " + id + " (unknown, or its result has expired)", jobID: id}
	case errors.Is(err, ErrGone):
		return &apiError{code: codeGone, jobID: id, message: "job " + id + " was accepted, but its result is no longer stored " +
			"(or the job has waited longer than results are kept): submit it again"}
	case err != nil:
		return err
	case res == nil && pending:
		writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "status": "pending"})
		return nil
	case res == nil:
		return &apiError{code: codeNotFound, message: "no job " + id, jobID: id}
	}
	if res.Error == nil {
		s.digests.record(res.Model, res.ModelDigest, time.Now())
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// listModels serves GET /v1/models.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request, _ tenant) error {
	ms, err := s.modelList(r.Context())
	if err != nil {
		return err
	}
	type model struct {
		ID     string `json:"id"`
		Object string `json:"object"`
		// Digests are the provenance digests (model_digest) of the
		// results this gateway received for the model in the last hour,
		// most recently seen first: two mean that workers serve the name
		// from different files or settings.
		Digests []string `json:"digests,omitempty"`
	}
	out := struct {
		Object string   `json:"object"`
		Data   []model  `json:"data"`
		Models []string `json:"models"`
	}{Object: "list", Data: []model{}, Models: ms}
	now := time.Now()
	for _, m := range ms {
		out.Data = append(out.Data, model{ID: m, Object: "model", Digests: s.digests.recent(m, now)})
	}
	if s.cfg.DefaultModel != "" {
		w.Header().Set("X-Rerank-Default-Model", s.cfg.DefaultModel)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
