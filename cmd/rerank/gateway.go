package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/gateway"
	"github.com/rerank/rerank/metrics"
	"github.com/rerank/rerank/schemas"
)

// gatewayFlags are the HTTP gateway's flags, shared by `rerank gateway`
// and `rerank serve`.
type gatewayFlags struct {
	model, tokens, tokensFile string
	timeout, maxTimeout       time.Duration
	readTimeout, idleTimeout  time.Duration
}

func (g *gatewayFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.model, "gateway-model", "", "model of HTTP requests that name none, and of TEI's /rerank (empty: the only model served)")
	fs.StringVar(&g.tokens, "gateway-tokens", "", "bearer tokens the HTTP gateway accepts, comma-separated, each NAME:TOKEN (a tenant: its job ids are its own) or a bare TOKEN (a tenant of its own) (secret; prefer RERANK_GATEWAY_TOKENS or --gateway-tokens-file; none: open)")
	fs.StringVar(&g.tokensFile, "gateway-tokens-file", "", "file of bearer tokens, one per line, NAME:TOKEN or TOKEN (# comments)")
	fs.DurationVar(&g.timeout, "gateway-timeout", gateway.DefaultTimeout, "default wait for a result of a synchronous HTTP request")
	fs.DurationVar(&g.maxTimeout, "gateway-max-timeout", gateway.DefaultMaxTimeout, "longest wait a request may ask for (timeout field or X-Request-Timeout)")
	fs.DurationVar(&g.readTimeout, "gateway-read-timeout", gateway.DefaultReadTimeout, "longest time to read an HTTP request, headers and body (not the wait for its result); a client that stalls is answered 408 and disconnected")
	fs.DurationVar(&g.idleTimeout, "gateway-idle-timeout", gateway.DefaultIdleTimeout, "idle keep-alive HTTP connections are closed after this long")
}

func (g *gatewayFlags) config(limits schemas.Limits) (gateway.Config, error) {
	cfg := gateway.Config{DefaultModel: g.model, Limits: limits, Timeout: g.timeout, MaxTimeout: g.maxTimeout,
		ReadTimeout: g.readTimeout, IdleTimeout: g.idleTimeout}
	for _, t := range strings.Split(g.tokens, ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.Tokens = append(cfg.Tokens, t)
		}
	}
	if g.tokensFile != "" {
		b, err := os.ReadFile(g.tokensFile)
		if err != nil {
			return cfg, fmt.Errorf("reading --gateway-tokens-file: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				cfg.Tokens = append(cfg.Tokens, l)
			}
		}
	}
	return cfg, cfg.Validate()
}

// natsQueue is gateway.Queue over NATS: one client per tenant and lane,
// each recording the jobs it submits (client.Options.Track) so that a
// pending job is told from an unknown one. Every call answers
// gateway.ErrUnavailable at once while the connection is not CONNECTED,
// rather than wait for a reconnect the request may not outlive.
type natsQueue struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	limits     schemas.Limits
	partitions int

	mu      sync.Mutex
	clients map[queueKey]*client.Client // made on a tenant's first request
}

type queueKey struct {
	tenant string
	lane   schemas.Lane
}

func newNATSQueue(nc *nats.Conn, limits schemas.Limits, partitions int) (*natsQueue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("creating JetStream context: %w", err)
	}
	q := &natsQueue{nc: nc, js: js, limits: limits, partitions: partitions, clients: map[queueKey]*client.Client{}}
	if _, err := q.client("", schemas.Interactive); err != nil {
		return nil, err
	}
	return q, nil
}

// client is the client of tenant's lane. Tenants are the configured
// tokens', so the clients are few.
func (q *natsQueue) client(tenant string, lane schemas.Lane) (*client.Client, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := queueKey{tenant, lane}
	if c := q.clients[k]; c != nil {
		return c, nil
	}
	c, err := client.New(q.nc, client.Options{Lane: lane, Limits: q.limits, Track: true, Partitions: q.partitions, Tenant: tenant})
	if err != nil {
		return nil, err
	}
	q.clients[k] = c
	return c, nil
}

