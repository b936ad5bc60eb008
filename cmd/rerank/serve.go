package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rerank/rerank/gateway"
	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/metrics"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/pipeline/paircache"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/sharedcache"
	"github.com/rerank/rerank/worker"
)

func cmdServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "[flags]", stderr)
	var nf natsFlags
	nf.register("", fs.StringVar)
	var mf modelFlags
	mf.register(fs)
	listen := fs.String("listen", "127.0.0.1:4222", "address of the embedded NATS server (used when --nats-url is empty)")
	dataDir := fs.String("data-dir", ".data/nats", "JetStream storage of the embedded NATS server")
	concurrency := fs.Int("concurrency", worker.DefaultConcurrency, "jobs this worker runs at once")
	interactiveSlots := fs.Int("interactive-slots", 0, "slots of --concurrency only interactive jobs may take, so a bulk backfill never makes one wait for a bulk job (0: a quarter, at least 1; -1: none)")
	provision := fs.Bool("provision", true, "create or update the streams and consumers at start")
	replicas := fs.Int("replicas", 1, "stream replicas (3 on a 3-node cluster)")
	partitions := fs.Int("partitions", 0, "job streams per model beyond RERANK_JOBS (RERANK_JOBS_P0…, each with its own leader) for fleets one stream cannot carry; producers publish to rerank.jobs.<model>.p<N> with the same count (docs/scaling.md); 0: none")
	ackWait := fs.Duration("ack-wait", worker.DefaultAckWait, "JetStream AckWait of the job consumers")
	maxDeliver := fs.Int("max-deliver", worker.DefaultMaxDeliver, "deliveries of one job before it is dead-lettered")
	maxAckPending := fs.Int("max-ack-pending", worker.DefaultMaxAckPending, "unacknowledged jobs per consumer across the worker pool")
	grace := fs.Duration("shutdown-grace", worker.DefaultShutdownGrace, "time to finish jobs in flight on SIGTERM")
	batchDelay := fs.Duration("batch-delay", pipeline.DefaultMaxBatchDelay, "max wait to share an inference batch across jobs (negative: off)")
	batchPairs := fs.Int("batch-pairs", 0, "pairs per scoring call; a job's pairs are scheduled in chunks of this size between other jobs' (0: the model's --max-batch-size)")
	maxCandidates := fs.Int("max-candidates", schemas.DefaultMaxCandidates, "candidates per job")
	workerID := fs.String("worker-id", "", "name of this worker in results (default host:pid)")
	var tenants multiFlag
	fs.Var(&tenants, "tenants", "tenants with namespaces of their own: each gets its job streams RERANK_JOBS_T_<name>, and its jobs are answered in rerank.tenant.<name>. (repeatable or comma-separated; the in-process gateway's token tenants are added; docs/operations.md, Tenants)")
	var replyAllow multiFlag
	fs.Var(&replyAllow, "reply-allow", "allow-list of reply_to subject prefixes (repeatable; empty: any subject outside $*, rerank.jobs., rerank.dead. and other jobs' result subjects)")
	publishRetry := fs.Duration("publish-retry", worker.DefaultPublishRetry, "how long a finished job's result is retried (the job held) before the job is handed back")
	memoryLimit := fs.String("memory-limit", "auto", "Go heap soft limit: auto (75% of the container's memory limit unless GOMEMLIMIT is set), off, or a size such as 1536MiB")
	testPanicQuery := fs.String("test-panic-query", "", "fault tests only: a job whose query is exactly this panics while being answered")
	var testSimulated multiFlag
	fs.Var(&testSimulated, "test-simulated-model", "scale tests and benchmarks only: serve a simulated model NAME:PER_PAIR:PER_CALL (e.g. sim:500us:2ms) that waits instead of computing, instead of --model (repeatable)")
	var sf serviceFlags
	sf.register(fs)
	metricsAddr := fs.String("metrics-addr", ":9464", "address of /metrics, /healthz and /readyz (empty: off)")
	jobsMaxBytes := fs.String("jobs-max-bytes", "", "bound of each job stream as a whole when provisioning, the disk backstop shared by all lanes (e.g. 4GiB; empty: none); a full stream refuses new jobs (queue_full), never drops accepted ones")
	jobsMaxMsgs := fs.Int64("jobs-max-msgs", 0, "jobs each lane of each model may hold waiting, when provisioning (0: none); a full lane refuses its new jobs (queue_full), other lanes keep taking theirs")
	scoreCache := fs.String("score-cache", "64MiB", "memory for the pair cache: scores of pairs already scored, keyed by the model's digest and the pair's tokens, reused by later jobs (0: off; docs/operations.md, Pair cache)")
	scoreCacheKV := fs.String("score-cache-kv", "", "JetStream key-value bucket shared by the fleet behind the pair cache, e.g. "+sharedcache.DefaultBucket+" (empty: off; docs/operations.md, Pair cache)")
	scoreCacheKVTTL := fs.Duration("score-cache-kv-ttl", sharedcache.DefaultTTL, "age at which the shared bucket drops an entry, when provisioning")
	scoreCacheKVBytes := fs.String("score-cache-kv-max-bytes", "1GiB", "bound of the shared bucket when provisioning (oldest entries go first; ~100 bytes per pair on the servers)")
	resultsMaxBytes := fs.String("results-max-bytes", "1GiB", "bound of the results stream besides its 24 h age, when provisioning (oldest results go first; reserved on the servers)")
	httpAddr := fs.String("http", "auto", "listen address of the HTTP gateway (docs/http.md): auto is 127.0.0.1:8080 on the embedded NATS server and off with --nats-url; empty: off")
	var gf gatewayFlags
	gf.register(fs)
	log, err := sf.start(fs, args, stdout, stderr)
	if err != nil || log == nil {
		return err
	}
	wcfg := worker.Config{
		Provision: *provision, Replicas: *replicas, AckWait: *ackWait, MaxDeliver: *maxDeliver,
		MaxAckPending: *maxAckPending, Concurrency: *concurrency, InteractiveSlots: *interactiveSlots, ShutdownGrace: *grace, WorkerID: *workerID,
		PublishRetry: *publishRetry, Partitions: *partitions, Tenants: tenants.values,
		Limits: schemas.Limits{MaxCandidates: *maxCandidates, ReplyAllow: replyAllow.values},
	}
	gwAddr := *httpAddr
	if gwAddr == "auto" {
		gwAddr = ""
		if nf.url == "" {
			gwAddr = gateway.DefaultAddr
		}
	}
	var gcfg gateway.Config
	if gwAddr != "" {
		if gcfg, err = gf.config(wcfg.Limits); err != nil {
			return &exitError{2, err}
		}
		// The gateway's tenants are served here, beside --tenants.
		gts, err := gateway.Tenants(gcfg.Tokens)
		if err != nil {
			return &exitError{2, err}
		}
		for _, t := range gts {
			if !slices.Contains(wcfg.Tenants, t) {
				wcfg.Tenants = append(wcfg.Tenants, t)
			}
		}
	}
	if *jobsMaxBytes != "" {
		if wcfg.JobsMaxBytes, err = parseSize(*jobsMaxBytes); err != nil {
			return &exitError{2, fmt.Errorf("--jobs-max-bytes %q: %w", *jobsMaxBytes, err)}
		}
	}
	if *jobsMaxMsgs > 0 {
		wcfg.JobsMaxMsgs = *jobsMaxMsgs
	}
	if wcfg.ResultsMaxBytes, err = parseSize(*resultsMaxBytes); err != nil {
		return &exitError{2, fmt.Errorf("--results-max-bytes %q: %w", *resultsMaxBytes, err)}
	}
	if err := wcfg.Validate(); err != nil {
		return &exitError{2, err}
	}
	cacheSize, err := parseSize(*scoreCache)
	if err != nil {
		return &exitError{2, fmt.Errorf("--score-cache %q: %w", *scoreCache, err)}
	}
	kvMaxBytes, err := parseSize(*scoreCacheKVBytes)
	if err != nil {
		return &exitError{2, fmt.Errorf("--score-cache-kv-max-bytes %q: %w", *scoreCacheKVBytes, err)}
	}
	kvCfg := sharedcache.Config{Bucket: *scoreCacheKV, TTL: *scoreCacheKVTTL, MaxBytes: kvMaxBytes, Replicas: *replicas}
	if *scoreCacheKV != "" {
		if cacheSize == 0 {
			return &exitError{2, fmt.Errorf("--score-cache-kv needs the process cache (--score-cache) in front of it")}
		}
		if err := kvCfg.Validate(); err != nil {
			return &exitError{2, fmt.Errorf("--score-cache-kv: %w", err)}
		}
	}
	memLimit, err := applyMemoryLimit(*memoryLimit)
	if err != nil {
		return &exitError{2, err}
	}
	if memLimit > 0 {
		log.Info("Go memory limit set", "bytes", memLimit)
	}

	var models *loadedModels
	if len(testSimulated.values) > 0 {
		if len(mf.models.values) > 0 {
			return &exitError{2, fmt.Errorf("--test-simulated-model and --model exclude each other")}
		}
		if models, err = simulatedModels(testSimulated.values, mf.maxBatch); err != nil {
			return &exitError{2, err}
		}
	} else {
		models, err = mf.load()
	}
	if err != nil {
		return err
	}
	defer models.Close()
	names := make([]string, len(models.served))
	for i, m := range models.served {
		names[i] = m.Name
	}
	if models.rt == nil {
		log.Warn("--test-simulated-model is set: serving simulated models that wait instead of scoring (scale tests only)", "models", testSimulated.values)
	} else {
		mapped, fused := 0, 0
		for _, m := range models.models {
			if m.WeightsMapped() {
				mapped++
			}
			fused += m.FusedNorms()
		}
		log.Info("models loaded", "models", names, "onnxruntime", models.rt.Version(), "device", mf.device,
			"weights_mapped", fmt.Sprintf("%d/%d", mapped, len(models.models)), "fused_norms", fused)
	}

	var nc *nats.Conn // set below; the metrics read its state
	met := metrics.New(connectedGauge(&nc))
	registerBuildInfo(met.Registry)

	url := nf.url
	if url == "" {
		host, port, err := net.SplitHostPort(*listen)
		if err != nil {
			return &exitError{2, fmt.Errorf("parsing --listen %q: %w", *listen, err)}
		}
		p, _ := strconv.Atoi(port)
		store, _ := filepath.Abs(*dataDir)
		if err := os.MkdirAll(store, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", store, err)
		}
		ns, err := natsembed.Start(natsembed.Options{Host: host, Port: p, StoreDir: store, Name: "rerank-embedded"})
		if err != nil {
			return fmt.Errorf("%w; --listen ADDR (RERANK_LISTEN) picks another address, --nats-url uses a NATS server already running", err)
		}
		defer ns.Stop()
		url = ns.ClientURL()
		log.Info("embedded NATS server started", "url", url, "store", store)
	}
	opts, err := nf.options("rerank-worker", log)
	if err != nil {
		return &exitError{2, err}
	}
	nc, err = nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w", redact(url), err)
	}
	defer nc.Close()
	log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted())
	var cache *paircache.Cache
	if cacheSize > 0 {
		cache = paircache.New(cacheSize)
		metrics.RegisterCache(met.Registry, func() metrics.CacheStats {
			st := cache.Stats()
			return metrics.CacheStats{Hits: st.Hits, Misses: st.Misses, Evictions: st.Evictions, Shared: st.Shared,
				Entries: st.Entries, Bytes: st.Bytes, MaxBytes: st.MaxBytes}
		})
	}
	var shared pipeline.SharedCache
	if *scoreCacheKV != "" {
		tier, closeTier, err := startSharedCache(ctx, url, nf, kvCfg, *provision, met, log)
		if err != nil {
			return err
		}
		defer closeTier()
		shared = tier
	}
	pipe, err := pipeline.New(pipeline.Config{
		Limits: wcfg.Limits, MaxBatchDelay: *batchDelay, MaxBatchPairs: *batchPairs, ConcurrentCalls: mf.runs,
		Observer: met, Cache: cache, Shared: shared,
	}, models.served...)
	if err != nil {
		return err
	}
	defer pipe.Close()
	digests := map[string]string{}
	for _, name := range pipe.Models() {
		digests[name] = pipe.Digest(name)
		log.Info("model provenance", "model", name, "digest", digests[name])
	}
	metrics.RegisterModelInfo(met.Registry, digests)

	var reranker worker.Reranker = pipe
	if *testPanicQuery != "" {
		log.Warn("--test-panic-query is set: jobs with that query panic (fault tests only)")
		reranker = panicOnQuery{Reranker: pipe, query: *testPanicQuery}
	}
	w, err := worker.New(nc, reranker, wcfg, log, met)
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		ms, err := metrics.Listen(*metricsAddr, met, w.Ready)
		if err != nil {
			return err
		}
		defer ms.Close()
		log.Info("serving metrics", "addr", ms.Addr(), "paths", "/metrics /healthz /readyz")
	}
	var httpHint string
	if gwAddr != "" {
		gcfg.Limits.ReplyAllow = nil
		gcfg.Metrics = metrics.Handler(met.Registry)
		// Its own connection, which buffers nothing while reconnecting: a
		// request answered 503 during an outage never publishes its job
		// later (the worker's connection buffers its acks and results).
		gopts, err := nf.options("rerank-gateway", log)
		if err != nil {
			return &exitError{2, err}
		}
		gnc, err := connectGatewayNATS(url, gopts)
		if err != nil {
			return fmt.Errorf("connecting the gateway to NATS at %s: %w", redact(url), err)
		}
		defer gnc.Close()
		gw, err := startGateway(ctx, gnc, gcfg, *provision, *replicas, *partitions, metrics.NewGateway(met.Registry), log)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", gwAddr)
		if err != nil {
			return fmt.Errorf("listening for HTTP on %s: %w", gwAddr, err)
		}
		// The gateway stops taking requests with the signal, while the
		// worker finishes the jobs in flight, theirs included.
		gctx, stopGW := context.WithCancel(ctx)
		gwDone := make(chan error, 1)
		go func() { gwDone <- gw.Serve(gctx, ln) }() // owned here: stopped and awaited below
		defer func() { stopGW(); <-gwDone }()
		log.Info("HTTP gateway started", "addr", ln.Addr().String(), "auth", len(gcfg.Tokens) > 0)
		auth := ""
		if len(gcfg.Tokens) > 0 {
			auth = ` -H "Authorization: Bearer $TOKEN"`
		}
		httpHint = fmt.Sprintf("HTTP: curl -s %s/v1/rerank%s --json '{\"model\":\"%s\",\"query\":\"q\",\"documents\":[\"a\",\"b\"]}'\n", "http://"+ln.Addr().String(), auth, names[0])
	}
	// The banner comes once everything listens: a user (or a test) that
	// acts on it finds NATS and the gateway ready. Its commands work as
	// printed: they name the server and the model when the defaults would
	// miss them.
	if nf.url == "" {
		submit := os.Args[0] + " submit"
		if url != nats.DefaultURL {
			submit += " --nats-url " + url
		}
		if !slices.Contains(names, "demo") { // submit's default model
			submit += " --model " + names[0]
		}
		fmt.Fprintf(stdout, "rerank is serving %s on %s — in another terminal: %s examples/job.json\n", strings.Join(names, ", "), url, submit)
		fmt.Fprint(stdout, httpHint)
	}
	if err := w.Run(ctx); err != nil {
		return err
	}
	if err := nc.Drain(); err != nil {
		log.Warn("draining NATS connection", "err", err)
	}
	for deadline := time.Now().Add(30 * time.Second); nc.IsDraining() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// panicOnQuery panics on jobs whose query is exactly query: the fault
// suite's way to check that a panic costs only its own job.
type panicOnQuery struct {
	worker.Reranker
	query string
}

func (p panicOnQuery) Rerank(ctx context.Context, model string, job *schemas.Job, enqueued time.Time) (*schemas.Result, error) {
	if job.Query == p.query {
		panic("test panic: the job's query matched --test-panic-query")
	}
	return p.Reranker.Rerank(ctx, model, job, enqueued)
}

// redact hides passwords in URLs for messages.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
				parts[i] = u[:scheme+3] + "***@" + u[at+1:]
			}
		}
	}
	return strings.Join(parts, ",")
}
