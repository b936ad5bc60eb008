//go:build soak

// The soak is built with -tags soak (make soak, make test-faults): a chaos
// run of minutes on a 3-node cluster, not part of make test's suite.

package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/internal/natsembed"
	iproc "github.com/rerank/rerank/internal/proc"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// soakDuration is how long TestSoak runs its chaos: RERANK_SOAK (a Go
// duration; `make soak` sets 20m), else 3 min with RERANK_FAULTS=full
// (make test-faults), else 30 s.
func soakDuration(t testing.TB) time.Duration {
	if v := os.Getenv("RERANK_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("RERANK_SOAK=%q: %v", v, err)
		}
		return d
	}
	return time.Duration(size(30, 180)) * time.Second
}

// soakGateway is a `rerank gateway` process that can be killed and
// started again on the same address.
type soakGateway struct {
	t    testing.TB
	url  string // http://127.0.0.1:PORT
	addr string
	nats string
	mu   sync.Mutex
	p    *iproc.Proc
	runs int
}

func (g *soakGateway) start() error {
	bin, _, _ := assets(g.t)
	g.mu.Lock()
	g.runs++
	n := g.runs
	g.mu.Unlock()
	p, err := iproc.Start(iproc.Spec{Name: "gateway", Path: bin,
		Args: []string{"gateway", "--nats-url", g.nats, "--http", g.addr, "--replicas", "3", "--log-format", "text",
			"--gateway-read-timeout", "5s"},
		Log: filepath.Join(buildDir, "logs", sanitize(g.t.Name()), fmt.Sprintf("gateway.%d.log", n))})
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.p = p
	g.mu.Unlock()
	if !waitFor(90*time.Second, func() bool {
		resp, err := http.Get(g.url + "/readyz")
		if err != nil {
			return p.Exited()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) || p.Exited() {
		return fmt.Errorf("the gateway was not ready:\n%s", tail(p.Log(), 20))
	}
	return nil
}

func (g *soakGateway) proc() *iproc.Proc {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.p
}

// peaks samples the resident memory of a set of processes and keeps the
// highest (VmRSS, kB) seen of each kind.
type peaks struct {
	mu   sync.Mutex
	kbOf map[string]int64
}

func (p *peaks) sample(kind string, pr *iproc.Proc) {
	if pr == nil || pr.Exited() {
		return
	}
	kb := max(pr.Status("VmHWM"), pr.Status("VmRSS"))
	p.mu.Lock()
	p.kbOf[kind] = max(p.kbOf[kind], kb)
	p.mu.Unlock()
}

func (p *peaks) mib(kind string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kbOf[kind] / 1024
}

// soakStats are the soak's counters beyond the load's.
type soakStats struct {
	mu             sync.Mutex
	latencies      []float64 // interactive jobs over NATS, submit to result, ms
	http           atomic.Int64
	httpRetries    atomic.Int64
	hostileHTTP    atomic.Int64
	queueFull      atomic.Int64 // bulk jobs refused by a full lane (not accepted)
	interRefused   atomic.Int64 // interactive jobs refused as queue_full: a broken lane bound
	staleAnswers   atomic.Int64
	workerKills    atomic.Int64
	serverRestarts atomic.Int64
	gatewayKills   atomic.Int64
	problems       []string
}

func (s *soakStats) problem(format string, a ...any) {
	s.mu.Lock()
	s.problems = append(s.problems, fmt.Sprintf(format, a...))
	s.mu.Unlock()
}

// TestSoak: mixed chaos on a 3-node cluster (nats-server processes) with 3
// workers and a gateway, for soakDuration: random worker SIGKILLs, server
// restarts and gateway kills, while interactive jobs arrive over NATS and
// HTTP, a bulk backfill fills its lane to the limit beside them, and
// hostile jobs and hostile HTTP requests come in. Every accepted job is
// answered exactly once and with the answer to its own job message (ids
// are reused after the dedup window in long soaks); the full bulk lane
// never refuses an interactive job. It prints one line:
//
//	soak: minutes=… jobs=… http=… lost=0 duplicates_visible=0 stale_answers=0 worker_peak_rss_mib=… gateway_peak_rss_mib=… interactive_p99_ms=…
func TestSoak(t *testing.T) {
	defer dumpLogs(t)
	_, tiny, _ := assets(t)
	soak := soakDuration(t)
	rng := rand.New(rand.NewPCG(seed(t), 1))
	c := newProcessCluster(t)
	url := c.url()
	nc, js := connect(t, url)
	waitJetStream(t, js)
	const laneLimit = 150
	wcfg := worker.Config{Replicas: 3, JobsMaxMsgs: laneLimit}
	mustWait(t, 60*time.Second, "streams provisioned", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := worker.Provision(ctx, js, []string{"demo"}, wcfg)
		if err != nil {
			t.Logf("provisioning: %v", err)
		}
		return err == nil
	})
	workers := startPool(t, 3, url, tiny, "--replicas", "3", "--jobs-max-msgs", fmt.Sprint(laneLimit),
		"--ack-wait", "2s", "--shutdown-grace", "2s", "--concurrency", "4")
	port, err := natsembed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	gw := &soakGateway{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), url: fmt.Sprintf("http://127.0.0.1:%d", port), nats: url}
	if err := gw.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p := gw.proc(); p != nil && !p.Exited() {
			p.Stop(30 * time.Second)
		}
	})

	l := newLoad()
	st := &soakStats{}
	pk := &peaks{kbOf: map[string]int64{}}
	acks := sync.Map{} // job id → "stream/seq" of its latest accepted message
	ctx, stop := context.WithTimeout(context.Background(), soak)
	defer stop()
	var wg sync.WaitGroup
	spawn := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	every := func(d time.Duration, f func(i int)) {
		spawn(func() {
			tk := time.NewTicker(d)
			defer tk.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
					f(i)
				}
			}
		})
	}
	// Interactive jobs over NATS, through the client: 8 at a time, each
	// waiting for its own result.
	cl, err := client.New(nc, client.Options{Model: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	var seqID atomic.Int64
	for lane := range 8 {
		lrng := rand.New(rand.NewPCG(rng.Uint64(), uint64(lane)))
		spawn(func() {
			for ctx.Err() == nil {
				j := healthyJob(lrng, fmt.Sprintf("live-%d", seqID.Add(1)))
				start := time.Now()
				p, err := submitRetrying(ctx, cl, j)
				if err != nil {
					if errors.Is(err, client.ErrQueueFull) {
						st.interRefused.Add(1)
						st.problem("interactive job %s refused as queue_full while only the bulk lane was full: %v", j.ID, err)
					}
					l.mu.Lock()
					l.maybe[j.ID] = true // the soak ended during its publish
					l.mu.Unlock()
					continue
				}
				l.mu.Lock()
				l.healthy[j.ID] = len(j.Candidates)
				l.mu.Unlock()
				wctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				res, err := p.Result(wctx)
				cancel()
				if err != nil {
					st.problem("interactive job %s: no result: %v", j.ID, err)
					continue
				}
				if len(res.Results) != len(j.Candidates) {
					st.problem("interactive job %s: %d of %d ranked", j.ID, len(res.Results), len(j.Candidates))
				}
				st.mu.Lock()
				st.latencies = append(st.latencies, float64(time.Since(start).Microseconds())/1000)
				st.mu.Unlock()
			}
		})
	}
	// A bulk backfill: bursts that fill the bulk lane to its limit. The
	// refused jobs were never accepted; the accepted ones are all answered.
	brng := rand.New(rand.NewPCG(rng.Uint64(), 9))
	every(5*time.Second, func(b int) {
		for i := range 2 * laneLimit {
			j := healthyJob(brng, fmt.Sprintf("bulk-%d-%d", b, i))
			m := nats.NewMsg(schemas.LaneSubject("demo", schemas.Bulk))
			m.Data = encode(t, j)
			m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeMsgpack)
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			ack, err := js.PublishMsg(pctx, m, jetstream.WithMsgID(j.ID))
			cancel()
			var apiErr *jetstream.APIError
			switch {
			case err == nil:
				l.mu.Lock()
				l.healthy[j.ID] = len(j.Candidates)
				l.mu.Unlock()
				acks.Store(j.ID, fmt.Sprintf("%s/%d", ack.Stream, ack.Sequence))
			case errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum messages"):
				st.queueFull.Add(1)
			default:
				// Lost acknowledgement (a server restarting): the job may be
				// stored. Publish again under the same id until it is
				// acknowledged, as every producer must.
				if err := l.publishTo(ctx, js, m.Subject, j.ID, schemas.ContentTypeMsgpack, m.Data); err != nil {
					l.mu.Lock()
					l.maybe[j.ID] = true // the soak ended during its publish
					l.mu.Unlock()
					if ctx.Err() == nil && !strings.Contains(err.Error(), "maximum messages") {
						st.problem("bulk job %s: %v", j.ID, err)
					}
					continue
				}
				l.mu.Lock()
				l.healthy[j.ID] = len(j.Candidates)
				l.mu.Unlock()
			}
		}
	})
	// Hostile jobs over NATS (not the ones the server refuses at the door).
	hrng := rand.New(rand.NewPCG(rng.Uint64(), 11))
	every(1500*time.Millisecond, func(i int) {
		h := hostileKinds[i%len(hostileKinds)]
		if h.code == "" {
			return
		}
		id := fmt.Sprintf("hostile-%d-%s", i, h.kind)
		data := h.make(hrng, id)
		if err := l.publish(ctx, js, id, h.contentType, data); err != nil {
			l.mu.Lock()
			l.maybe[id] = true // the soak ended during its publish
			l.mu.Unlock()
			return
		}
		l.mu.Lock()
		l.hostile[id], l.raw[id] = h.code, data
		l.mu.Unlock()
	})
	// Interactive jobs over HTTP: retried with the same Idempotency-Key
	// until answered, whatever the gateway, NATS or the workers go through.
	hc := &http.Client{Timeout: 2 * time.Minute}
	for lane := range 2 {
		wrng := rand.New(rand.NewPCG(rng.Uint64(), uint64(20+lane)))
		spawn(func() {
			for ctx.Err() == nil {
				j := healthyJob(wrng, fmt.Sprintf("http-%d", seqID.Add(1)))
				if n, err := postRetrying(ctx, hc, gw.url, j, st); err != nil {
					if n {
						st.problem("HTTP job %s: %v", j.ID, err)
					}
					continue
				} else if n {
					l.mu.Lock()
					l.healthy[j.ID] = len(j.Candidates)
					l.mu.Unlock()
					st.http.Add(1)
				}
			}
		})
	}
	// Hostile HTTP requests: each answered 4xx (or 503 during an outage),
	// never a 500, and never costing the gateway its memory.
	every(time.Second, func(i int) {
		if status := hostileRequest(gw.addr, i); status >= 500 && status != http.StatusServiceUnavailable && status != http.StatusBadGateway {
			st.problem("hostile HTTP request %d answered %d", i%len(hostileHTTP), status)
		}
		st.hostileHTTP.Add(1)
	})
	// Reused ids (long soaks): a job id reused after the 2-minute dedup
	// window is a new job, whose answer must be its own.
	if soak > 4*time.Minute {
		every(20*time.Second, func(i int) {
			var id string
			acks.Range(func(k, v any) bool { id = k.(string); return false })
			if id == "" || !strings.HasPrefix(id, "bulk-") {
				return
			}
			// Only an id whose first job is answered: two messages of one id
			// waiting at once would leave the order of their results open.
			if s, err := js.Stream(ctx, schemas.ResultsStream); err != nil {
				return
			} else if _, err := s.GetLastMsgForSubject(ctx, schemas.ResultSubject(id)); err != nil {
				return
			}
			j := healthyJob(rng, id)
			j.Candidates = j.Candidates[:3]
			m := nats.NewMsg(schemas.LaneSubject("demo", schemas.Interactive))
			m.Data = encode(t, j)
			m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeMsgpack)
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			ack, err := js.PublishMsg(pctx, m, jetstream.WithMsgID(id))
			cancel()
			if err != nil || ack.Duplicate {
				return
			}
			acks.Delete(id) // no longer the first use
			l.mu.Lock()
			l.healthy[id] = 3
			l.mu.Unlock()
			acks.Store("reused:"+id, fmt.Sprintf("%s/%d", ack.Stream, ack.Sequence))
		})
	}
	// Memory.
	every(500*time.Millisecond, func(int) {
		workers.mu.Lock()
		procs := slices.Clone(workers.procs)
		workers.mu.Unlock()
		for _, p := range procs {
			if p != nil {
				pk.sample("worker", p.Proc)
			}
		}
		pk.sample("gateway", gw.proc())
	})
	// Chaos: one fault at a time, each given time to heal.
	crng := rand.New(rand.NewPCG(rng.Uint64(), 13))
	spawn(func() {
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(3000+crng.IntN(4000)) * time.Millisecond):
			}
			switch k := crng.IntN(3); k {
			case 0:
				if err := workers.killAndRestart(crng.IntN(len(workers.procs))); err != nil {
					st.problem("restarting a worker: %v", err)
				}
				st.workerKills.Add(1)
			case 1:
				i := crng.IntN(3)
				c.down(i)
				time.Sleep(2 * time.Second) // a node away for a while
				c.up(i)
				st.serverRestarts.Add(1)
			case 2:
				if p := gw.proc(); p != nil {
					p.Kill()
				}
				if err := gw.start(); err != nil {
					st.problem("restarting the gateway: %v", err)
				}
				st.gatewayKills.Add(1)
			}
		}
	})
	wg.Wait()

	// Every accepted job answered once, each with its own message's answer.
	if !waitDone(js, l.submitted(), 5*time.Minute) {
		t.Errorf("not every accepted job was answered within 5 minutes")
	}
	r := verify(t, js, "soak", l)
	acks.Range(func(k, v any) bool {
		id := strings.TrimPrefix(k.(string), "reused:")
		s, err := js.Stream(context.Background(), schemas.ResultsStream)
		if err != nil {
			return true
		}
		m, err := s.GetLastMsgForSubject(context.Background(), schemas.ResultSubject(id))
		if err != nil {
			return true // verify counts it lost
		}
		f, _ := schemas.ParseContentType(m.Header.Get(schemas.HeaderContentType))
		res, err := schemas.DecodeResult(m.Data, f)
		if err == nil && fmt.Sprintf("%s/%d", res.JobStream, res.JobSeq) != v.(string) {
			st.staleAnswers.Add(1)
			st.problem("job %s: the stored answer is for message %s/%d, the job is %s", id, res.JobStream, res.JobSeq, v)
		}
		return true
	})
	// A reused id has two results stored, one per message: not a duplicate.
	acks.Range(func(k, _ any) bool {
		if id, ok := strings.CutPrefix(k.(string), "reused:"); ok {
			want := fmt.Sprintf("job %s has 2 stored results", id)
			if i := slices.Index(r.problems, want); i >= 0 {
				r.problems = slices.Delete(r.problems, i, i+1)
				r.duplicates--
			}
		}
		return true
	})
	st.mu.Lock()
	p99 := 0.0
	if len(st.latencies) > 0 {
		slices.Sort(st.latencies)
		p99 = st.latencies[min(len(st.latencies)-1, int(0.99*float64(len(st.latencies))))]
	}
	r.problems = append(r.problems, st.problems...)
	st.mu.Unlock()
	fmt.Printf("soak: minutes=%.1f jobs=%d http=%d lost=%d duplicates_visible=%d stale_answers=%d worker_peak_rss_mib=%d gateway_peak_rss_mib=%d interactive_p99_ms=%.0f"+
		" hostile=%d hostile_http=%d bulk_refused_full=%d interactive_refused=%d worker_kills=%d server_restarts=%d gateway_kills=%d http_retries=%d\n",
		soak.Minutes(), r.submitted, st.http.Load(), r.lost, r.duplicates, st.staleAnswers.Load(), pk.mib("worker"), pk.mib("gateway"), p99,
		len(l.hostile), st.hostileHTTP.Load(), st.queueFull.Load(), st.interRefused.Load(),
		st.workerKills.Load(), st.serverRestarts.Load(), st.gatewayKills.Load(), st.httpRetries.Load())
	if r.deadMissing > 0 { // the dead-letter stream's own account, for the post-mortem
		if ds, err := js.Stream(context.Background(), schemas.DeadStream); err == nil {
			if info, err := ds.Info(context.Background()); err == nil {
				fmt.Printf("soak: %s first=%d last=%d msgs=%d deleted=%d bytes=%d cluster=%+v\n", schemas.DeadStream,
					info.State.FirstSeq, info.State.LastSeq, info.State.Msgs, info.State.NumDeleted, info.State.Bytes, info.Cluster)
			}
		}
	}
	if len(r.problems) > 20 { // finish shows 20: all of them on stdout, for the post-mortem
		for _, p := range r.problems {
			fmt.Println("soak problem:", p)
		}
	}
	finish(t, r)
	if st.workerKills.Load()+st.serverRestarts.Load()+st.gatewayKills.Load() == 0 {
		t.Error("no fault was injected")
	}
	if st.queueFull.Load() == 0 {
		t.Error("the bulk lane never filled up: the lane bound was not exercised")
	}
	if mib := pk.mib("gateway"); mib > 256 {
		t.Errorf("the gateway's peak RSS was %d MiB under hostile requests", mib)
	}
}

