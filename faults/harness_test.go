package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/internal/natsembed"
	iproc "github.com/rerank/rerank/internal/proc"
	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/internal/testfixture"
)

// --- sizes -------------------------------------------------------------------

// fullMode reports whether RERANK_FAULTS=full asks for the full loads; the
// default (and -short) is the CI form.
func fullMode() bool { return os.Getenv("RERANK_FAULTS") == "full" }

// size picks the CI or the full figure.
func size(ci, full int) int {
	if fullMode() {
		return full
	}
	return ci
}

// --- binary and models -------------------------------------------------------

var (
	// buildDir holds binaries, models and worker logs (testfixture.Dir).
	buildDir     string
	buildDirOnce sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	keep := os.Getenv("RERANK_FAULTS_KEEP") != ""
	if d := testfixture.Cleanup(keep); d != "" && keep {
		fmt.Fprintf(os.Stderr, "faults: binaries, models and worker logs kept in %s\n", d)
	}
	os.Exit(code)
}

// assets builds the rerank binary and the tiny model once per test run and
// returns them with the ONNX Runtime library.
func assets(t testing.TB) (bin, tiny, ort string) {
	t.Helper()
	ort = testenv.ORTLib(t)
	buildDirOnce.Do(func() { buildDir = testfixture.Dir(t) })
	return testfixture.Binary(t), testfixture.TinyModel(t), ort
}

// l12Model generates the MiniLM-L12-shaped random model (about 1 s, 133 MB).
func l12Model(t testing.TB) string {
	t.Helper()
	assets(t)
	return testfixture.L12Model(t)
}

// --- NATS servers ------------------------------------------------------------

func freePort(t testing.TB) int {
	t.Helper()
	p, err := natsembed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startNATS starts an in-process server on 127.0.0.1 with file storage; the
// caller stops it (a cleanup stops it too, once).
func startNATS(t testing.TB, o natsembed.Options) *natsembed.Server {
	t.Helper()
	if o.Port == 0 {
		o.Port = -1
	}
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	o.Host = "127.0.0.1"
	ns, err := natsembed.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ns.Running() {
			ns.Stop()
		}
	})
	return ns
}

// connect opens a test connection that reconnects forever.
func connect(t testing.TB, urls string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond), nats.Name("faults-test")}, opts...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// --- worker processes --------------------------------------------------------

// proc is one `rerank serve` process (one incarnation of a named worker),
// run by internal/proc.
type proc struct {
	*iproc.Proc
	name    string
	metrics string // http://127.0.0.1:PORT
}

var incarnations sync.Map // name → *int

// launch starts `rerank serve` against natsURL and waits until its worker
// runs. It returns an error instead of failing the test so that it can be
// called from a fault-injecting goroutine.
func launch(t testing.TB, name, natsURL, modelDir string, extra ...string) (*proc, error) {
	bin, _, ort := assets(t)
	mport, err := natsembed.FreePort()
	if err != nil {
		return nil, err
	}
	n, _ := incarnations.LoadOrStore(t.Name()+"/"+name, new(int))
	*n.(*int)++
	args := append([]string{"serve", "--nats-url", natsURL, "--model", "demo=" + modelDir, "--ort-lib", ort,
		"--log-format", "text", "--worker-id", fmt.Sprintf("%s.%d", name, *n.(*int)),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport), "--intra-op-threads", "1"}, extra...)
	p, err := iproc.Start(iproc.Spec{Name: "worker " + name, Path: bin, Args: args,
		Log:   filepath.Join(buildDir, "logs", sanitize(t.Name()), fmt.Sprintf("%s.%d.log", name, *n.(*int))),
		Ready: `msg="worker started"`, ReadyTimeout: 90 * time.Second})
	if err != nil {
		return nil, err
	}
	return &proc{Proc: p, name: name, metrics: fmt.Sprintf("http://127.0.0.1:%d", mport)}, nil
}

// startWorker launches a worker and stops it at the end of the test.
func startWorker(t testing.TB, name, natsURL, modelDir string, extra ...string) *proc {
	t.Helper()
	p, err := launch(t, name, natsURL, modelDir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proc) log() string  { return p.Log() }
func (p *proc) exited() bool { return p.Exited() }
func (p *proc) kill()        { p.Kill() }

// stop sends SIGTERM and checks for a clean exit; a process that died on
// its own is reported.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	if err := p.Stop(60 * time.Second); err != nil {
		t.Errorf("worker %s: %v:\n%s", p.name, err, tail(p.log(), 40))
	}
}

