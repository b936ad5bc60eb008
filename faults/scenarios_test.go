package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// seed returns the scenario's random seed: RERANK_FAULTS_SEED, else the clock.
func seed(t testing.TB) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("RERANK_FAULTS_SEED"); v != "" {
		s, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (RERANK_FAULTS_SEED=%d reproduces the jobs and the choice of victims)", s, s)
	return s
}

// pool is a set of named worker processes that can be killed and restarted.
type pool struct {
	t      testing.TB
	mu     sync.Mutex
	procs  []*proc
	url    string
	model  string
	args   []string
	starts int
}

func startPool(t testing.TB, n int, url, model string, args ...string) *pool {
	t.Helper()
	p := &pool{t: t, url: url, model: model, args: args, procs: make([]*proc, n)}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); p.procs[i], errs[i] = launch(t, fmt.Sprintf("w%d", i+1), url, model, args...) }()
	}
	wg.Wait()
	t.Cleanup(p.stopAll)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// restart kills worker i with SIGKILL and starts it again.
func (p *pool) killAndRestart(i int) error {
	p.mu.Lock()
	old := p.procs[i]
	p.mu.Unlock()
	old.kill()
	np, err := launch(p.t, old.name, p.url, p.model, p.args...)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.procs[i] = np
	p.starts++
	p.mu.Unlock()
	return nil
}

func (p *pool) stopAll() {
	p.mu.Lock()
	procs := append([]*proc(nil), p.procs...)
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, pr := range procs {
		if pr != nil {
			wg.Add(1)
			go func() { defer wg.Done(); pr.stop(p.t) }()
		}
	}
	wg.Wait()
}

