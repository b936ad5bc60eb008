package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/rerank/rerank/schemas"
)

// Headers of the gateway.
const (
	// HeaderIdempotencyKey names the job: a retried request with the same
	// key is the same job (JetStream's Nats-Msg-Id deduplication), answered
	// from the stored result once there is one.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderTimeout bounds the wait for the result: a Go duration ("30s")
	// or seconds ("2.5"). The body's "timeout" field (seconds) says the same.
	HeaderTimeout = "X-Request-Timeout"
	// HeaderJobID is set on every answer about a job.
	HeaderJobID = "X-Rerank-Job-Id"
	// HeaderRequestID names the HTTP request on every answer of the API
	// endpoints; the gateway's log names it too (an internal error is
	// answered with this id, and logged in full under it).
	HeaderRequestID = "X-Request-Id"
)

// Queue is what the gateway needs of the job queue; package client over
// NATS provides it (wired in cmd/rerank). Errors: ErrUnavailable when the
// queue cannot be reached, a *schemas.Error for a job the contract refuses.
type Queue interface {
	// Submit publishes job on lane, in its tenant's namespace (Job.Tenant);
	// the returned Pending waits for its result.
	Submit(ctx context.Context, job *schemas.Job, lane schemas.Lane) (Pending, error)
	// Lookup returns the stored result of tenant's job id; pending reports
	// a job accepted without a result yet; ErrGone a job accepted whose
	// result is no longer stored; ErrNotFound when none of these.
	Lookup(ctx context.Context, tenant, id string) (res *schemas.Result, pending bool, err error)
	// Models lists the models that have a consumer (a worker pool).
	Models(ctx context.Context) ([]string, error)
	// Ready reports whether the queue is reachable.
	Ready(ctx context.Context) error
}

// Pending is a submitted job.
type Pending interface {
	Result(ctx context.Context) (*schemas.Result, error)
	Cancel()
}

// Observer receives one call per request (metrics.Gateway implements it).
type Observer interface {
	Request(endpoint string, status int, d time.Duration)
}

// Server is the HTTP gateway.
type Server struct {
	cfg    Config
	q      Queue
	obs    Observer
	log    *slog.Logger
	mux    *http.ServeMux
	models *modelCache
	// digests are the model digests of the results received (GET /v1/models).
	digests digestLog
	tokens  []token // parsed Config.Tokens
}

// New returns a server over q; obs and log may be nil.
func New(cfg Config, q Queue, obs Observer, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	tokens, _ := parseTokens(cfg.Tokens) // checked by Validate
	s := &Server{cfg: cfg, q: q, obs: obs, log: log, mux: http.NewServeMux(), tokens: tokens,
		models: &modelCache{q: q, ttl: cfg.ModelsTTL, maxStale: cfg.ModelsMaxStale, errTTL: cfg.ModelsErrorTTL}}
	s.route("POST /v1/rerank", "cohere_v1", dialectCohere, s.cohere(1))
	s.route("POST /v2/rerank", "cohere_v2", dialectCohere, s.cohere(2))
	s.route("POST /rerank", "tei", dialectTEI, s.tei)
	s.route("POST /v1/jobs", "jobs_submit", dialectCohere, s.submitJob)
	s.route("GET /v1/jobs/{id}", "jobs_get", dialectCohere, s.getJob)
	s.route("GET /v1/models", "models", dialectCohere, s.listModels)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := q.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if cfg.Metrics != nil {
		s.mux.Handle("GET /metrics", cfg.Metrics)
	}
	if len(cfg.Tokens) == 0 {
		log.Warn("the HTTP gateway has no bearer tokens: anyone who reaches it can submit jobs")
	}
	return s, nil
}

// Handler is the server's HTTP handler (tests, or mounting elsewhere).
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves on ln until ctx ends, then stops taking requests and waits
// up to 30 s for those in flight. A request cut short loses no job: the job
// stays queued and its result can be fetched by id. The caller opens ln
// (and so can fail, or log the bound address, before serving). Reading a
// request is bounded by Config.ReadTimeout (headers alone by 10 s), idle
// keep-alive connections by Config.IdleTimeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: min(readHeaderTimeout, s.cfg.ReadTimeout),
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn), // net/http's own: accept errors, bad TLS
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }() // owned here: Serve returns after it
	select {
	case err := <-done:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-done
	if err != nil {
		return fmt.Errorf("stopping the HTTP gateway: %w", err)
	}
	return nil
}

// handler serves one endpoint for tenant t. It writes its success itself
// and returns any failure, which route answers.
type handler func(w http.ResponseWriter, r *http.Request, t tenant) error

// route serves one endpoint: it names the request (X-Request-Id), admits
// it, runs h, answers its failure (the one place failures are answered) and
// reports the outcome to the Observer.
func (s *Server) route(pattern, endpoint string, d dialect, h handler) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rid := newRequestID()
		sw.Header().Set(HeaderRequestID, rid)
		t, err := s.admit(r)
		if err == nil {
			err = h(sw, r, t)
		}
		if err != nil {
			writeError(sw, d, s.failure(r, endpoint, rid, err))
		}
		if s.obs != nil {
			s.obs.Request(endpoint, sw.status, time.Since(start))
		}
	})
}

