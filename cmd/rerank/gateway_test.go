package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/schemas"
)

// exampleJob is examples/job.json, decoded.
func exampleJob(t *testing.T) *schemas.Job {
	t.Helper()
	b, err := os.ReadFile("../../examples/job.json")
	if err != nil {
		t.Fatal(err)
	}
	var j schemas.Job
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	return &j
}

func httpDo(t *testing.T, method, url, token, body string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGatewayServesRealClients: `rerank serve` on the embedded default
// serves the HTTP gateway; the official Cohere SDK (v1 and v2 clients) and
// a plain TEI request re-rank the example job into the same order, with the
// same scores, as `rerank submit`; a wrong token is refused; an async job is
// answered 202, then its stored result.
func TestGatewayServesRealClients(t *testing.T) {
	sdk := model.FindUp(".cache/cohere-sdk/node_modules/cohere-ai/package.json")
	if sdk == "" {
		t.Fatal("the Cohere SDK is not installed: run `make cohere-sdk` (make test does)")
	}
	sdkDir := filepath.Dir(filepath.Dir(filepath.Dir(sdk)))
	script, err := os.ReadFile("../../tools/cohere/rerank.mjs")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sdkDir, "rerank.mjs"), script, 0o644); err != nil {
		t.Fatal(err)
	}
	const token = "test-token-1"
	port, _ := natsembed.FreePort()
	p := startServe(t, t.TempDir(), port, "--gateway-tokens", "other-token,"+token)
	job := exampleJob(t)

	// The reference: the same job through NATS.
	r := runCmd(t, "", "submit", "--json", "--nats-url", p.url, "../../examples/job.json")
	var want schemas.Result
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &want) != nil || len(want.Results) != len(job.Candidates) {
		t.Fatalf("submit: %+v", r)
	}
	texts := make([]string, len(job.Candidates))
	for i, c := range job.Candidates {
		texts[i] = c.Text
	}
	in, _ := json.Marshal(map[string]any{"query": job.Query, "documents": texts})
	cmd := exec.Command("node", filepath.Join(sdkDir, "rerank.mjs"), p.http, token, "demo")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the Cohere SDK failed: %v\n%s\nserve log:\n%s", err, stderr.String(), p.stderr.String())
	}
	var got struct {
		V1 []struct {
			Index int
			Score float64
			Text  string
		}
		V2 []struct {
			Index int
			Score float64
		}
		ID     string
		Denied any
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(got.V1) != len(want.Results) || len(got.V2) != len(want.Results) || got.ID == "" {
		t.Fatalf("SDK results %s", out)
	}
	for i, w := range want.Results {
		v1, v2 := got.V1[i], got.V2[i]
		if v1.Index != w.Index || v2.Index != w.Index || math.Abs(v1.Score-w.RelevanceScore) > 1e-4 || math.Abs(v2.Score-w.RelevanceScore) > 1e-4 || v1.Text != texts[w.Index] {
			t.Fatalf("rank %d: SDK v1 %+v, v2 %+v; rerank submit %+v", i, v1, v2, w)
		}
	}
	if fmt.Sprint(got.Denied) != "401" {
		t.Fatalf("a wrong token: %v, want 401", got.Denied)
	}

	// TEI, with curl's plain JSON.
	body, _ := json.Marshal(map[string]any{"query": job.Query, "texts": texts, "return_text": true})
	code, resp := httpDo(t, "POST", p.http+"/rerank", token, string(body))
	var tei []struct {
		Index int
		Score float64
		Text  string
	}
	if code != 200 || json.Unmarshal([]byte(resp), &tei) != nil || len(tei) != len(want.Results) {
		t.Fatalf("TEI: %d %s", code, resp)
	}
	for i, w := range want.Results {
		if tei[i].Index != w.Index || math.Abs(tei[i].Score-w.RelevanceScore) > 1e-4 || tei[i].Text != texts[w.Index] {
			t.Fatalf("TEI rank %d: %+v, rerank submit %+v", i, tei[i], w)
		}
	}
	if code, resp := httpDo(t, "POST", p.http+"/rerank", "", string(body)); code != 401 {
		t.Fatalf("TEI without a token: %d %s", code, resp)
	}

	// Async: 202 with the id, then the stored result.
	jb, _ := json.Marshal(map[string]any{"query": job.Query, "candidates": job.Candidates})
	code, resp = httpDo(t, "POST", p.http+"/v1/jobs", token, string(jb), "Idempotency-Key", "async-1")
	if code != 202 || !strings.Contains(resp, `"id":"async-1"`) {
		t.Fatalf("POST /v1/jobs: %d %s", code, resp)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, resp = httpDo(t, "GET", p.http+"/v1/jobs/async-1", token, "")
		if code == 200 || time.Now().After(deadline) || code != 202 {
			break
		}
	}
	var res schemas.Result
	if code != 200 || json.Unmarshal([]byte(resp), &res) != nil || res.ID != "async-1" || len(res.Results) != 5 || res.Results[0].Index != want.Results[0].Index {
		t.Fatalf("GET /v1/jobs/async-1: %d %s", code, resp)
	}
	if code, resp := httpDo(t, "GET", p.http+"/v1/jobs/never-submitted", token, ""); code != 404 {
		t.Fatalf("unknown job: %d %s", code, resp)
	}
	if code, resp := httpDo(t, "GET", p.http+"/v1/models", token, ""); code != 200 || !strings.Contains(resp, `"demo"`) {
		t.Fatalf("models: %d %s", code, resp)
	}
	// The gateway's requests are on the worker's /metrics.
	if m := httpGet(t, p.metrics+"/metrics", 200); !strings.Contains(m, `rerank_gateway_requests_total{code="200",endpoint="tei"} 1`) ||
		!strings.Contains(m, `rerank_gateway_requests_total{code="200",endpoint="cohere_v2"} 1`) {
		t.Fatalf("/metrics lacks the gateway's requests")
	}
}