// 1. Three workers; a random one is killed with SIGKILL every few seconds
// during the load and started again. Jobs it held come back after AckWait;
// every job ends with exactly one stored result.
func TestWorkerSIGKILL(t *testing.T) {
	defer dumpLogs(t)
	_, tiny, _ := assets(t)
	rng := rand.New(rand.NewPCG(seed(t), 1))
	ns := startNATS(t, natsembed.Options{})
	_, js := connect(t, ns.ClientURL())
	workers := startPool(t, 3, ns.ClientURL(), tiny, "--ack-wait", "2s", "--shutdown-grace", "2s", "--concurrency", "4", "--log-level", "debug")

	// The pool answers about 1,000 small jobs/s on 2 cores, so a steady
	// trickle would leave nothing in flight to kill. The load comes in
	// bursts instead, and every other burst a random worker is killed right
	// after the burst is published, with its share of the burst in flight.
	n := size(600, 2000)
	const burst = 100
	interval := time.Second
	killEvery := 2 // bursts
	l := newLoad()
	killNow := make(chan struct{}, 1)
	killerDone := make(chan error, 1)
	kills := 0
	krng := rand.New(rand.NewPCG(rng.Uint64(), 2)) // the victims; rng stays with the publisher
	go func() {
		for range killNow {
			if err := workers.killAndRestart(krng.IntN(len(workers.procs))); err != nil {
				killerDone <- err
				for range killNow {
				}
				return
			}
			kills++
		}
		killerDone <- nil
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := paced(ctx, n/burst, 1/interval.Seconds(), func(b int) error {
		for i := range burst {
			if err := l.submitHealthy(ctx, t, js, healthyJob(rng, fmt.Sprintf("kill-%d", b*burst+i))); err != nil {
				return err
			}
		}
		if b%killEvery == killEvery-1 {
			select {
			case killNow <- struct{}{}:
			default: // the last victim is still restarting
			}
		}
		return nil
	})
	close(killNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-killerDone; err != nil {
		t.Fatal(err)
	}
	if !waitDone(js, n, 3*time.Minute) {
		t.Errorf("not every job was answered within 3 minutes")
	}
	r := verify(t, js, "worker-sigkill", l)
	r.add("kills=%d redelivered=%d max_attempt=%d", kills, r.redelivered, r.maxAttempts)
	finish(t, r)
	if kills == 0 {
		t.Error("no worker was killed")
	}
}

// 2. The NATS server (file storage) stops and starts again mid-load, on
// the same port and store; workers and the submitter reconnect.
func TestServerRestart(t *testing.T) {
	defer dumpLogs(t)
	_, tiny, _ := assets(t)
	rng := rand.New(rand.NewPCG(seed(t), 1))
	port := freePort(t)
	store := t.TempDir()
	opts := natsembed.Options{Port: port, StoreDir: store, Name: "restarting"}
	ns := startNATS(t, opts)
	url := ns.ClientURL()
	_, js := connect(t, url)
	startPool(t, 2, url, tiny, "--ack-wait", "2s", "--shutdown-grace", "2s", "--concurrency", "4")

	n := size(300, 2000)
	rate := float64(size(40, 80))
	restarts := size(1, 2)
	down := 3 * time.Second
	l := newLoad()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sub := l.submitPaced(ctx, t, js, rng, n, rate, "restart")
	progress := sub.progress
	var downtimes []string
	for k := range restarts {
		at := n * (k + 1) / (restarts + 1)
		if !waitFor(2*time.Minute, func() bool { return progress() >= at }) {
			t.Fatalf("publisher stuck at %d of %d", progress(), n)
		}
		before := streamMsgs(js, schemas.ResultsStream)
		ns.Stop()
		stopped := time.Now()
		<-time.After(down) // the outage itself, not a synchronization
		ns = startNATS(t, opts)
		downtimes = append(downtimes, time.Since(stopped).Round(100*time.Millisecond).String())
		t.Logf("server restart %d at job %d (%d results stored before), down %s", k+1, at, before, downtimes[k])
	}
	if err := <-sub.done; err != nil {
		t.Fatal(err)
	}
	if !waitDone(js, n, 3*time.Minute) {
		t.Errorf("not every job was answered within 3 minutes")
	}
	r := verify(t, js, "server-restart", l)
	r.add("restarts=%d downtime=%s publish_retries=%d redelivered=%d", restarts, strings.Join(downtimes, ","), l.retries.Load(), r.redelivered)
	finish(t, r)
}

// cluster is a 3-node JetStream cluster whose nodes can be taken down and
// brought back.
type cluster interface {
	names() []string
	url() string
	down(i int) // stop or kill node i
	up(i int)   // start node i again, same name, ports and store
}

// embeddedCluster runs the nodes in the test process (natsembed). Stopping
// a node is a graceful shutdown: the server hands its raft leaderships over
// before it goes.
type embeddedCluster struct {
	t       testing.TB
	opts    []natsembed.Options
	servers []*natsembed.Server
}

func newEmbeddedCluster(t testing.TB) *embeddedCluster {
	c := &embeddedCluster{t: t, opts: make([]natsembed.Options, 3), servers: make([]*natsembed.Server, 3)}
	var routes []string
	for i := range c.opts {
		c.opts[i] = natsembed.Options{Name: fmt.Sprintf("n%d", i+1), Port: freePort(t), StoreDir: t.TempDir(),
			ClusterName: "rerank-faults", ClusterPort: freePort(t), Logging: os.Getenv("RERANK_FAULTS_NATS_LOG") != ""}
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", c.opts[i].ClusterPort))
	}
	var wg sync.WaitGroup
	for i := range c.opts {
		c.opts[i].Routes = routes
		wg.Add(1)
		go func() { defer wg.Done(); c.up(i) }()
	}
	wg.Wait()
	return c
}

func (c *embeddedCluster) names() []string {
	var n []string
	for _, o := range c.opts {
		n = append(n, o.Name)
	}
	return n
}

func (c *embeddedCluster) url() string {
	var u []string
	for _, o := range c.opts {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(u, ",")
}

func (c *embeddedCluster) down(i int) { c.servers[i].Stop() }
func (c *embeddedCluster) up(i int)   { c.servers[i] = startNATS(c.t, c.opts[i]) }

// 3. A 3-node JetStream cluster with R3 streams: the node leading
// RERANK_JOBS is stopped mid-load and brought back. In-process nodes, so
// the stop is graceful (leadership handed over); TestClusterLeaderCrash
// kills a nats-server process instead.
func TestClusterLeaderLoss(t *testing.T) {
	defer dumpLogs(t)
	leaderLoss(t, "cluster-leader-loss", newEmbeddedCluster(t))
}

// 3b. The same with the stream leader killed: three nats-server processes
// (built from the nats-server module this project already depends on), the
// leader of RERANK_JOBS gets SIGKILL — no leadership hand-over, the
// followers must notice and elect — and is started again.
func TestClusterLeaderCrash(t *testing.T) {
	defer dumpLogs(t)
	leaderLoss(t, "cluster-leader-crash", newProcessCluster(t))
}

func leaderLoss(t *testing.T, name string, c cluster) {
	_, tiny, _ := assets(t)
	rng := rand.New(rand.NewPCG(seed(t), 1))
	url := c.url()
	_, js := connect(t, url)
	waitJetStream(t, js)
	// Provision the R3 streams here, once, before the workers start, as ops
	// would (TestConcurrentProvisioningOnFreshCluster covers workers doing it).
	for _, sc := range worker.StreamConfigs(3) {
		mustWait(t, 60*time.Second, "stream "+sc.Name+" created", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := js.CreateOrUpdateStream(ctx, sc)
			if err != nil {
				t.Logf("creating %s: %v", sc.Name, err)
			}
			return err == nil
		})
	}
	startPool(t, 2, url, tiny, "--replicas", "3", "--ack-wait", "2s", "--shutdown-grace", "2s", "--concurrency", "4")
	streamInfo := func(stream string) *jetstream.StreamInfo {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return nil
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return nil
		}
		return info
	}
	leaderOf := func(stream string) string {
		if info := streamInfo(stream); info != nil {
			return info.Cluster.Leader
		}
		return ""
	}
	mustWait(t, 30*time.Second, "RERANK_JOBS leader", func() bool { return leaderOf(schemas.JobsStream) != "" })

	n := size(300, 2000)
	rate := float64(size(30, 60))
	l := newLoad()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sub := l.submitPaced(ctx, t, js, rng, n, rate, name)
	progress := sub.progress
	if !waitFor(2*time.Minute, func() bool { return progress() >= n/3 }) {
		t.Fatalf("publisher stuck at %d of %d", progress(), n)
	}
	old := leaderOf(schemas.JobsStream)
	resultsLeader := leaderOf(schemas.ResultsStream)
	victim := slices.Index(c.names(), old)
	if victim < 0 {
		t.Fatalf("no node named %q leads %s", old, schemas.JobsStream)
	}
	c.down(victim)
	stopped := time.Now()
	newLeader := ""
	mustWait(t, 60*time.Second, "a new RERANK_JOBS leader", func() bool {
		newLeader = leaderOf(schemas.JobsStream)
		return newLeader != "" && newLeader != old
	})
	election := time.Since(stopped).Round(100 * time.Millisecond)
	t.Logf("took down %s (leader of %s; %s led by %s) at job %d; new leader %s after %s", old, schemas.JobsStream, schemas.ResultsStream, resultsLeader, progress(), newLeader, election)
	// Bring it back once the load has moved on under the new leader.
	waitFor(time.Minute, func() bool { return progress() >= 2*n/3 })
	c.up(victim)
	mustWait(t, 60*time.Second, "the old leader to rejoin as a current replica", func() bool {
		info := streamInfo(schemas.JobsStream)
		if info == nil {
			return false
		}
		for _, p := range info.Cluster.Replicas {
			if p.Name == old && p.Current && !p.Offline {
				return true
			}
		}
		return false
	})
	if err := <-sub.done; err != nil {
		t.Fatal(err)
	}
	if !waitDone(js, n, 3*time.Minute) {
		t.Errorf("not every job was answered within 3 minutes")
	}
	r := verify(t, js, name, l)
	r.add("leader_down=%s new_leader=%s election=%s results_leader=%s publish_retries=%d redelivered=%d",
		old, newLeader, election, resultsLeader, l.retries.Load(), r.redelivered)
	finish(t, r)
}

// 4. Inference slower than AckWait: a MiniLM-L12-shaped model scoring one
// pair per batch, AckWait 1 s, jobs of 24 long passages (2 to 4 s of
// inference each on one thread) among small ones. InProgress heartbeats
// (every AckWait/3) keep every job with the worker that took it.
func TestSlowModel(t *testing.T) {
	defer dumpLogs(t)
	assets(t)
	l12 := l12Model(t)
	rng := rand.New(rand.NewPCG(seed(t), 1))
	ns := startNATS(t, natsembed.Options{})
	_, js := connect(t, ns.ClientURL())
	const ackWait = time.Second
	workers := startPool(t, 2, ns.ClientURL(), l12, "--ack-wait", ackWait.String(), "--concurrency", "2",
		"--max-batch-size", "1", "--log-level", "debug", "--shutdown-grace", "30s")

	slow, fast := size(4, 20), size(12, 60)
	l := newLoad()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := range slow + fast {
		j := healthyJob(rng, fmt.Sprintf("slow-%d", i))
		if i%4 == 0 && i/4 < slow {
			j.ID = fmt.Sprintf("slow-%d-long", i)
			j.Candidates = j.Candidates[:0]
			for k := range 24 {
				j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprintf("d%d", k), Text: sentence(rng, 250)})
			}
		}
		if err := l.submitHealthy(ctx, t, js, j); err != nil {
			t.Fatal(err)
		}
	}
	n := l.submitted()
	if !waitDone(js, n, 4*time.Minute) {
		t.Errorf("not every job was answered within 4 minutes")
	}
	r := verify(t, js, "slow-model", l)

	// How long the jobs ran, from their results.
	over, maxMS := 0, 0.0
	err := readAll(js, schemas.ResultsStream, func(m storedMsg) {
		res, err := schemas.DecodeResult(m.data, schemas.Msgpack)
		if err != nil {
			return
		}
		if res.Timing.TotalMS > float64(ackWait.Milliseconds()) { // from pull to result, queue excluded
			over++
		}
		maxMS = max(maxMS, res.Timing.TotalMS)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Duplicate work: a job started more than once, per the workers' logs
	// ("job done" lines at debug level name the job and the attempt). The
	// line is logged after the ack, so after the result: wait for one per
	// job before counting.
	var starts map[string]int
	var explained []string
	readLogs := func() {
		starts, explained = map[string]int{}, nil
		for _, p := range workers.procs {
			for _, line := range strings.Split(p.log(), "\n") {
				if strings.Contains(line, `msg="job done"`) {
					if id := field(line, "job_id"); id != "" {
						starts[id]++
					}
				}
				if a := field(line, "attempt"); a != "" && a != "1" || strings.Contains(line, "heartbeat") {
					explained = append(explained, p.name+": "+line)
				}
			}
		}
	}
	waitFor(10*time.Second, func() bool { readLogs(); return len(starts) >= n })
	redeliveries := 0.0
	for _, p := range workers.procs {
		redeliveries += p.metric("rerank_redeliveries_total")
	}
	dupWork := 0
	for _, c := range starts {
		dupWork += c - 1
	}
	cons, err := js.Consumer(ctx, schemas.JobsStream, worker.ConsumerName("demo"))
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.add("ack_wait=%s over_ack_wait=%d max_job_ms=%.0f redeliveries=%.0f consumer_redelivered=%d duplicate_work=%d",
		ackWait, over, maxMS, redeliveries, ci.NumRedelivered, dupWork)
	finish(t, r)
	if over == 0 {
		t.Errorf("no job ran longer than AckWait %s: the scenario did not exercise the heartbeat", ackWait)
	}
	if redeliveries != 0 || r.redelivered != 0 || dupWork != 0 {
		t.Errorf("jobs slower than AckWait were redelivered (%v redeliveries, %d stored attempts > 1, %d duplicate runs); the logs say:\n%s",
			redeliveries, r.redelivered, dupWork, strings.Join(explained, "\n"))
	}
}

// field returns the value of key=value in a text log line.
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return strings.Trim(v, `"`)
}

