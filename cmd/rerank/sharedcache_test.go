package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/testmodel"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/sharedcache"
)

// startWorkerProc starts `rerank serve` as a worker of the NATS server at
// natsURL (no HTTP gateway) and waits for its /readyz.
func startWorkerProc(t *testing.T, natsURL string, extra ...string) *serveProc {
	t.Helper()
	bin, _ := binary(t)
	mport, _ := natsembed.FreePort()
	args := append([]string{"serve", "--nats-url", natsURL, "--http", "", "--log-format", "text", "--ack-wait", "5s",
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport)}, extra...)
	p := &serveProc{cmd: exec.Command(bin, args...), url: natsURL, stderr: &syncBuffer{}, done: make(chan struct{}),
		metrics: fmt.Sprintf("http://127.0.0.1:%d", mport)}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(p.metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("serve exited early: %s", p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not ready: %s", p.stderr.String())
		}
	}
}

// metricValue reads one unlabelled metric from /metrics.
func metricValue(t *testing.T, metricsURL, name string) int {
	t.Helper()
	_, body := httpDo(t, "GET", metricsURL+"/metrics", "", "")
	m := regexp.MustCompile(`(?m)^` + name + ` (\d+)`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// The shared tier end to end, through worker processes on one NATS server:
// a worker that never saw a candidate list answers its re-submission from
// the bucket another worker filled (and says so in the result and its
// metrics), with the same scores; after the model's files are swapped
// under the same name and directory and the worker restarted, nothing is
// taken from the bucket (the digest differs) and the scores are the new
// model's; a worker whose bucket does not exist answers every job,
// computing each pair, and says so at start. Ops may create the bucket
// alone (rerank provision); workers do not reset its bounds.
func TestSharedPairCacheAcrossWorkers(t *testing.T) {
	_, tiny := binary(t)
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	dir := filepath.Join(t.TempDir(), "demo")
	if err := os.CopyFS(dir, os.DirFS(tiny)); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, _ := client.New(nc, client.Options{Model: "demo"})
	submit := func(id string) *schemas.Result {
		t.Helper()
		j := &schemas.Job{ID: id, Query: "what is the capital of france"}
		for i, text := range []string{"Paris is the capital of France.", "Lyon is a city.", "Berlin is in Germany.", "Madrid is in Spain."} {
			j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprint(i), Text: text})
		}
		r, err := c.Submit(ctx, j)
		if err != nil || r.Error != nil {
			t.Fatalf("%s: %v %+v", id, err, r)
		}
		return r
	}
	same := func(a, b *schemas.Result) bool {
		for i := range a.Results {
			if a.Results[i].Index != b.Results[i].Index || a.Results[i].RelevanceScore != b.Results[i].RelevanceScore {
				return false
			}
		}
		return true
	}
	worker := func(extra ...string) *serveProc {
		return startWorkerProc(t, ns.ClientURL(), append([]string{"--model", "demo=" + dir}, extra...)...)
	}

	// Ops creates the bucket alone, with bounds of its own; a worker with
	// the default --provision leaves them as they are.
	bin, _ := binary(t)
	out, err := exec.Command(bin, "provision", "--nats-url", ns.ClientURL(), "--score-cache-kv", "scores",
		"--score-cache-kv-ttl", "24h", "--score-cache-kv-max-bytes", "64MiB").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "bucket scores (shared pair cache): entries live 24h0m0s, at most 67108864 bytes") ||
		strings.Contains(string(out), "stream RERANK") {
		t.Fatalf("rerank provision --score-cache-kv alone: %v\n%s", err, out)
	}
	a := worker("--score-cache-kv", "scores")
	js, _ := jetstream.New(nc)
	if s, err := js.Stream(ctx, sharedcache.StreamName("scores")); err != nil {
		t.Fatal(err)
	} else if cfg := s.CachedInfo().Config; cfg.MaxAge != 24*time.Hour || cfg.MaxBytes != 64<<20 {
		t.Errorf("the worker changed the bucket's bounds to %v, %d bytes", cfg.MaxAge, cfg.MaxBytes)
	}
	first := submit("first")
	if first.Cached != 0 || first.ModelDigest == "" {
		t.Fatalf("first: %+v", first)
	}
	if n := metricValue(t, a.metrics, "rerank_score_cache_kv_puts_total"); n != 4 {
		t.Errorf("worker a stored %d pairs, want 4", n)
	}
	a.stop(t)

	b := worker("--score-cache-kv", "scores")
	again := submit("again")
	if again.Cached != 4 || again.ModelDigest != first.ModelDigest || !same(again, first) || again.Worker == first.Worker {
		t.Fatalf("another worker: %+v; first %+v", again, first)
	}
	if n := metricValue(t, b.metrics, "rerank_score_cache_kv_hits_total"); n != 4 {
		t.Errorf("rerank_score_cache_kv_hits_total %d, want 4", n)
	}
	b.stop(t)

	// New weights under the same name and directory.
	spec := testmodel.Tiny
	spec.Seed += 11
	if err := testmodel.WriteONNXFile(filepath.Join(dir, model.ModelFile), spec); err != nil {
		t.Fatal(err)
	}
	w := worker("--score-cache-kv", "scores")
	swapped := submit("swapped")
	if swapped.Cached != 0 || swapped.ModelDigest == first.ModelDigest || same(swapped, first) {
		t.Fatalf("after the swap: %+v; before %+v", swapped, first)
	}
	w.stop(t)

	// No bucket (nobody provisions it): every pair computed, no job lost.
	d := worker("--score-cache-kv", "missing", "--provision=false")
	if r := submit("no-bucket"); r.Cached != 0 || !same(r, swapped) {
		t.Fatalf("without its bucket: %+v; want %+v", r, swapped)
	}
	if !strings.Contains(d.stderr.String(), "shared pair cache unavailable") || !strings.Contains(d.stderr.String(), "shared pair cache failing") {
		t.Errorf("the missing bucket is not logged: %s", d.stderr.String())
	}
}