// gatewayProvisionTimeout bounds the retries of the gateway's provisioning
// at start.
const gatewayProvisionTimeout = 2 * time.Minute

// connectGatewayNATS connects the gateway to NATS. It keeps retrying the
// first connection (a gateway started before NATS answers 503, and its
// readyz fails, until it connects), and it buffers nothing while
// reconnecting: a job published then fails at once (503) instead of
// waiting in the reconnect buffer, to be published after its request was
// answered.
func connectGatewayNATS(url string, opts []nats.Option) (*nats.Conn, error) {
	return nats.Connect(url, append(opts, nats.RetryOnFailedConnect(true), nats.ReconnectBufSize(-1))...)
}

// connectedGauge reads rerank_nats_connected from *nc: 1 while it is
// connected, 0 before it is set and while it is down.
func connectedGauge(nc **nats.Conn) func() float64 {
	return func() float64 {
		if c := *nc; c != nil && c.IsConnected() {
			return 1
		}
		return 0
	}
}

// connected is gateway.ErrUnavailable unless the connection is up.
func (q *natsQueue) connected() error {
	if st := q.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("%w: NATS is %s", gateway.ErrUnavailable, st)
	}
	return nil
}

// unavailable marks errors of an unreachable NATS or JetStream, or of a
// connection lost or closing.
func unavailable(err error) error {
	if err == nil || schemas.AsError(err) != nil {
		return err
	}
	for _, e := range []error{nats.ErrNoResponders, nats.ErrTimeout, nats.ErrConnectionClosed, nats.ErrConnectionReconnecting,
		nats.ErrConnectionDraining, nats.ErrReconnectBufExceeded, nats.ErrDisconnected, nats.ErrNoServers, nats.ErrStaleConnection,
		context.DeadlineExceeded, nats.ErrJetStreamNotEnabled, jetstream.ErrNoStreamResponse, jetstream.ErrJetStreamNotEnabled} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", gateway.ErrUnavailable, err)
		}
	}
	return err
}

// Submit publishes job. A job over the NATS server's max payload is a
// payload_too_large refusal (413), as one over the gateway's own limit is.
func (q *natsQueue) Submit(ctx context.Context, job *schemas.Job, lane schemas.Lane) (gateway.Pending, error) {
	if err := q.connected(); err != nil {
		return nil, err
	}
	c, err := q.client(job.Tenant, lane)
	if err != nil {
		return nil, err
	}
	p, err := c.SubmitAsync(ctx, job)
	switch {
	case job.Tenant != "" && (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)):
		// No stream takes the tenant's subjects: the workers do not serve it.
		return nil, fmt.Errorf("%w: no job stream of tenant %s answered (do the workers run with --tenants %s, or did ops run `rerank provision --tenants %s`?): %w",
			gateway.ErrUnavailable, job.Tenant, job.Tenant, job.Tenant, err)
	case errors.Is(err, client.ErrPayloadTooLarge):
		return nil, schemas.Errorf(schemas.CodePayloadTooLarge, "%v", err)
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, missingBucket(err)
	case errors.Is(err, client.ErrIDConflict):
		return nil, fmt.Errorf("%w: %s names a job already submitted with another query, documents or options: use another key", gateway.ErrConflict, gateway.HeaderIdempotencyKey)
	case err != nil:
		return nil, unavailable(err)
	}
	return p, nil
}

