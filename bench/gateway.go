package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/internal/proc"
	"github.com/rerank/rerank/schemas"
)

// benchGateway compares small jobs sent through a `rerank gateway` process
// (POST /v1/rerank, all at once) with the same jobs published directly
// (client.SubmitAsync, all at once), on the same worker process:
// gateway_vs_nats = jobs/s over HTTP ÷ jobs/s direct.
func benchGateway(ctx context.Context, c config, r *rand.Rand) error {
	const jobsPerRun, candidates = 200, 10
	ns, stopNATS, err := startNATS()
	if err != nil {
		return err
	}
	defer stopNATS()
	w, err := startWorker(c, ns.ClientURL())
	if err != nil {
		return err
	}
	defer w.stop()
	gw, err := startGatewayProc(c, ns.ClientURL())
	if err != nil {
		return err
	}
	defer gw.stop()
	cl, closeNC, err := benchClient(ns.ClientURL())
	if err != nil {
		return err
	}
	defer closeNC()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: jobsPerRun}}
	var direct, viaHTTP []float64
	for run := range c.gatewayRuns {
		mk := func(prefix string) []*schemas.Job {
			jobs := make([]*schemas.Job, jobsPerRun)
			for i := range jobs {
				jobs[i] = makeJob(r, fmt.Sprintf("%s-%d-%d", prefix, run, i), candidates, 40)
			}
			return jobs
		}
		dj, hj := mk("gw-direct"), mk("gw-http")
		start := time.Now()
		if err := submitAll(ctx, cl, dj); err != nil {
			return err
		}
		direct = append(direct, float64(jobsPerRun)/time.Since(start).Seconds())
		start = time.Now()
		if err := postAll(ctx, hc, gw.url, hj); err != nil {
			return err
		}
		viaHTTP = append(viaHTTP, float64(jobsPerRun)/time.Since(start).Seconds())
	}
	line("nats_direct_small_jobs_per_s", median(direct), "jobs/s")
	line("gateway_small_jobs_per_s", median(viaHTTP), "jobs/s")
	line("gateway_vs_nats", median(viaHTTP)/median(direct), "ratio")
	return nil
}

// postAll sends every job as a Cohere re-rank request at once and waits
// for every answer.
func postAll(ctx context.Context, hc *http.Client, url string, jobs []*schemas.Job) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(jobs))
	for _, j := range jobs {
		docs := make([]string, len(j.Candidates))
		for i, c := range j.Candidates {
			docs[i] = c.Text
		}
		body, _ := json.Marshal(map[string]any{"model": "bench", "query": j.Query, "documents": docs, "timeout": 600})
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/rerank", bytes.NewReader(body))
			req.Header.Set("Idempotency-Key", j.ID)
			resp, err := hc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("job %s: %d %s", j.ID, resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// startGatewayProc starts a `rerank gateway` process and waits for its
// /readyz; its url is the gateway's HTTP address.
func startGatewayProc(c config, natsURL string) (*workerProc, error) {
	port, err := natsembed.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := proc.Start(proc.Spec{Name: "gateway", Path: c.rerankBin, Log: procLog("gateway"),
		Args: []string{"gateway", "--nats-url", natsURL, "--http", addr, "--log-format", "text", "--log-level", "warn"}})
	if err != nil {
		return nil, fmt.Errorf("starting %s gateway: %w", c.rerankBin, err)
	}
	g := &workerProc{Proc: p, url: "http://" + addr}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(g.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g, nil
			}
		}
	}
	g.stop()
	return nil, fmt.Errorf("the gateway was not ready after a minute")
}