// submitRetrying submits j until JetStream accepts it (the same id each
// time: a retry after a lost acknowledgement is a duplicate), or ctx ends.
func submitRetrying(ctx context.Context, cl *client.Client, j *schemas.Job) (*client.Pending, error) {
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		p, err := cl.SubmitAsync(pctx, j)
		cancel()
		if err == nil || errors.Is(err, client.ErrQueueFull) || ctx.Err() != nil {
			return p, err
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// postRetrying sends j to the gateway's Cohere endpoint with its id as the
// Idempotency-Key, retrying what an outage answers (503, 504, a refused or
// cut connection) with the same key. accepted reports whether the job may
// have been queued (any answer but a refusal before queueing): then it must
// be answered.
func postRetrying(ctx context.Context, hc *http.Client, url string, j *schemas.Job, st *soakStats) (accepted bool, err error) {
	docs := make([]map[string]any, len(j.Candidates))
	for i, c := range j.Candidates {
		docs[i] = map[string]any{"text": c.Text, "bm25": *c.BM25, "id": c.ID}
	}
	body, _ := json.Marshal(map[string]any{"model": "demo", "query": j.Query, "documents": docs, "timeout": 60})
	giveUp := time.Now().Add(10 * time.Minute)
	for attempt := 0; ; attempt++ {
		if time.Now().After(giveUp) {
			return accepted, errors.New("no answer within 10 minutes of retries")
		}
		if attempt > 0 {
			st.httpRetries.Add(1)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				if accepted {
					// Queued by an earlier attempt: wait for it past the
					// soak's end, as a client would.
					ctx = context.Background()
					continue
				}
				return false, ctx.Err()
			}
		}
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/rerank", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", j.ID)
		resp, err := hc.Do(req)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "connection") {
				return accepted, err
			}
			accepted = accepted || !strings.Contains(err.Error(), "refused")
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			var out struct {
				Results []struct {
					Index int `json:"index"`
				} `json:"results"`
			}
			if err := json.Unmarshal(b, &out); err != nil || len(out.Results) != len(j.Candidates) {
				return true, fmt.Errorf("200 with %d of %d results (%v): %s", len(out.Results), len(j.Candidates), err, truncateBody(b))
			}
			return true, nil
		case http.StatusGatewayTimeout:
			accepted = true // queued: the same key waits for the same job
		case http.StatusServiceUnavailable, http.StatusBadGateway:
			// Not queued (or not known to be): retried with the same key.
		default:
			return accepted, fmt.Errorf("answered %d: %s", resp.StatusCode, truncateBody(b))
		}
	}
}