// failure is the answer to a failed request. A request whose client went
// away is its own outcome (499), logged at Info: it is no failure of the
// gateway's and must not feed the 5xx alert. An internal error is logged
// in full with the request id, and answered with that id only: its text
// may name hosts, paths or credentials.
func (s *Server) failure(r *http.Request, endpoint, rid string, err error) *apiError {
	ae := asAPIError(err)
	// A body that stalled past ReadTimeout cancels the request too (net/http
	// cancels it on any read error): that is the client's slowness, a 408.
	if r.Context().Err() != nil && ae.code != codeRequestTimeout {
		s.log.Info("gateway request abandoned by its client", "endpoint", endpoint, "request_id", rid, "status", statusClientClosed, "err", err)
		return errorf(codeClientClosed, "the client closed the request")
	}
	if ae.code == schemas.CodeInternal {
		s.log.Error("gateway request failed", "endpoint", endpoint, "request_id", rid, "job_id", ae.jobID, "err", err)
		return &apiError{code: ae.code, jobID: ae.jobID, message: "internal error; the gateway's log holds it under request id " + rid}
	}
	return ae
}

// newRequestID names one HTTP request, in the answer's X-Request-Id and
// the gateway's log.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap gives http.ResponseController the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// jobID is the request's Idempotency-Key, or a new id.
func jobID(r *http.Request) (string, error) {
	if k := r.Header.Get(HeaderIdempotencyKey); k != "" {
		if err := schemas.CheckID(k); err != nil {
			return "", fmt.Errorf("%s names the job: %w", HeaderIdempotencyKey, err)
		}
		return k, nil
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "gw-" + hex.EncodeToString(b[:]), nil
}

// timeout is the wait a request asks for (header, else body seconds),
// capped; 0 seconds means the default.
func (s *Server) timeout(r *http.Request, bodySeconds float64) (time.Duration, error) {
	d := time.Duration(bodySeconds * float64(time.Second))
	if h := r.Header.Get(HeaderTimeout); h != "" {
		var err error
		if d, err = time.ParseDuration(h); err != nil {
			f, ferr := strconv.ParseFloat(h, 64)
			if ferr != nil {
				return 0, errorf(codeBadRequest, HeaderTimeout+" must be a duration (30s) or seconds")
			}
			d = time.Duration(f * float64(time.Second))
		}
	}
	switch {
	case d < 0:
		return 0, errorf(codeBadRequest, "timeout must not be negative")
	case d == 0:
		d = s.cfg.Timeout
	}
	return min(d, s.cfg.MaxTimeout), nil
}

// newJob starts the job of a re-rank request: its model, its id, how long
// the request waits for it, and its size against the limits (checked
// before the candidates are copied). textBytes is the length of the query
// and the texts: the job could not be smaller, so over the payload limit
// it could not be published.
func (s *Server) newJob(r *http.Request, t tenant, model string, timeout float64, candidates, textBytes int) (*schemas.Job, time.Duration, error) {
	if max := s.cfg.Limits.MaxCandidates; candidates > max {
		return nil, 0, schemas.Errorf(schemas.CodeTooManyCandidates, "%d documents, limit %d", candidates, max)
	}
	if max := s.cfg.Limits.MaxPayloadBytes; textBytes > max {
		return nil, 0, schemas.Errorf(schemas.CodePayloadTooLarge, "the query and texts are %d bytes, over the job limit of %d", textBytes, max)
	}
	model, err := s.model(r.Context(), model)
	if err != nil {
		return nil, 0, err
	}
	id, err := jobID(r)
	if err != nil {
		return nil, 0, err
	}
	wait, err := s.timeout(r, timeout)
	if err != nil {
		return nil, 0, err
	}
	return &schemas.Job{ID: id, Model: model, Tenant: string(t)}, wait, nil
}

// model resolves the model a request names.
func (s *Server) model(ctx context.Context, name string) (string, error) {
	models, err := s.modelList(ctx)
	if err != nil {
		return "", err
	}
	if name == "" {
		name = s.cfg.DefaultModel
	}
	if name == "" {
		if len(models) == 1 {
			return models[0], nil
		}
		return "", errorf(codeNoModel, fmt.Sprintf("name a model: the workers serve %v", models))
	}
	for _, m := range models {
		if m == name {
			return name, nil
		}
	}
	return "", errorf(schemas.CodeUnknownModel, fmt.Sprintf("no worker serves model %q (served: %v)", name, models))
}

func (s *Server) modelList(ctx context.Context) ([]string, error) { return s.models.list(ctx) }

// jobPath is the path of job id's result.
func jobPath(id string) string { return "/v1/jobs/" + url.PathEscape(id) }

// rerank submits job and waits for its result up to wait. A job the
// worker answered with an error comes back as that error; a wait that ends
// first is a timeout naming the job, which stays queued.
func (s *Server) rerank(ctx context.Context, job *schemas.Job, lane schemas.Lane, wait time.Duration) (*schemas.Result, error) {
	key := job.ID
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	p, err := s.q.Submit(wctx, job, lane) // an unanswered publish is the Queue's ErrUnavailable
	if err != nil {
		if ctx.Err() == nil && wctx.Err() != nil {
			// The request's own deadline ran out during the publish: a
			// timeout, not an outage.
			return nil, &apiError{code: codeTimeout, message: fmt.Sprintf("the %s deadline passed before the job's queueing was confirmed; send the request again with the same %s (it is never queued twice) and a longer timeout", wait, HeaderIdempotencyKey)}
		}
		return nil, err
	}
	res, err := p.Result(wctx)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, &apiError{code: codeTimeout, jobID: key,
				message: fmt.Sprintf("no result within %s; the job stays queued: GET %s, or send the request again with the same %s", wait, jobPath(key), HeaderIdempotencyKey)}
		}
		return nil, err
	}
	if res.Error != nil {
		ae := asAPIError(res.Error) // names the document it is about
		ae.jobID = key
		return nil, ae
	}
	s.digests.record(job.Model, res.ModelDigest, time.Now())
	return res, nil
}