// procStatus reads a field of /proc/<pid>/status in kB (VmRSS, VmHWM).
func (p *proc) procStatus(field string) int64 { return p.Status(field) }

// metric returns the sum of the samples of a metric on the worker's
// /metrics (all label sets), or -1 when unreachable.
func (p *proc) metric(name string) float64 {
	resp, err := http.Get(p.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:\{[^}]*\})? ([0-9.e+-]+)$`)
	sum := 0.0
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	return sum
}

func (p *proc) healthy() bool {
	resp, err := http.Get(p.metrics + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func sanitize(s string) string {
	return strings.NewReplacer("/", "_", " ", "_").Replace(s)
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// dumpLogs shows the end of every worker log of the test when it failed.
func dumpLogs(t testing.TB) {
	t.Helper()
	if !t.Failed() {
		return
	}
	dir := filepath.Join(buildDir, "logs", sanitize(t.Name()))
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		t.Logf("--- %s (last 30 lines) ---\n%s", e.Name(), tail(string(b), 30))
	}
}

// --- polling -----------------------------------------------------------------

// waitFor polls cond until it holds or d passes; it reports whether it held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// mustWait fails the test when cond does not hold within d.
func mustWait(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitFor(d, cond) {
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}

// streamState returns a stream's message count (-1 when unavailable).
// waitJetStream waits up to a minute for JetStream to answer (a fresh
// cluster elects its meta leader first).
func waitJetStream(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	mustWait(t, 60*time.Second, "JetStream cluster ready", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
}

func streamMsgs(js jetstream.JetStream, name string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1
	}
	return int64(info.State.Msgs)
}

// storedMsg is a message read back from a stream.
type storedMsg struct {
	subject string
	header  nats.Header
	data    []byte
}

// readAll calls fn for every message of stream, in sequence order: through
// an ordered consumer, then message by message for any sequence the
// consumer skipped (with large messages under chaos it was seen to jump
// ahead, which read as dead letters missing when they were stored).
func readAll(js jetstream.JetStream, stream string, fn func(storedMsg)) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var first, last, next uint64 // the stream's range; next sequence to hand on
	seen := map[uint64]bool{}
	var lastErr error
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		done, err := func() (bool, error) {
			// Each API request gets its own deadline: right after a leader
			// change a cluster may leave one unanswered (as for worker
			// provisioning, RELIABILITY.md), and the next attempt succeeds.
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			defer rcancel()
			s, err := js.Stream(rctx, stream)
			if err != nil {
				return false, err
			}
			if last == 0 {
				info, err := s.Info(rctx)
				if err != nil {
					return false, err
				}
				if info.State.Msgs == 0 {
					return true, nil
				}
				first, last, next = info.State.FirstSeq, info.State.LastSeq, info.State.FirstSeq
			}
			if next <= last {
				cons, err := s.OrderedConsumer(rctx, jetstream.OrderedConsumerConfig{
					DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: next})
				if err != nil {
					return false, err
				}
				for next <= last && ctx.Err() == nil {
					batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
					if err != nil {
						return false, err
					}
					for m := range batch.Messages() {
						md, err := m.Metadata()
						if err != nil || md.Sequence.Stream < next || seen[md.Sequence.Stream] {
							continue
						}
						seen[md.Sequence.Stream] = true
						fn(storedMsg{m.Subject(), m.Headers(), m.Data()})
						next = md.Sequence.Stream + 1
					}
					if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
						return false, err
					}
				}
			}
			// What the consumer skipped, one message at a time (a deleted
			// sequence is not found: nothing to read).
			for seq := first; seq <= last && ctx.Err() == nil; seq++ {
				if seen[seq] {
					continue
				}
				m, err := s.GetMsg(ctx, seq)
				switch {
				case errors.Is(err, jetstream.ErrMsgNotFound):
				case err != nil:
					return false, err
				default:
					fn(storedMsg{m.Subject, m.Header, m.Data})
				}
				seen[seq] = true
			}
			return ctx.Err() == nil, ctx.Err()
		}()
		if done {
			return nil
		}
		lastErr = err
	}
	return fmt.Errorf("reading stream %s: %w (last error: %v)", stream, ctx.Err(), lastErr)
}
