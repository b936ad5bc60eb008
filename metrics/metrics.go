// Package metrics owns the worker's Prometheus metrics and its HTTP
// endpoints: /metrics, /healthz (alive) and /readyz (models loaded and
// JetStream reachable). Metrics implements worker.Observer structurally and
// takes the pipeline's scoring stats through ObserveScore.
//
// It may import the standard library and client_golang only.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the worker's collectors on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	jobs        *prometheus.CounterVec
	jobDuration *prometheus.HistogramVec
	queueWait   *prometheus.HistogramVec
	pairs       *prometheus.CounterVec
	batchSize   *prometheus.HistogramVec
	padding     *prometheus.HistogramVec
	inference   *prometheus.HistogramVec
	jobsPerCall *prometheus.HistogramVec
	inFlight    prometheus.Gauge
	redelivered *prometheus.CounterVec
	dead        *prometheus.CounterVec
	panics      *prometheus.CounterVec
	calls       *prometheus.CounterVec
	laneWait    *prometheus.HistogramVec
	chunks      *prometheus.GaugeVec
	backlog     *prometheus.GaugeVec
}

// New registers the collectors. connected reports the NATS connection state
// (1 connected, 0 not); nil omits that gauge.
func New(connected func() float64) *Metrics {
	r := NewRegistry(connected)
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}
	m.jobs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rerank_jobs_total",
		Help: "Jobs settled, by model and outcome (ok, invalid, retry, failed, abandoned)."}, []string{"model", "outcome"})
	m.jobDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rerank_job_duration_seconds",
		Help: "Time from pulling a job to settling it.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"model"})
	m.queueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rerank_queue_wait_seconds",
		Help: "Time a job waited in the stream (message timestamp to pull).", Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}, []string{"model"})
	m.pairs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rerank_pairs_scored_total",
		Help: "Query-passage pairs scored."}, []string{"model"})
	m.batchSize = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rerank_batch_size",
		Help: "Pairs per ONNX Runtime batch.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}}, []string{"model"})
	m.padding = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rerank_padding_ratio",
		Help: "Padded tokens over real tokens per scoring call (1 = no padding).", Buckets: []float64{1, 1.05, 1.1, 1.2, 1.5, 2, 3, 5}}, []string{"model"})
	m.inference = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rerank_inference_seconds",
		Help: "ONNX Runtime time per scoring call.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"model"})
	m.jobsPerCall = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rerank_jobs_per_scoring_call",
		Help: "Jobs sharing one scoring call (cross-job batching).", Buckets: []float64{1, 2, 4, 8, 16, 32, 64}}, []string{"model"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "rerank_jobs_in_flight", Help: "Jobs being processed."})
	m.redelivered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rerank_redeliveries_total",
		Help: "Jobs received with a delivery count above 1."}, []string{"model"})
	m.dead = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rerank_dead_letters_total",
		Help: "Jobs dead-lettered, by error code."}, []string{"model", "code"})
	m.panics = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rerank_job_panics_total",
		Help: "Go panics recovered while answering a job (the job failed with internal, the worker kept running)."}, []string{"model"})
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rerank_scheduler_calls_total",
		Help: "Scoring calls, by the scheduler's decision: which model and which lane."}, []string{"model", "lane"})
	m.laneWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rerank_lane_wait_seconds",
		Help:    "Time from a job reaching the model's scheduler to its first scoring call, by lane.",
		Buckets: []float64{0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}}, []string{"model", "lane"})
	m.chunks = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rerank_chunks_in_flight",
		Help: "Chunks (a job's share of one scoring call) being scored."}, []string{"model"})
	m.backlog = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rerank_backlog_jobs",
		Help: "Jobs of a lane's consumer: state pending (waiting for delivery) or unacked (delivered, not yet settled). Every worker of a pool reports the same consumer: aggregate with max."}, []string{"model", "lane", "state"})
	for _, c := range []prometheus.Collector{m.jobs, m.jobDuration, m.queueWait, m.pairs, m.batchSize, m.padding,
		m.inference, m.jobsPerCall, m.inFlight, m.redelivered, m.dead, m.panics, m.calls, m.laneWait, m.chunks, m.backlog} {
		f(c)
	}
	return m
}

// JobDone records a settled job (worker.Observer).
func (m *Metrics) JobDone(model, outcome string, _ uint64, queued, total time.Duration) {
	m.jobs.WithLabelValues(model, outcome).Inc()
	m.jobDuration.WithLabelValues(model).Observe(total.Seconds())
	m.queueWait.WithLabelValues(model).Observe(max(queued, 0).Seconds())
}

// Redelivered records a redelivery (worker.Observer).
func (m *Metrics) Redelivered(model string) { m.redelivered.WithLabelValues(model).Inc() }

// DeadLettered records a dead letter (worker.Observer).
func (m *Metrics) DeadLettered(model, code string) { m.dead.WithLabelValues(model, code).Inc() }

// Backlog records a lane consumer's backlog (worker.Observer).
func (m *Metrics) Backlog(model, lane string, pending, unacked uint64) {
	m.backlog.WithLabelValues(model, lane, "pending").Set(float64(pending))
	m.backlog.WithLabelValues(model, lane, "unacked").Set(float64(unacked))
}

// Panicked records a recovered panic (worker.Observer).
func (m *Metrics) Panicked(model string) { m.panics.WithLabelValues(model).Inc() }

// InFlight moves the in-flight gauge (worker.Observer).
func (m *Metrics) InFlight(delta int) { m.inFlight.Add(float64(delta)) }

// ObserveScore records one scoring call of the pipeline.
func (m *Metrics) ObserveScore(model, lane string, jobs, pairs int, batchSizes []int, paddingRatio float64, inference time.Duration) {
	m.calls.WithLabelValues(model, lane).Inc()
	m.pairs.WithLabelValues(model).Add(float64(pairs))
	for _, b := range batchSizes {
		m.batchSize.WithLabelValues(model).Observe(float64(b))
	}
	m.padding.WithLabelValues(model).Observe(paddingRatio)
	m.inference.WithLabelValues(model).Observe(inference.Seconds())
	m.jobsPerCall.WithLabelValues(model).Observe(float64(jobs))
}

// ObserveLaneWait records a job's wait for its first scoring call.
func (m *Metrics) ObserveLaneWait(model, lane string, wait time.Duration) {
	m.laneWait.WithLabelValues(model, lane).Observe(wait.Seconds())
}

// ChunksInFlight moves the chunks-in-flight gauge.
func (m *Metrics) ChunksInFlight(model string, delta int) {
	m.chunks.WithLabelValues(model).Add(float64(delta))
}

// Server serves /metrics, /healthz and /readyz.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan error // Serve's end: nil when Close stopped it

	closeOnce sync.Once
	closeErr  error
}

// Listen binds addr (":9464", "127.0.0.1:0", …) and serves until Close.
// ready is called by /readyz with a short deadline.
func Listen(addr string, m *Metrics, ready func(ctx context.Context) error) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(m.Registry))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, done: make(chan error, 1)}
	go func() { // owned by Server: Close awaits it
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and waits for it; it returns the error that
// ended serving early (the listener failing after start; /healthz fails
// then too, which probes report), or the shutdown's. A second Close
// returns the first's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.closeErr = s.srv.Shutdown(ctx)
		if err := <-s.done; err != nil {
			s.closeErr = fmt.Errorf("serving metrics: %w", err)
		}
	})
	return s.closeErr
}
