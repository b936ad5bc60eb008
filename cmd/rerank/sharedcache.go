package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/metrics"
	"github.com/rerank/rerank/sharedcache"
)

// startSharedCache connects the pair cache's shared tier (its own
// connection, which buffers nothing while reconnecting: stores are
// dropped during an outage, never queued before the worker's results),
// creates its bucket when provisioning and it is missing (an existing one
// keeps the bounds ops gave it), and registers its metrics. A bucket it
// cannot create or reach is logged, not fatal: the tier binds it once it
// exists and computes every pair until then.
func startSharedCache(ctx context.Context, url string, nf natsFlags, c sharedcache.Config, provision bool, met *metrics.Metrics, log *slog.Logger) (*sharedcache.Tier, func(), error) {
	opts, err := nf.options("rerank-score-cache", log)
	if err != nil {
		return nil, nil, &exitError{2, err}
	}
	nc, err := nats.Connect(url, append(opts, nats.RetryOnFailedConnect(true), nats.ReconnectBufSize(-1))...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting the shared pair cache to NATS at %s: %w", redact(url), err)
	}
	var tier *sharedcache.Tier
	c.OnLookup = metrics.RegisterSharedCache(met.Registry, func() metrics.SharedCacheStats {
		st := tier.Stats()
		return metrics.SharedCacheStats{Lookups: st.Lookups, Hits: st.Hits, Skipped: st.Skipped, Errors: st.Errors, Puts: st.Puts}
	})
	if tier, err = sharedcache.New(nc, c, log); err != nil {
		nc.Close()
		return nil, nil, err
	}
	if provision {
		js, err := jetstream.New(nc)
		created := false
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			created, err = sharedcache.Ensure(pctx, js, c)
			cancel()
		}
		switch {
		case err != nil:
			log.Warn("shared pair cache not provisioned: it is used once its bucket exists", "bucket", c.Bucket, "err", err)
		case created:
			log.Info("shared pair cache bucket created", "bucket", c.Bucket, "ttl", c.TTL.String(), "max_bytes", c.MaxBytes)
		}
	}
	if err := tier.Check(ctx); err != nil {
		log.Warn("shared pair cache unavailable: every pair is computed here until its bucket answers (create it with rerank provision --score-cache-kv, or run with --provision)", "bucket", c.Bucket, "err", err)
	} else {
		log.Info("shared pair cache", "bucket", c.Bucket)
	}
	return tier, nc.Close, nil
}
