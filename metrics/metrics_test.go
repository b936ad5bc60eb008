package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rerank/rerank/metrics"
	"github.com/rerank/rerank/worker"
)

// *Metrics is the worker's Observer.
var _ worker.Observer = (*metrics.Metrics)(nil)

func TestObserverEventsReachTheCollectors(t *testing.T) {
	connected := 1.0
	m := metrics.New(func() float64 { return connected })
	m.JobDone("m", worker.OutcomeOK, 1, 20*time.Millisecond, 100*time.Millisecond)
	m.JobDone("m", worker.OutcomeOK, 2, -time.Second, time.Millisecond) // clock skew: queued clamps at 0
	m.JobDone("m", worker.OutcomeInvalid, 1, 0, time.Millisecond)
	m.Redelivered("m")
	m.DeadLettered("m", "missing_query")
	m.InFlight(3)
	m.InFlight(-1)
	m.ObserveScore("m", "bulk", 4, 48, []int{16, 16, 16}, 1.03, 250*time.Millisecond)
	m.ObserveLaneWait("m", "bulk", 300*time.Millisecond)
	m.ChunksInFlight("m", 3)
	m.ChunksInFlight("m", -1)
	m.Panicked("m")
	connected = 0

	for _, tc := range []struct {
		name string
		want string
	}{
		{"rerank_jobs_total", `rerank_jobs_total{model="m",outcome="invalid"} 1
rerank_jobs_total{model="m",outcome="ok"} 2`},
		{"rerank_redeliveries_total", `rerank_redeliveries_total{model="m"} 1`},
		{"rerank_scheduler_calls_total", `rerank_scheduler_calls_total{lane="bulk",model="m"} 1`},
		{"rerank_chunks_in_flight", `rerank_chunks_in_flight{model="m"} 2`},
		{"rerank_job_panics_total", `rerank_job_panics_total{model="m"} 1`},
		{"rerank_dead_letters_total", `rerank_dead_letters_total{code="missing_query",model="m"} 1`},
		{"rerank_jobs_in_flight", `rerank_jobs_in_flight 2`},
		{"rerank_pairs_scored_total", `rerank_pairs_scored_total{model="m"} 48`},
		{"rerank_nats_connected", `rerank_nats_connected 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exp := "# HELP " + tc.name + " " + help(t, m, tc.name) + "\n# TYPE " + tc.name + " " + kind(tc.name) + "\n" + tc.want + "\n"
			if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(exp), tc.name); err != nil {
				t.Error(err)
			}
		})
	}
	// Histograms: counts per observation.
	for name, want := range map[string]int{
		"rerank_batch_size": 3, "rerank_padding_ratio": 1, "rerank_inference_seconds": 1,
		"rerank_jobs_per_scoring_call": 1, "rerank_job_duration_seconds": 3, "rerank_queue_wait_seconds": 3,
		"rerank_lane_wait_seconds": 1,
	} {
		mfs, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := -1
		for _, mf := range mfs {
			if mf.GetName() == name {
				got = int(mf.GetMetric()[0].GetHistogram().GetSampleCount())
			}
		}
		if got != want {
			t.Errorf("%s: %d observations, want %d", name, got, want)
		}
	}
}

func help(t *testing.T, m *metrics.Metrics, name string) string {
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetHelp()
		}
	}
	t.Fatalf("no metric %s", name)
	return ""
}

func kind(name string) string {
	if strings.HasSuffix(name, "_total") {
		return "counter"
	}
	return "gauge"
}

func TestServerEndpoints(t *testing.T) {
	m := metrics.New(nil)
	m.JobDone("m", worker.OutcomeOK, 1, 0, time.Millisecond)
	var readyErr error
	s, err := metrics.Listen("127.0.0.1:0", m, func(context.Context) error { return readyErr })
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		path     string
		ready    error
		code     int
		contains string
	}{
		{"/healthz", nil, 200, "ok"},
		{"/readyz", nil, 200, "ready"},
		{"/readyz", errors.New("JetStream unreachable"), 503, "not ready: JetStream unreachable"},
		{"/healthz", errors.New("JetStream unreachable"), 200, "ok"}, // alive though not ready
		{"/metrics", nil, 200, `rerank_jobs_total{model="m",outcome="ok"} 1`},
		{"/metrics", nil, 200, "process_resident_memory_bytes"},
	} {
		readyErr = tc.ready
		code, body := get(tc.path)
		if code != tc.code || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s (ready err %v): %d %q, want %d containing %q", tc.path, tc.ready, code, body, tc.code, tc.contains)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		t.Error("server still answers after Close")
	}
	if err := s.Close(); err != nil { // idempotent
		t.Errorf("Close again: %v", err)
	}
}
