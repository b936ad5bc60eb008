package gateway

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
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
)

// Queue is what the gateway needs of the job queue; package client over
// NATS provides it (wired in cmd/rerank). Errors: ErrUnavailable when the
// queue cannot be reached, a *schemas.Error for a job the contract refuses.
type Queue interface {
	// Submit publishes job on lane; the returned Pending waits for its result.
	Submit(ctx context.Context, job *schemas.Job, lane schemas.Lane) (Pending, error)
	// Lookup returns the stored result of job id; pending reports a job
	// accepted without a result yet; ErrNotFound when neither.
	Lookup(ctx context.Context, id string) (res *schemas.Result, pending bool, err error)
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

// Config configures a Server.
type Config struct {
	// DefaultModel serves requests that name no model (and every TEI
	// request); empty: the only model the workers serve, if there is one.
	DefaultModel string
	// Tokens are the accepted bearer tokens; none leaves the gateway open.
	Tokens []string
	// Limits are the job limits; zero fields take schemas' defaults.
	Limits schemas.Limits
	// Timeout is the default wait for a result; default 60 s.
	Timeout time.Duration
	// MaxTimeout caps the wait a request may ask for; default 10 min.
	MaxTimeout time.Duration
	// Metrics, when set, is served at /metrics.
	Metrics http.Handler
	// ModelsTTL is how long the model list is cached; default 5 s.
	ModelsTTL time.Duration
}

// Defaults. DefaultAddr is where `rerank serve` on its embedded NATS
// server listens for HTTP.
const (
	DefaultAddr       = "127.0.0.1:8080"
	DefaultTimeout    = 60 * time.Second
	DefaultMaxTimeout = 10 * time.Minute
)

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxTimeout <= 0 {
		c.MaxTimeout = DefaultMaxTimeout
	}
	if c.ModelsTTL <= 0 {
		c.ModelsTTL = 5 * time.Second
	}
	if c.Limits.MaxPayloadBytes <= 0 {
		c.Limits.MaxPayloadBytes = schemas.DefaultMaxPayloadBytes
	}
	return c
}

// Validate reports a configuration the server cannot run with.
func (c Config) Validate() error {
	if c.Timeout > 0 && c.MaxTimeout > 0 && c.Timeout > c.MaxTimeout {
		return fmt.Errorf("gateway: timeout %s is over the max timeout %s", c.Timeout, c.MaxTimeout)
	}
	for _, t := range c.Tokens {
		if strings.TrimSpace(t) == "" || strings.ContainsAny(t, " \t\r\n") {
			return errors.New("gateway: a bearer token is empty or contains whitespace")
		}
	}
	return nil
}

// Server is the HTTP gateway.
type Server struct {
	cfg Config
	q   Queue
	obs Observer
	log *slog.Logger
	mux *http.ServeMux

	mu       sync.Mutex
	models   []string
	modelsAt time.Time
}

// New returns a server over q; obs may be nil.
func New(cfg Config, q Queue, obs Observer, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg.withDefaults(), q: q, obs: obs, log: log, mux: http.NewServeMux()}
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
	if len(cfg.Tokens) == 0 && log != nil {
		log.Warn("the HTTP gateway has no bearer tokens: anyone who reaches it can submit jobs")
	}
	return s, nil
}

// Handler is the server's HTTP handler (tests, or mounting elsewhere).
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves on ln until ctx ends, then stops taking requests and waits
// up to 30 s for those in flight. A request cut short loses no job: the job
// stays queued and its result can be fetched by id. The caller opens ln
// (and so can fail, or log the bound address, before serving).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }() // owned here: Serve returns after it
	select {
	case err := <-done:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-done
	if err != nil {
		return fmt.Errorf("stopping the HTTP gateway: %w", err)
	}
	return nil
}

// handler serves one endpoint: it returns the status it wrote.
type handler func(w http.ResponseWriter, r *http.Request) error

func (s *Server) route(pattern, endpoint string, d dialect, h handler) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		err := s.authorize(r)
		if err == nil {
			err = h(sw, r)
		}
		if err != nil {
			ae := asAPIError(err)
			if ae.code == schemas.CodeInternal && s.log != nil {
				s.log.Error("gateway request failed", "endpoint", endpoint, "err", err)
			}
			writeError(sw, d, ae)
		}
		if s.obs != nil {
			s.obs.Request(endpoint, sw.status, time.Since(start))
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (s *Server) authorize(r *http.Request) error {
	if len(s.cfg.Tokens) == 0 {
		return nil
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok {
		for _, t := range s.cfg.Tokens {
			if subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 {
				return nil
			}
		}
	}
	return errorf(codeUnauthorized, "missing or unknown bearer token (Authorization: Bearer …)")
}

// decodeBody reads a JSON request body of at most the job payload limit
// (a request is never larger than the job it becomes, give or take its
// JSON punctuation, so twice the limit bounds it).
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, 2*int64(s.cfg.Limits.MaxPayloadBytes))
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(schemas.CodePayloadTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit))
		}
		return errorf(codeBadRequest, "decoding the JSON body: "+err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(codeBadRequest, "decoding the JSON body: data after the JSON value")
	}
	return nil
}

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
// the request waits for it, and its size against the limit (checked before
// the candidates are copied).
func (s *Server) newJob(r *http.Request, model string, timeout float64, candidates int) (*schemas.Job, time.Duration, error) {
	if max := s.cfg.Limits.MaxCandidates; max > 0 && candidates > max {
		return nil, 0, schemas.Errorf(schemas.CodeTooManyCandidates, "%d documents, limit %d", candidates, max)
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
	return &schemas.Job{ID: id, Model: model}, wait, nil
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

func (s *Server) modelList(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.models != nil && time.Since(s.modelsAt) < s.cfg.ModelsTTL {
		return s.models, nil
	}
	ms, err := s.q.Models(ctx)
	if err != nil {
		return nil, err
	}
	s.models, s.modelsAt = ms, time.Now()
	return ms, nil
}

// rerank submits job and waits for its result up to wait. A job the
// worker answered with an error comes back as that error; a wait that ends
// first is a timeout naming the job, which stays queued.
func (s *Server) rerank(ctx context.Context, job *schemas.Job, lane schemas.Lane, wait time.Duration) (*schemas.Result, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	p, err := s.q.Submit(wctx, job, lane) // an unanswered publish is the Queue's ErrUnavailable
	if err != nil {
		return nil, err
	}
	res, err := p.Result(wctx)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, &apiError{code: codeTimeout, jobID: job.ID,
				message: fmt.Sprintf("no result within %s; the job stays queued: GET /v1/jobs/%s", wait, job.ID)}
		}
		return nil, err
	}
	if res.Error != nil {
		return nil, &apiError{code: res.Error.Code, message: res.Error.Message, jobID: job.ID}
	}
	return res, nil
}