// 6. Backpressure: the whole load is queued before any worker runs. The
// worker pulls only as many jobs as it has free slots, so its memory does
// not grow with the backlog; peak RSS (VmHWM) is reported.
func TestBackpressure(t *testing.T) {
	defer dumpLogs(t)
	_, tiny, _ := assets(t)
	rng := rand.New(rand.NewPCG(seed(t), 1))
	ns := startNATS(t, natsembed.Options{})
	_, js := connect(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, sc := range worker.StreamConfigs(1) {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	n := size(3000, 20000)
	l := newLoad()
	start := time.Now()
	for i := range n {
		j := healthyJob(rng, fmt.Sprintf("queued-%d", i))
		m := nats.NewMsg(schemas.JobSubject("demo"))
		m.Data = encode(t, j)
		m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeMsgpack)
		if _, err := js.PublishMsgAsync(m, jetstream.WithMsgID(j.ID)); err != nil {
			t.Fatal(err)
		}
		l.healthy[j.ID] = len(j.Candidates)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publish acknowledgements missing")
	}
	if got := streamMsgs(js, schemas.JobsStream); got != int64(n) {
		t.Fatalf("%d jobs queued, want %d", got, n)
	}
	t.Logf("%d jobs queued in %s", n, time.Since(start).Round(time.Millisecond))

	w := startWorker(t, "w1", ns.ClientURL(), tiny)
	start = time.Now()
	var rssAt10, rssMax int64
	done := waitFor(8*time.Minute, func() bool {
		rssMax = max(rssMax, w.procStatus("VmRSS"))
		left := streamMsgs(js, schemas.JobsStream)
		if rssAt10 == 0 && left >= 0 && left <= int64(n*9/10) {
			rssAt10 = w.procStatus("VmRSS")
		}
		return left == 0 && streamMsgs(js, schemas.ResultsStream) >= int64(n)
	})
	took := time.Since(start)
	hwm := w.procStatus("VmHWM")
	if !done {
		t.Errorf("not every job was answered within 8 minutes")
	}
	r := verify(t, js, "backpressure", l)
	r.add("queued_before_start=%d drain_s=%.1f jobs_per_s=%.0f rss_mib_at_10pct=%d peak_rss_mib=%d (VmHWM)",
		n, took.Seconds(), float64(n)/took.Seconds(), rssAt10/1024, hwm/1024)
	finish(t, r)
	// Bounded: an absolute ceiling, and no growth with the backlog once
	// the first tenth of it is done.
	const bound, growth = 512 << 10, 64 << 10 // kB
	if hwm > bound || rssAt10 > 0 && hwm > rssAt10+growth {
		t.Errorf("peak RSS %d MiB (%d MiB at 10%% of the backlog): over the %d MiB bound or grew more than %d MiB with the backlog",
			hwm/1024, rssAt10/1024, bound/1024, growth/1024)
	}
}
