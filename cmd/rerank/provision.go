package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/sharedcache"
	"github.com/rerank/rerank/worker"
)

// cmdProvision creates or updates, as an operator, what workers run with
// --provision=false and gateways with --provision=false expect: the
// streams, every model's consumers in every job stream (partitions and
// tenants included), the gateway's accepted-jobs bucket and the workers'
// shared pair cache bucket.
func cmdProvision(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("provision", "[flags] (create or update the streams, consumers and bucket, as the operator)", stderr)
	var nf natsFlags
	nf.register(nats.DefaultURL, fs.StringVar)
	var models, tenants multiFlag
	fs.Var(&models, "models", "models whose consumers to create (repeatable or comma-separated), as the workers' --model names")
	fs.Var(&tenants, "tenants", "tenants whose job streams to create, as the workers' --tenants (docs/operations.md, Tenants)")
	partitions := fs.Int("partitions", 0, "job streams per model beyond RERANK_JOBS, as the workers' --partitions")
	replicas := fs.Int("replicas", 1, "stream replicas (3 on a 3-node cluster)")
	ackWait := fs.Duration("ack-wait", worker.DefaultAckWait, "AckWait of the job consumers")
	maxDeliver := fs.Int("max-deliver", worker.DefaultMaxDeliver, "deliveries of one job before it is dead-lettered")
	maxAckPending := fs.Int("max-ack-pending", worker.DefaultMaxAckPending, "unacknowledged jobs per consumer across the worker pool")
	jobsMaxMsgs := fs.Int64("jobs-max-msgs", 0, "jobs each lane of each model may hold waiting (0: none)")
	jobsMaxBytes := fs.String("jobs-max-bytes", "", "bound of each job stream as a whole (e.g. 4GiB; empty: none)")
	resultsMaxBytes := fs.String("results-max-bytes", "1GiB", "bound of the results stream besides its 24 h age")
	bucket := fs.Bool("accepted-bucket", true, "also create the gateways' accepted-jobs bucket ("+client.AcceptedBucket+"), with --models")
	scoreCacheKV := fs.String("score-cache-kv", "", "also create (or update the bounds of) the workers' shared pair cache bucket of this name, as their --score-cache-kv (e.g. "+sharedcache.DefaultBucket+"); without --models, only it")
	scoreCacheKVTTL := fs.Duration("score-cache-kv-ttl", sharedcache.DefaultTTL, "age at which the shared bucket drops an entry")
	scoreCacheKVBytes := fs.String("score-cache-kv-max-bytes", "1GiB", "bound of the shared bucket (oldest entries go first)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if len(models.values) == 0 && *scoreCacheKV == "" {
		return &exitError{2, fmt.Errorf("name the models: --models demo (as the workers' --model names), or only a shared pair cache bucket: --score-cache-kv NAME")}
	}
	cfg := worker.Config{Replicas: *replicas, Partitions: *partitions, Tenants: tenants.values, AckWait: *ackWait,
		MaxDeliver: *maxDeliver, MaxAckPending: *maxAckPending, JobsMaxMsgs: max(*jobsMaxMsgs, 0)}
	var err error
	if *jobsMaxBytes != "" {
		if cfg.JobsMaxBytes, err = parseSize(*jobsMaxBytes); err != nil {
			return &exitError{2, fmt.Errorf("--jobs-max-bytes %q: %w", *jobsMaxBytes, err)}
		}
	}
	if cfg.ResultsMaxBytes, err = parseSize(*resultsMaxBytes); err != nil {
		return &exitError{2, fmt.Errorf("--results-max-bytes %q: %w", *resultsMaxBytes, err)}
	}
	if err := cfg.Validate(); err != nil {
		return &exitError{2, err}
	}
	kvMaxBytes, err := parseSize(*scoreCacheKVBytes)
	if err != nil {
		return &exitError{2, fmt.Errorf("--score-cache-kv-max-bytes %q: %w", *scoreCacheKVBytes, err)}
	}
	kvCfg := sharedcache.Config{Bucket: *scoreCacheKV, TTL: *scoreCacheKVTTL, MaxBytes: kvMaxBytes, Replicas: *replicas}
	if *scoreCacheKV != "" {
		if err := kvCfg.Validate(); err != nil {
			return &exitError{2, fmt.Errorf("--score-cache-kv: %w", err)}
		}
	}
	opts, err := nf.options("rerank-provision", slog.New(slog.DiscardHandler))
	if err != nil {
		return &exitError{2, err}
	}
	nc, err := nats.Connect(nf.url, append(opts, nats.MaxReconnects(5))...)
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w", redact(nf.url), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if len(models.values) > 0 {
		if err := worker.Provision(ctx, js, models.values, cfg); err != nil {
			return err
		}
		for _, sc := range worker.StreamConfigsFor(cfg) {
			fmt.Fprintf(stdout, "stream %s: %v\n", sc.Name, sc.Subjects)
		}
		fmt.Fprintf(stdout, "consumers of %v in every job stream: %s\n", models.values, "rerank-<model>, rerank_bulk-<model>")
	}
	if *bucket && len(models.values) > 0 {
		c, err := client.New(nc, client.Options{})
		if err != nil {
			return err
		}
		if err := c.ProvisionTracking(ctx, *replicas, 24*time.Hour); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "bucket %s\n", client.AcceptedBucket)
	}
	if *scoreCacheKV != "" {
		if err := sharedcache.Provision(ctx, js, kvCfg); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "bucket %s (shared pair cache): entries live %s, at most %d bytes (oldest go first), %d replicas\n",
			*scoreCacheKV, kvCfg.TTL, kvCfg.MaxBytes, kvCfg.Replicas)
	}
	return nil
}