func truncateBody(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// hostileHTTP are the hostile requests, cycled: each as raw bytes on a
// fresh connection. The answer's status is returned (0: none, the
// connection closed).
var hostileHTTP = []func() (head string, body []byte, stall bool){
	func() (string, []byte, bool) { // millions of empty documents
		var b bytes.Buffer
		b.WriteString(`{"model":"demo","query":"q","documents":[`)
		for i := range 1 << 20 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`""`)
		}
		b.WriteString(`]}`)
		return "POST /v1/rerank", b.Bytes(), false
	},
	func() (string, []byte, bool) { // over the body limit
		return "POST /rerank", bytes.Repeat([]byte("a"), 17<<20), false
	},
	func() (string, []byte, bool) { return "POST /v1/rerank", []byte(`{"query":`), false },
	func() (string, []byte, bool) {
		return "POST /v1/jobs", []byte(`{"id":"a b","query":"q","candidates":[]}`), false
	},
	func() (string, []byte, bool) { // a body announced and never sent
		return "POST /v1/rerank", []byte(`{"query":"q"`), true
	},
	func() (string, []byte, bool) { return "GET /v1/jobs/%2e%2e", nil, false },
}

func hostileRequest(addr string, i int) int {
	head, body, stall := hostileHTTP[i%len(hostileHTTP)]()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(90 * time.Second))
	length := len(body)
	if stall {
		length += 100
	}
	fmt.Fprintf(conn, "%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", head, addr, length)
	_, _ = conn.Write(body) // the gateway may answer (413) and close before reading it all
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