// gatewayProc is a `rerank gateway` process.
type gatewayProc struct {
	cmd  *exec.Cmd
	url  string
	errb *syncBuffer
}

func startGatewayProc(t *testing.T, natsURL string) *gatewayProc {
	t.Helper()
	bin, _ := binary(t)
	hport, _ := natsembed.FreePort()
	g := &gatewayProc{url: fmt.Sprintf("http://127.0.0.1:%d", hport), errb: &syncBuffer{}}
	g.cmd = exec.Command(bin, "gateway", "--nats-url", natsURL, "--http", fmt.Sprintf("127.0.0.1:%d", hport), "--log-format", "text")
	g.cmd.Stderr = g.errb
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.cmd.Process.Kill(); g.cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(g.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %s", g.errb.String())
		}
	}
}

// TestGatewayKilledMidRequestLosesNoJob: a gateway SIGKILLed while a
// request waits for its result loses nothing: the job was queued before
// the wait began, a worker answers it, and another gateway serves the
// result by the request's Idempotency-Key.
func TestGatewayKilledMidRequestLosesNoJob(t *testing.T) {
	bin, tiny := binary(t)
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	worker := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--nats-url", ns.ClientURL(), "--model", "demo="+tiny, "--metrics-addr", "", "--log-format", "text")
		var errb syncBuffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if strings.Contains(errb.String(), "worker started") {
				return cmd
			}
			if time.Now().After(deadline) {
				t.Fatalf("worker not ready: %s", errb.String())
			}
		}
	}
	// A worker provisions the queue and leaves: the job will wait.
	w := worker()
	w.Process.Signal(syscall.SIGTERM)
	w.Wait()

	g := startGatewayProc(t, ns.ClientURL())
	job := exampleJob(t)
	texts := make([]string, len(job.Candidates))
	for i, c := range job.Candidates {
		texts[i] = c.Text
	}
	body, _ := json.Marshal(map[string]any{"query": job.Query, "documents": texts})
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", g.url+"/v1/rerank", bytes.NewReader(body))
		req.Header.Set("Idempotency-Key", "killed-1")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("the request was answered %d before the gateway died", resp.StatusCode)
		}
		errc <- err
	}()
	// Once the job is queued (and recorded as accepted), kill the gateway.
	// Accepted alone (202) is not queued yet: the id is reserved before
	// the job is published.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	queued := func() bool {
		s, err := js.Stream(context.Background(), schemas.JobsStream)
		return err == nil && s.CachedInfo().State.Msgs == 1
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, _ := httpDo(t, "GET", g.url+"/v1/jobs/killed-1", "", "")
		if code == 202 && queued() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job never showed as pending (last %d): %s", code, g.errb.String())
		}
	}
	g.cmd.Process.Kill()
	g.cmd.Wait()
	if err := <-errc; err == nil || strings.Contains(err.Error(), "answered") {
		t.Fatalf("the request: %v", err)
	}

	worker()
	g2 := startGatewayProc(t, ns.ClientURL())
	var code int
	var resp string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, resp = httpDo(t, "GET", g2.url+"/v1/jobs/killed-1", "", "")
		if code != 202 || time.Now().After(deadline) {
			break
		}
	}
	var res schemas.Result
	if code != 200 || json.Unmarshal([]byte(resp), &res) != nil || res.ID != "killed-1" || res.Error != nil || len(res.Results) != len(texts) {
		t.Fatalf("after the kill: %d %s", code, resp)
	}
	// Retrying the original request answers it from the stored result.
	code, resp = httpDo(t, "POST", g2.url+"/v1/rerank", "", string(body), "Idempotency-Key", "killed-1")
	if code != 200 || !strings.Contains(resp, `"id":"killed-1"`) {
		t.Fatalf("the retried request: %d %s", code, resp)
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
