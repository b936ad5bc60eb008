package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Gateway holds the HTTP gateway's collectors; it implements
// gateway.Observer structurally.
type Gateway struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewGateway registers the gateway's collectors on r (the worker's registry
// when the gateway runs inside `rerank serve`, else NewRegistry's).
func NewGateway(r *prometheus.Registry) *Gateway {
	g := &Gateway{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rerank_gateway_requests_total",
			Help: "HTTP gateway requests, by endpoint and status code."}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rerank_gateway_request_duration_seconds",
			Help:    "HTTP gateway request duration (for the re-rank endpoints: queue wait + re-ranking + transport).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}, []string{"endpoint"}),
	}
	r.MustRegister(g.requests, g.duration)
	return g
}

// Request records one request (gateway.Observer).
func (g *Gateway) Request(endpoint string, status int, d time.Duration) {
	g.requests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
	g.duration.WithLabelValues(endpoint).Observe(d.Seconds())
}

// NewRegistry is a registry with the Go and process collectors and, when
// connected is not nil, rerank_nats_connected: New builds the worker's on
// it, and `rerank gateway` uses it alone.
func NewRegistry(connected func() float64) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if connected != nil {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rerank_nats_connected",
			Help: "1 while the NATS connection is up."}, connected))
	}
	return r
}

// RegisterBuildInfo adds rerank_build_info{version,revision,go_version,
// ort_version} 1 to r: which build a process runs, for dashboards and for
// telling the workers of a rollout apart.
func RegisterBuildInfo(r *prometheus.Registry, version, revision, goVersion, ortVersion string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rerank_build_info",
		Help: "The build this process runs (always 1): module version, VCS revision, Go version, ONNX Runtime release it is made for."},
		[]string{"version", "revision", "go_version", "ort_version"})
	g.WithLabelValues(version, revision, goVersion, ortVersion).Set(1)
	r.MustRegister(g)
}

// Handler serves a registry's metrics.
func Handler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{})
}
