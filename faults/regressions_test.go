package faults

// Regression tests for defects the fault scenarios found outside faults/
// (RELIABILITY.md, "Defects found and fixed"). Each failed before its fix.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/internal/natsembed"
	iproc "github.com/rerank/rerank/internal/proc"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// cpuSeconds is the user+system CPU time of a process so far.
func cpuSeconds(pid int) float64 {
	s, err := iproc.CPUSeconds(pid)
	if err != nil {
		return -1
	}
	return s
}

// Fixed: worker/worker.go pull() backed off one second after an error from
// cons.Fetch, but not after an error the batch reports (batch.Error(), the
// branch that logs "pulling jobs"): a pull request answered at once with an
// error (no responders: consumer gone, or its leader unavailable in a
// cluster) is re-sent immediately, in a loop that burns a core and floods the
// log for as long as the condition lasts. Seen in TestClusterLeaderLoss as
// hundreds of "pulling jobs ... no responders" warnings per 100 ms while the
// stopped node's consumer leadership moved.
func TestPullBacksOffAfterBatchError(t *testing.T) {
	defer dumpLogs(t)
	_, tiny, _ := assets(t)
	ns := startNATS(t, natsembed.Options{})
	_, js := connect(t, ns.ClientURL())
	w := startWorker(t, "w1", ns.ClientURL(), tiny)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The consumer disappears (an operator deletes it, or its leader is
	// gone): every pull request is now answered "no responders" at once.
	if err := js.DeleteConsumer(ctx, schemas.JobsStream, worker.ConsumerName("demo")); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(w.log(), `msg="pulling jobs"`)
	cpu0, t0 := cpuSeconds(w.Pid()), time.Now()
	<-time.After(3 * time.Second) // the observation window itself
	warnings := strings.Count(w.log(), `msg="pulling jobs"`) - before
	cpu := (cpuSeconds(w.Pid()) - cpu0) / time.Since(t0).Seconds()
	t.Logf("consumer gone for 3s: %d \"pulling jobs\" warnings, worker CPU %.0f%% of a core", warnings, cpu*100)
	if warnings > 10 || cpu > 0.25 {
		t.Errorf("worker/worker.go pull(): no backoff after batch.Error(): %d \"pulling jobs\" warnings and %.0f%% CPU in 3s with the consumer gone (want a few, as after a Fetch error: one per second)\n%s",
			warnings, cpu*100, tail(w.log(), 3))
	}
}

// Fixed: worker/worker.go Run() gave provisioning one 30-second context for
// all of Provision (worker/provision.go), which calls CreateOrUpdateStream
// once per stream without a per-call timeout or retry. On a fresh 3-node
// cluster, two workers provisioning the R3 streams at the same moment race
// a stream create against a stream update; the server answers neither
// request (nats-server 2.15.3; a retry a moment later succeeds at once, cf.
// nats-io/nats-server#3677, #8350), the context runs out, and every worker
// exits with "provisioning stream RERANK_…: context deadline exceeded".
// A Kubernetes rollout of N replicas with --provision onto a new cluster
// starts with N crashes.
func TestConcurrentProvisioningOnFreshCluster(t *testing.T) {
	defer dumpLogs(t)
	_, tiny, _ := assets(t)
	const nodes = 3
	opts := make([]natsembed.Options, nodes)
	var routes, urls []string
	for i := range opts {
		opts[i] = natsembed.Options{Name: fmt.Sprintf("p%d", i+1), Port: freePort(t), StoreDir: t.TempDir(),
			ClusterName: "rerank-provision", ClusterPort: freePort(t)}
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", opts[i].ClusterPort))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", opts[i].Port))
	}
	var wg sync.WaitGroup
	for i := range opts {
		opts[i].Routes = routes
		wg.Add(1)
		go func() { defer wg.Done(); startNATS(t, opts[i]) }()
	}
	wg.Wait()
	url := strings.Join(urls, ",")
	_, js := connect(t, url)
	waitJetStream(t, js)
	// Two workers, each on its own node, provisioning at once.
	procs := make([]*proc, 2)
	errs := make([]error, 2)
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			procs[i], errs[i] = launch(t, fmt.Sprintf("w%d", i+1), urls[i], tiny, "--replicas", "3")
		}()
	}
	wg.Wait()
	for i, p := range procs {
		if p != nil {
			t.Cleanup(func() { p.stop(t) })
		}
		if errs[i] != nil {
			t.Errorf("worker/worker.go Run → Provision: worker %d of 2 could not start on a fresh R3 cluster: %v", i+1, errs[i])
		}
	}
}

