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
	"time"

	"github.com/nats-io/nats.go"

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
}

func (g *gatewayFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.model, "gateway-model", "", "model of HTTP requests that name none, and of TEI's /rerank (empty: the only model served)")
	fs.StringVar(&g.tokens, "gateway-tokens", "", "bearer tokens the HTTP gateway accepts, comma-separated (secret; prefer RERANK_GATEWAY_TOKENS or --gateway-tokens-file; none: open)")
	fs.StringVar(&g.tokensFile, "gateway-tokens-file", "", "file of bearer tokens, one per line (# comments)")
	fs.DurationVar(&g.timeout, "gateway-timeout", gateway.DefaultTimeout, "default wait for a result of a synchronous HTTP request")
	fs.DurationVar(&g.maxTimeout, "gateway-max-timeout", gateway.DefaultMaxTimeout, "longest wait a request may ask for (timeout field or X-Request-Timeout)")
}

func (g *gatewayFlags) config(limits schemas.Limits) (gateway.Config, error) {
	cfg := gateway.Config{DefaultModel: g.model, Limits: limits, Timeout: g.timeout, MaxTimeout: g.maxTimeout}
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

// natsQueue is gateway.Queue over NATS: one client per lane, both
// recording the jobs they submit (client.Options.Track) so that a pending
// job is told from an unknown one.
type natsQueue struct {
	nc    *nats.Conn
	lanes map[schemas.Lane]*client.Client
}

func newNATSQueue(nc *nats.Conn, limits schemas.Limits, partitions int) (*natsQueue, error) {
	q := &natsQueue{nc: nc, lanes: map[schemas.Lane]*client.Client{}}
	for _, l := range schemas.Lanes {
		c, err := client.New(nc, client.Options{Lane: l, Limits: limits, Track: true, Partitions: partitions})
		if err != nil {
			return nil, err
		}
		q.lanes[l] = c
	}
	return q, nil
}

// unavailable marks errors of an unreachable NATS or JetStream.
func unavailable(err error) error {
	if err == nil || schemas.AsError(err) != nil {
		return err
	}
	for _, e := range []error{nats.ErrNoResponders, nats.ErrTimeout, nats.ErrConnectionClosed, nats.ErrConnectionReconnecting,
		nats.ErrDisconnected, nats.ErrNoServers, context.DeadlineExceeded, nats.ErrJetStreamNotEnabled} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", gateway.ErrUnavailable, err)
		}
	}
	return err
}

func (q *natsQueue) Submit(ctx context.Context, job *schemas.Job, lane schemas.Lane) (gateway.Pending, error) {
	p, err := q.lanes[lane].SubmitAsync(ctx, job)
	if err != nil {
		return nil, unavailable(err)
	}
	return p, nil
}

func (q *natsQueue) Lookup(ctx context.Context, id string) (*schemas.Result, bool, error) {
	c := q.lanes[schemas.Interactive]
	res, err := c.Lookup(ctx, id)
	if err == nil {
		return res, false, nil
	}
	if !errors.Is(err, client.ErrNotFound) {
		return nil, false, unavailable(err)
	}
	ok, err := c.Accepted(ctx, id)
	if err != nil {
		return nil, false, unavailable(err)
	}
	if !ok {
		return nil, false, gateway.ErrNotFound
	}
	return nil, true, nil
}

func (q *natsQueue) Models(ctx context.Context) ([]string, error) {
	ms, err := q.lanes[schemas.Interactive].Models(ctx)
	return ms, unavailable(err)
}

func (q *natsQueue) Ready(ctx context.Context) error {
	if !q.nc.IsConnected() {
		return fmt.Errorf("%w: NATS is %s", gateway.ErrUnavailable, q.nc.Status())
	}
	_, err := q.lanes[schemas.Interactive].Models(ctx)
	return unavailable(err)
}

// startGateway provisions the accepted-jobs bucket (when provision is set)
// and returns the gateway server, for the caller to Run.
func startGateway(ctx context.Context, nc *nats.Conn, cfg gateway.Config, provision bool, replicas, partitions int, obs gateway.Observer, log *slog.Logger) (*gateway.Server, error) {
	q, err := newNATSQueue(nc, cfg.Limits, partitions)
	if err != nil {
		return nil, err
	}
	if provision {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := q.lanes[schemas.Interactive].ProvisionTracking(pctx, replicas, 24*time.Hour)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	return gateway.New(cfg, q, obs, log)
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
	var sf serviceFlags
	sf.register(fs)
	log, err := sf.start(fs, args, stdout, stderr)
	if err != nil || log == nil {
		return err
	}
	cfg, err := gf.config(schemas.Limits{MaxCandidates: *maxCandidates})
	if err != nil {
		return &exitError{2, err}
	}
	opts, err := nf.options("rerank-gateway", log)
	if err != nil {
		return &exitError{2, err}
	}
	// Keep retrying the first connection: a gateway started before NATS
	// answers 503 (readyz fails) until it connects.
	nc, err := nats.Connect(nf.url, append(opts, nats.RetryOnFailedConnect(true))...)
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w", redact(nf.url), err)
	}
	defer nc.Close()
	reg := metrics.NewRegistry(func() float64 {
		if nc.IsConnected() {
			return 1
		}
		return 0
	})
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
