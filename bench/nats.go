package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/internal/proc"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

// benchNATS compares jobs through a `rerank serve` worker process (embedded
// JetStream) with the same jobs through the pipeline in this process, and
// reports the worker's peak RSS under that load.
func benchNATS(ctx context.Context, c config, m *model.Model, r *rand.Rand) error {
	// 1,000-candidate jobs, two in flight. One interleaved run of each side
	// by default (--nats-runs): a run is 2,000 pairs, about 50 s on 2 cores,
	// and make bench must stay within 10 minutes.
	const jobsPerRun, candidates = 2, 1000
	runs := make([][]*schemas.Job, c.natsRuns)
	for i := range runs {
		for k := range jobsPerRun {
			runs[i] = append(runs[i], makeJob(r, fmt.Sprintf("nats-%d-%d", i, k), candidates, 75))
		}
	}
	pairs := jobsPerRun * candidates

	p, err := newPipeline(m, pipeline.Config{})
	if err != nil {
		return err
	}
	defer p.Close()
	// The NATS server runs in this process, as it would on its own machine:
	// the worker's memory is the worker's alone.
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
	cl, closeNC, err := benchClient(w.url)
	if err != nil {
		return err
	}
	defer closeNC()
	// Interleaved: the same jobs directly, then through the worker (an idle
	// side uses no CPU).
	var direct, viaNATS []float64
	for _, jobs := range runs {
		start := time.Now()
		for _, o := range p.RerankBatch(ctx, "bench", jobs) {
			if o.Err != nil {
				return o.Err
			}
		}
		direct = append(direct, float64(pairs)/time.Since(start).Seconds())

		start = time.Now()
		if err := submitAll(ctx, cl, jobs); err != nil {
			return err
		}
		viaNATS = append(viaNATS, float64(pairs)/time.Since(start).Seconds())
	}
	rss, err := w.PeakRSSMB()
	if err != nil {
		return err
	}
	line("pipeline_jobs_pairs_per_s", median(direct), "pairs/s")
	line("nats_worker_pairs_per_s", median(viaNATS), "pairs/s")
	line("nats_vs_pipeline", median(viaNATS)/median(direct), "ratio")
	line("peak_rss_mb", rss, "MB")
	return nil
}

// startNATS starts an embedded JetStream server on a free port with a
// temporary store; stop shuts it down and removes the store.
func startNATS() (ns *natsembed.Server, stop func(), err error) {
	store, err := os.MkdirTemp("", "rerank-bench-nats-")
	if err != nil {
		return nil, nil, err
	}
	ns, err = natsembed.Start(natsembed.Options{Port: -1, StoreDir: store})
	if err != nil {
		os.RemoveAll(store)
		return nil, nil, err
	}
	return ns, func() { ns.Stop(); os.RemoveAll(store) }, nil
}

// benchClient connects to url and returns a client for the model "bench";
// closeNC closes its connection.
func benchClient(url string) (cl *client.Client, closeNC func(), err error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, nil, err
	}
	if cl, err = client.New(nc, client.Options{Model: "bench"}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return cl, nc.Close, nil
}

// submitAll submits jobs at once and waits for every result; a job
// answered with an error fails it.
func submitAll(ctx context.Context, cl *client.Client, jobs []*schemas.Job) error {
	var pend []*client.Pending
	for _, j := range jobs {
		pd, err := cl.SubmitAsync(ctx, j)
		if err != nil {
			return err
		}
		pend = append(pend, pd)
	}
	for _, pd := range pend {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		res, err := pd.Result(wctx)
		cancel()
		if err != nil {
			return err
		}
		if res.Error != nil {
			return res.Error
		}
	}
	return nil
}

// workerProc is a rerank process of the benchmark (`serve`, `gateway`),
// run by internal/proc with its log in a file; stop ends it.
type workerProc struct {
	*proc.Proc
	url string
}

var procSeq atomic.Int64

// procLog is where the n-th process of this run writes its log.
func procLog(name string) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("rerank-bench-%d", os.Getpid()), fmt.Sprintf("%s-%d.log", name, procSeq.Add(1)))
}

func startWorker(c config, url string, extra ...string) (*workerProc, error) {
	args := []string{"serve", "--model", "bench=" + c.modelDir, "--nats-url", url,
		"--metrics-addr", "", "--log-format", "text", "--log-level", "info",
		"--device", c.device, "--intra-op-threads", strconv.Itoa(c.intraOp), "--inter-op-threads", strconv.Itoa(c.interOp),
		"--concurrent-runs", strconv.Itoa(c.concurrentRuns)}
	args = append(args, extra...)
	if c.ortLib != "" {
		args = append(args, "--ort-lib", c.ortLib)
	}
	p, err := proc.Start(proc.Spec{Name: "worker", Path: c.rerankBin, Args: args, Log: procLog("worker"),
		Ready: "worker started", ReadyTimeout: 2 * time.Minute})
	if err != nil {
		return nil, fmt.Errorf("starting %s serve (make build): %w", c.rerankBin, err)
	}
	return &workerProc{Proc: p, url: url}, nil
}

// stop ends the process and shows its warnings and errors.
func (w *workerProc) stop() {
	err := w.Stop(30 * time.Second)
	for _, l := range strings.Split(w.Log(), "\n") {
		if (strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR")) && !strings.Contains(l, "no bearer tokens") {
			fmt.Fprintln(os.Stderr, l)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
}