// Lookup reads job id's result. A job accepted (by a gateway) without a
// result is pending, unless it was accepted before the oldest result the
// results stream still holds: the stream, at its byte limit, dropped the
// results before that one, so the job's result is gone (or the job has
// waited longer than results are kept; if it is answered yet, its result
// is served again). Without this a dropped result read as pending until
// the accepted record expired, a day later.
func (q *natsQueue) Lookup(ctx context.Context, tenant, id string) (*schemas.Result, bool, error) {
	if err := q.connected(); err != nil {
		return nil, false, err
	}
	c, err := q.client(tenant, schemas.Interactive)
	if err != nil {
		return nil, false, err
	}
	res, err := c.Lookup(ctx, id)
	if err == nil {
		return res, false, nil
	}
	if !errors.Is(err, client.ErrNotFound) {
		return nil, false, unavailable(err)
	}
	at, ok, err := c.AcceptedAt(ctx, id)
	if err != nil {
		return nil, false, unavailable(err)
	}
	if !ok {
		return nil, false, gateway.ErrNotFound
	}
	oldest, err := q.oldestResult(ctx)
	if err != nil {
		return nil, false, unavailable(err)
	}
	if at.Before(oldest) {
		return nil, false, fmt.Errorf("job %s accepted at %s, before the oldest stored result (%s): %w",
			id, at.Format(time.RFC3339), oldest.Format(time.RFC3339), gateway.ErrGone)
	}
	return nil, true, nil
}

// oldestResult is when the oldest result the results stream holds was
// stored, once the stream has dropped older ones (by age or bytes); the
// zero time while it has dropped none.
func (q *natsQueue) oldestResult(ctx context.Context) (time.Time, error) {
	s, err := q.js.Stream(ctx, schemas.ResultsStream)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the %s stream: %w", schemas.ResultsStream, err)
	}
	st := s.CachedInfo().State
	switch {
	case st.FirstSeq <= 1:
		return time.Time{}, nil
	case st.Msgs == 0:
		return st.LastTime, nil // every result dropped, the last one included
	}
	return st.FirstTime, nil
}

// Models lists the served models. An empty list is unavailable, not an
// answer: a server restarting or electing a leader may list a stream's
// consumers as none for a moment, and a request told its model is served
// by nobody (404) would not be retried, though its job may be queued
// already (a retry after the first attempt's gateway died).
func (q *natsQueue) Models(ctx context.Context) ([]string, error) {
	if err := q.connected(); err != nil {
		return nil, err
	}
	ms, err := q.shared().Models(ctx)
	if err == nil && len(ms) == 0 {
		return nil, fmt.Errorf("%w: no worker pool consumes jobs yet (no consumers on %s)", gateway.ErrUnavailable, schemas.JobsStream)
	}
	return ms, unavailable(err)
}

// Ready reports the queue reachable and the accepted-jobs bucket there:
// a gateway run with --provision=false before ops created it would answer
// every request with an error.
func (q *natsQueue) Ready(ctx context.Context) error {
	if err := q.connected(); err != nil {
		return err
	}
	if _, err := q.shared().Models(ctx); err != nil {
		return unavailable(err)
	}
	if _, err := q.js.KeyValue(ctx, client.AcceptedBucket); err != nil {
		return missingBucket(err)
	}
	return nil
}

// missingBucket names the remedy for a missing accepted-jobs bucket.
func missingBucket(err error) error {
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("%w: the accepted-jobs bucket %s does not exist: create it with `rerank provision` (or run the gateway with --provision): %w",
			gateway.ErrUnavailable, client.AcceptedBucket, err)
	}
	return unavailable(err)
}

// shared is the client of the shared namespace's interactive lane, made
// with the queue.
func (q *natsQueue) shared() *client.Client {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.clients[queueKey{"", schemas.Interactive}]
}

// gatewayService is the HTTP gateway over NATS, made once its listener is
// known.
type gatewayService struct {
	cfg gateway.Config
	q   *natsQueue
	obs gateway.Observer
	log *slog.Logger
}