// Fixed: a job whose every delivery ends with the worker process dying (OOM
// kill, a native crash in ONNX Runtime, a node lost) is never answered.
// worker/worker.go handle() turns "out of deliveries" into an `internal`
// error result and a dead letter only when the last delivery *returns* an
// error; when it never returns, JetStream stops delivering after MaxDeliver
// and the job stays in RERANK_JOBS for good: no result (the client waits
// forever), no dead letter, nothing in the worker's metrics. The server does
// announce it ($JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.RERANK_JOBS.
// rerank-<model>, with the stream sequence): a worker subscribed to it could
// dead-letter the job and publish the `internal` error result, as
// schemas/README.md promises for "failed on every allowed delivery".
func TestJobPastMaxDeliverByCrashesIsAnswered(t *testing.T) {
	defer dumpLogs(t)
	_, tiny, _ := assets(t)
	ns := startNATS(t, natsembed.Options{})
	nc, js := connect(t, ns.ClientURL())
	args := []string{"--max-deliver", "2", "--ack-wait", "1s", "--concurrency", "1", "--max-batch-size", "1", "--shutdown-grace", "1s"}
	workers := startPool(t, 1, ns.ClientURL(), tiny, args...)
	advisories, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + schemas.JobsStream + "." + worker.ConsumerName("demo"))
	if err != nil {
		t.Fatal(err)
	}
	// A job that keeps the worker busy for seconds: the process dies under
	// it. Its passages differ: the pair cache scores identical pairs of a
	// job once, and a job of one repeated passage ends in a moment, before
	// the test sees it in flight.
	job := &schemas.Job{ID: "crasher-1", Query: "what takes long"}
	for i := range 1500 {
		job.Candidates = append(job.Candidates, schemas.Candidate{ID: fmt.Sprint(i), Text: strings.Repeat(fmt.Sprintf("slow passage %d text ", i), 40)})
	}
	l := newLoad()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.submitHealthy(ctx, t, js, job); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, schemas.JobsStream, worker.ConsumerName("demo"))
	if err != nil {
		t.Fatal(err)
	}
	info := func() *jetstream.ConsumerInfo {
		ci, err := cons.Info(ctx)
		if err != nil {
			return &jetstream.ConsumerInfo{}
		}
		return ci
	}
	for delivery := uint64(1); delivery <= 2; delivery++ {
		mustWait(t, 30*time.Second, fmt.Sprintf("delivery %d in flight", delivery), func() bool {
			ci := info()
			return ci.Delivered.Consumer >= delivery && ci.NumAckPending == 1
		})
		if err := workers.killAndRestart(0); err != nil { // the job "crashes" the worker
			t.Fatal(err)
		}
	}
	adv, err := advisories.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no MAX_DELIVERIES advisory: %v", err)
	}
	// The fleet is healthy (the restarted worker runs); give it time to
	// answer the job the way the contract says.
	answered := waitFor(5*time.Second, func() bool {
		return streamMsgs(js, schemas.ResultsStream) >= 1 && streamMsgs(js, schemas.DeadStream) >= 1
	})
	r := verify(t, js, "max-deliver-by-crashes", l)
	r.add("max_deliver=2 still_queued=%d", streamMsgs(js, schemas.JobsStream))
	fmt.Println(r.line())
	if !answered || r.lost > 0 {
		t.Errorf("worker/worker.go: a job whose %d deliveries all ended in a worker crash got no result and no dead letter "+
			"(results %d, dead letters %d, still in %s: %d); the server announced it: %s",
			2, r.results, r.dead, schemas.JobsStream, streamMsgs(js, schemas.JobsStream), adv.Data)
	}
}
