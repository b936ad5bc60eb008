package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CacheStats are the pair cache's counters, as metrics reads them.
type CacheStats struct {
	Hits, Misses, Evictions, Shared int64
	Entries                         int
	Bytes, MaxBytes                 int64
}

// RegisterCache exposes the pair cache's counters, read from stats at each
// scrape: rerank_score_cache_{hits,misses,shared,evictions}_total,
// rerank_score_cache_entries, rerank_score_cache_bytes and
// rerank_score_cache_max_bytes.
func RegisterCache(r *prometheus.Registry, stats func() CacheStats) {
	counter := func(name, help string, v func(CacheStats) int64) { readAtScrape(r, true, name, help, stats, v) }
	gauge := func(name, help string, v func(CacheStats) int64) { readAtScrape(r, false, name, help, stats, v) }
	counter("rerank_score_cache_hits_total", "Pairs whose score the pair cache held.", func(s CacheStats) int64 { return s.Hits })
	counter("rerank_score_cache_misses_total", "Pairs the pair cache did not hold (scored, or taken from another job scoring them).", func(s CacheStats) int64 { return s.Misses })
	counter("rerank_score_cache_shared_total", "Pairs taken from another job scoring them at the same moment (single flight), not scored again.", func(s CacheStats) int64 { return s.Shared })
	counter("rerank_score_cache_evictions_total", "Entries evicted (least recently used) to stay within the bound.", func(s CacheStats) int64 { return s.Evictions })
	gauge("rerank_score_cache_entries", "Pair scores held.", func(s CacheStats) int64 { return int64(s.Entries) })
	gauge("rerank_score_cache_bytes", "Memory the held entries count for (entries × bytes per entry).", func(s CacheStats) int64 { return s.Bytes })
	gauge("rerank_score_cache_max_bytes", "The cache's bound (--score-cache).", func(s CacheStats) int64 { return s.MaxBytes })
}

// RegisterModelInfo exposes each served model's provenance digest
// (rerank_model_info{model,digest} = 1): workers serving one name from
// different files show different digests.
func RegisterModelInfo(r *prometheus.Registry, digests map[string]string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rerank_model_info",
		Help: "The models this worker serves (always 1), with the digest of everything that decides their scores (graph, tokenizer, settings, injection)."},
		[]string{"model", "digest"})
	for m, d := range digests {
		g.WithLabelValues(m, d).Set(1)
	}
	r.MustRegister(g)
}

// SharedCacheStats are the shared tier's counters, in pairs, as metrics
// reads them.
type SharedCacheStats struct {
	Lookups, Hits, Skipped, Errors, Puts int64
}

// RegisterSharedCache exposes the shared tier's counters, read from stats
// at each scrape (rerank_score_cache_kv_{lookups,hits,skipped,errors,puts}_total),
// and returns the observer of its lookups' latency
// (rerank_score_cache_kv_lookup_seconds, one observation per job).
func RegisterSharedCache(r *prometheus.Registry, stats func() SharedCacheStats) func(pairs, hits int, d time.Duration) {
	counter := func(name, help string, v func(SharedCacheStats) int64) { readAtScrape(r, true, name, help, stats, v) }
	counter("rerank_score_cache_kv_lookups_total", "Pairs looked up in the shared bucket (those the process cache missed).", func(s SharedCacheStats) int64 { return s.Lookups })
	counter("rerank_score_cache_kv_hits_total", "Pairs the shared bucket held: scored by some worker before, not scored here.", func(s SharedCacheStats) int64 { return s.Hits })
	counter("rerank_score_cache_kv_skipped_total", "Pairs not looked up or not stored because the shared bucket was failing (backoff) or the connection down.", func(s SharedCacheStats) int64 { return s.Skipped })
	counter("rerank_score_cache_kv_errors_total", "Failed lookups and stores (each starts a backoff) and malformed values read.", func(s SharedCacheStats) int64 { return s.Errors })
	counter("rerank_score_cache_kv_puts_total", "Pair scores sent to the shared bucket.", func(s SharedCacheStats) int64 { return s.Puts })
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rerank_score_cache_kv_lookup_seconds",
		Help:    "Time one job's lookup in the shared bucket took (all its pairs, many in flight at once).",
		Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1}})
	r.MustRegister(h)
	return func(_, _ int, d time.Duration) { h.Observe(d.Seconds()) }
}

// readAtScrape registers a counter (or gauge) whose value is v of stats,
// read at each scrape.
func readAtScrape[S any](r *prometheus.Registry, counter bool, name, help string, stats func() S, v func(S) int64) {
	read := func() float64 { return float64(v(stats())) }
	if counter {
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, read))
		return
	}
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, read))
}