// startGateway provisions the accepted-jobs bucket (when provision is set)
// and returns the gateway, for the caller to Serve.
func startGateway(ctx context.Context, nc *nats.Conn, cfg gateway.Config, provision bool, replicas, partitions int, obs gateway.Observer, log *slog.Logger) (*gatewayService, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	q, err := newNATSQueue(nc, cfg.Limits, partitions)
	if err != nil {
		return nil, err
	}
	if provision {
		// One request at a time under its own deadline, retried for up to
		// two minutes: a cluster restarting a node may leave a request
		// unanswered, and a gateway must not give up its start on one
		// lost answer (as the worker's provisioning, RELIABILITY.md).
		deadline := time.Now().Add(gatewayProvisionTimeout)
		for delay := 250 * time.Millisecond; ; delay = min(2*delay, 4*time.Second) {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := q.shared().ProvisionTracking(pctx, replicas, 24*time.Hour)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil || time.Now().Add(delay).After(deadline) {
				return nil, err
			}
			log.Warn("provisioning the accepted-jobs bucket, will retry", "err", err, "delay", delay.String())
			if !sleepCtx(ctx, delay) {
				return nil, err
			}
		}
	}
	return &gatewayService{cfg: cfg, q: q, obs: obs, log: log}, nil
}

// Serve serves the gateway on ln until ctx ends (gateway.Server.Serve). A
// gateway without bearer tokens on a loopback address answers loopback
// Host names only (gateway.Config.LoopbackOnly): a web page that rebinds
// its own name to 127.0.0.1 cannot reach it through the browser.
func (g *gatewayService) Serve(ctx context.Context, ln net.Listener) error {
	cfg := g.cfg
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsLoopback() && len(cfg.Tokens) == 0 {
		cfg.LoopbackOnly = true
	}
	srv, err := gateway.New(cfg, g.q, g.obs, g.log)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, ln)
}

func cmdGateway(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("gateway", "[flags] (an HTTP gateway onto the job queue: Cohere/Jina /v1/rerank, /v2/rerank, TEI /rerank, async /v1/jobs)", stderr)
	var nf natsFlags
	nf.register("nats://127.0.0.1:4222", fs.StringVar)
	var gf gatewayFlags
	gf.register(fs)
	addr := fs.String("http", ":8080", "listen address of the HTTP gateway")
	provision := fs.Bool("provision", true, "create or update the bucket of accepted jobs at start")
	replicas := fs.Int("replicas", 1, "replicas of that bucket (3 on a 3-node cluster)")
	partitions := fs.Int("partitions", 0, "job streams per model beyond RERANK_JOBS, as the workers run (docs/scaling.md); 0: none")
	maxCandidates := fs.Int("max-candidates", schemas.DefaultMaxCandidates, "largest candidate list of a request")
	memoryLimit := fs.String("memory-limit", "auto", "Go heap soft limit: auto (75% of the container's memory limit unless GOMEMLIMIT is set), off, or a size such as 512MiB")
	var sf serviceFlags
	sf.register(fs)
	log, err := sf.start(fs, args, stdout, stderr)
	if err != nil || log == nil {
		return err
	}
	// The limit makes the runtime collect the garbage of large requests
	// before the container is OOM-killed, as in `rerank serve`.
	memLimit, err := applyMemoryLimit(*memoryLimit)
	if err != nil {
		return &exitError{2, err}
	}
	if memLimit > 0 {
		log.Info("Go memory limit set", "bytes", memLimit)
	}
	cfg, err := gf.config(schemas.Limits{MaxCandidates: *maxCandidates})
	if err != nil {
		return &exitError{2, err}
	}
	opts, err := nf.options("rerank-gateway", log)
	if err != nil {
		return &exitError{2, err}
	}
	nc, err := connectGatewayNATS(nf.url, opts)
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w", redact(nf.url), err)
	}
	defer nc.Close()
	reg := metrics.NewRegistry(connectedGauge(&nc))
	registerBuildInfo(reg)
	cfg.Metrics = metrics.Handler(reg)
	srv, err := startGateway(ctx, nc, cfg, *provision, *replicas, *partitions, metrics.NewGateway(reg), log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening for HTTP on %s: %w", *addr, err)
	}
	log.Info("gateway started", "addr", ln.Addr().String(), "nats", redact(nf.url), "auth", len(cfg.Tokens) > 0)
	return srv.Serve(ctx, ln)
}
