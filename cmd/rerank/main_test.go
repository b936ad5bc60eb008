package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/schemas"
)

// binary builds the rerank command and the tiny model once per test run.
func binary(t *testing.T) (bin, tiny string) {
	t.Helper()
	testenv.ORTLib(t)
	return testfixture.Binary(t), testfixture.TinyModel(t)
}

func TestMain(m *testing.M) {
	code := m.Run()
	testfixture.Cleanup(false)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func runCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	bin, _ := binary(t)
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// readmeJob returns the job example of schemas/README.md.
func readmeJob(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../schemas/README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Job.*?```json\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("no JSON job example in schemas/README.md")
	}
	return string(m[1])
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, c := range commands {
		r := runCmd(t, "", c.name, "--help")
		if r.code != 0 || !strings.Contains(r.stderr, "Usage: rerank "+c.name) {
			t.Errorf("%s --help: code %d, stderr %q", c.name, r.code, r.stderr)
		}
	}
	if r := runCmd(t, ""); r.code != 0 || !strings.Contains(r.stdout, "Commands:") {
		t.Errorf("no command: %+v", r)
	}
	if r := runCmd(t, "", "frobnicate"); r.code != 2 {
		t.Errorf("unknown command: code %d", r.code)
	}
}

func TestInjectOnReadmeExample(t *testing.T) {
	r := runCmd(t, readmeJob(t), "inject", "--preset", "all-MiniLM-L12-v3-bm25", "-")
	if r.code != 0 {
		t.Fatalf("inject: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines", len(lines))
	}
	var l struct {
		Index int    `json:"index"`
		ID    string `json:"id"`
		TextA string `json:"text_a"`
		TextB string `json:"text_b"`
	}
	if err := json.Unmarshal([]byte(lines[1]), &l); err != nil {
		t.Fatal(err)
	}
	if l.Index != 1 || l.ID != "d2" || l.TextA != "28 [SEP] what is the capital of france" || !strings.HasPrefix(l.TextB, "Paris") {
		t.Fatalf("line 2: %+v", l)
	}
	// As a new user would: one candidate lacks bm25.
	bad := strings.Replace(readmeJob(t), `, "bm25": 6.8`, "", 1)
	r = runCmd(t, bad, "inject", "--preset", "all-MiniLM-L12-v3-bm25")
	if r.code != 2 || !strings.Contains(r.stderr, "missing_score") || !strings.Contains(r.stderr, `candidate 2 (id "d3")`) {
		t.Fatalf("missing bm25: code %d stderr %q", r.code, r.stderr)
	}
	// msgpack in.
	var job schemas.Job
	json.Unmarshal([]byte(readmeJob(t)), &job)
	mp, _ := schemas.EncodeJob(&job, schemas.Msgpack)
	if r := runCmd(t, string(mp), "inject", "--preset", "ms-marco-MiniLM"); r.code != 0 || strings.Count(r.stdout, "\n") != 3 {
		t.Fatalf("msgpack input: %+v", r)
	}
}

func TestTokenizeCommand(t *testing.T) {
	tok := testenv.TokenizerJSON(t)
	in := `{"a":"42 [SEP] what is bm25","b":"Résumé of BM25.","max_length":512,"truncation":"longest_first"}` + "\n"
	r := runCmd(t, in, "tokenize", "--tokenizer", tok)
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	var out struct {
		A       string  `json:"a"`
		IDs     []int64 `json:"ids"`
		TypeIDs []int64 `json:"type_ids"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatal(err)
	}
	// [CLS] 42 [SEP] what is bm ##25 [SEP] resume of bm ##25 . [SEP]: the
	// literal [SEP] in text A is the special token, and text A has type 0.
	seps := 0
	for i, id := range out.IDs {
		want := int64(0)
		if seps >= 2 { // after "[CLS] 42 [SEP] what is bm ##25 [SEP]" comes text B
			want = 1
		}
		if out.TypeIDs[i] != want {
			t.Fatalf("type id %d at %d, want %d: %v", out.TypeIDs[i], i, want, out.TypeIDs)
		}
		if id == 102 {
			seps++
		}
	}
	if out.A == "" || out.IDs[0] != 101 || out.IDs[2] != 102 || seps != 3 || len(out.IDs) != len(out.TypeIDs) || out.TypeIDs[len(out.TypeIDs)-1] != 1 {
		t.Fatalf("ids %v type ids %v", out.IDs, out.TypeIDs)
	}
}

func TestRunLocally(t *testing.T) {
	_, tiny := binary(t)
	r := runCmd(t, readmeJob(t), "run", "--model", "tiny="+tiny, "-")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	var res schemas.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Error != nil || len(res.Results) != 2 || res.Results[0].Document == nil || res.Meta["tenant"] != "docs" || res.Model != "tiny" {
		t.Fatalf("result %+v", res)
	}
}

// serveProc is a `rerank serve` process on the embedded default.
type serveProc struct {
	cmd     *exec.Cmd
	url     string
	metrics string      // http://host:port of /metrics, /healthz, /readyz
	http    string      // http://host:port of the HTTP gateway
	stderr  *syncBuffer // written by exec's copying goroutine
	done    chan struct{}
}

func startServe(t *testing.T, dataDir string, port int, extra ...string) *serveProc {
	t.Helper()
	bin, tiny := binary(t)
	mport, _ := natsembed.FreePort()
	hport, _ := natsembed.FreePort()
	args := []string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dataDir,
		"--log-format", "text", "--ack-wait", "5s", "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport)}
	if !slices.Contains(extra, "--http") {
		args = append(args, "--http", fmt.Sprintf("127.0.0.1:%d", hport))
	}
	if !slices.Contains(extra, "--model") && !slices.Contains(extra, "--test-simulated-model") {
		args = append(args, "--model", "demo="+tiny)
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	errb := &syncBuffer{}
	cmd.Stderr = errb
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, url: fmt.Sprintf("nats://127.0.0.1:%d", port), stderr: errb, done: make(chan struct{}),
		metrics: fmt.Sprintf("http://127.0.0.1:%d", mport), http: fmt.Sprintf("http://127.0.0.1:%d", hport)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case ready <- sc.Text():
			default:
			}
		}
	}()
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	select {
	case line := <-ready:
		if !strings.Contains(line, "rerank submit") {
			t.Fatalf("unexpected banner %q", line)
		}
	case <-p.done:
		t.Fatalf("serve exited early: %s", errb.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("serve not ready: %s", errb.String())
	}
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *serveProc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("serve exited %d after SIGTERM: %s", code, p.stderr.String())
		}
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		t.Errorf("serve did not stop on SIGTERM: %s", p.stderr.String())
	}
}

func TestServeAndSubmitOnEmbeddedDefault(t *testing.T) {
	port, _ := natsembed.FreePort()
	data := t.TempDir()
	p := startServe(t, data, port)
	r := runCmd(t, "", "submit", "--nats-url", p.url, "../../examples/job.json")
	if r.code != 0 {
		t.Fatalf("submit: %+v\nserve log:\n%s", r, p.stderr.String())
	}
	if !strings.Contains(r.stdout, "RANK") || strings.Count(r.stdout, "\n") != 7 {
		t.Fatalf("submit printed:\n%s", r.stdout)
	}
	// --json prints the raw result; the second submission of the same id is
	// a duplicate answered from the results stream.
	r = runCmd(t, "", "submit", "--json", "--nats-url", p.url, "../../examples/job.json")
	var res schemas.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Results) != 5 || res.Model != "demo" {
		t.Fatalf("submit --json: %v %+v", err, r)
	}
	if !strings.Contains(r.stderr, "already queued within JetStream's 2-minute duplicate window") {
		t.Fatalf("a duplicate submission without a word: %+v", r)
	}
	// A model no worker serves is refused at once, nothing queued.
	start := time.Now()
	r = runCmd(t, `{"id":"unserved","query":"q","candidates":[{"id":"a","text":"x"}]}`, "submit", "--model", "nope", "--nats-url", p.url, "-")
	if r.code != 2 || !strings.Contains(r.stderr, `no worker serves model "nope"`) || time.Since(start) > 30*time.Second {
		t.Fatalf("unserved model: %+v after %s", r, time.Since(start))
	}
	// An invalid job: coded error, exit 2.
	r = runCmd(t, `{"id":"bad-1","query":"","candidates":[{"id":"a","text":"x"}]}`, "submit", "--nats-url", p.url, "-")
	if r.code != 2 || !strings.Contains(r.stderr+r.stdout, "missing_query") {
		t.Fatalf("invalid job: %+v", r)
	}
	// The client checks jobs before publishing; a raw invalid one reaches the worker.
	nc, err := nats.Connect(p.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hdr := nats.Header{}
	hdr.Set("Nats-Msg-Id", "bad-2")
	if err := nc.PublishMsg(&nats.Msg{Subject: "rerank.jobs.demo", Header: hdr, Data: []byte{0xc1}}); err != nil {
		t.Fatal(err)
	}
	// Metrics and probes after real jobs (the counters settle just after the results).
	wants := []string{`rerank_jobs_total{model="demo",outcome="ok"} 1`, `rerank_jobs_total{model="demo",outcome="invalid"} 1`,
		`rerank_dead_letters_total{code="bad_encoding",model="demo"} 1`, `rerank_pairs_scored_total{model="demo"} 5`,
		"rerank_nats_connected 1", "rerank_jobs_in_flight 0", `rerank_batch_size_count{model="demo"} 1`,
		`rerank_build_info{go_version="go`}
	var missing []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		body := httpGet(t, p.metrics+"/metrics", 200)
		missing = missing[:0]
		for _, want := range wants {
			if !strings.Contains(body, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Errorf("/metrics lacks %q", missing)
	}
	httpGet(t, p.metrics+"/healthz", 200)
	httpGet(t, p.metrics+"/readyz", 200)
	// RERANK_* environment defaults reach the flags.
	bin, _ := binary(t)
	cmd := exec.Command(bin, "submit", "../../examples/job.json")
	cmd.Env = append(os.Environ(), "RERANK_NATS_URL="+p.url, "RERANK_TIMEOUT=30s")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "RANK") {
		t.Fatalf("env defaults: %v %s", err, out)
	}
}

func httpGet(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// TestSimulatedModelServes: --test-simulated-model serves a stand-in that
// waits instead of scoring (scale benchmarks): jobs get well-formed
// rankings, no ONNX Runtime is loaded, and it never mixes with --model.
func TestSimulatedModelServes(t *testing.T) {
	for _, bad := range [][]string{{"--test-simulated-model", "demo:1ms"}, {"--test-simulated-model", "demo:1ms:1ms", "--model", "x=/nonexistent"}} {
		if r := runCmd(t, "", append([]string{"serve", "--print-config=false", "--http", "", "--metrics-addr", ""}, bad...)...); r.code != 2 {
			t.Errorf("serve %q: exit %d, want 2: %s", bad, r.code, r.stderr)
		}
	}
	port, _ := natsembed.FreePort()
	p := startServe(t, t.TempDir(), port, "--test-simulated-model", "demo:1ms:5ms", "--ort-lib", "/nonexistent/libonnxruntime.so")
	example, err := os.ReadFile("../../examples/job.json")
	if err != nil {
		t.Fatal(err)
	}
	var first schemas.Result
	for i := range 2 {
		// Two ids: the second is scored again, not answered from the first's stored result.
		job := strings.Replace(string(example), `"example-1"`, fmt.Sprintf(`"simulated-%d"`, i), 1)
		r := runCmd(t, job, "submit", "--json", "--nats-url", p.url, "-")
		var res schemas.Result
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || res.Error != nil || res.Model != "demo" || len(res.Results) != 5 {
			t.Fatalf("submit: %+v\nserve log:\n%s", r, p.stderr.String())
		}
		seen := map[int]bool{}
		for j, rk := range res.Results {
			if seen[rk.Index] || rk.Index < 0 || rk.Index >= 5 || j > 0 && rk.RelevanceScore > res.Results[j-1].RelevanceScore {
				t.Fatalf("not a ranking of the candidates: %+v", res.Results)
			}
			seen[rk.Index] = true
		}
		if i == 0 {
			first = res
		} else if !reflect.DeepEqual(first.Results, res.Results) {
			t.Errorf("the same job ranked %+v, then %+v", first.Results, res.Results)
		}
	}
	// stderr is another pipe than the readiness line on stdout: poll.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.stderr.String(), "simulated models"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not warn that its model is simulated:\n%s", p.stderr.String())
		}
	}
}

// TestQuantizeRefusesBadFlags: usage errors exit 2 before anything is
// written.
func TestQuantizeRefusesBadFlags(t *testing.T) {
	_, tiny := binary(t)
	for _, args := range [][]string{
		{"--smooth", "2"},
		{"--activations", "per-token"},
		{"--calibration", filepath.Join(t.TempDir(), "missing.json")},
		{"--calibration-candidates", "0"},
	} {
		out := filepath.Join(t.TempDir(), "int8")
		r := runCmd(t, "", append([]string{"quantize", "--in", tiny, "--out", out}, args...)...)
		if _, err := os.Stat(out); r.code != 2 || err == nil {
			t.Errorf("%q: %+v (output written: %v)", args, r, err == nil)
		}
	}
}

// TestQuantizedModelServesLikeFP32: `rerank quantize` writes a model
// directory that a worker serves through NATS like the fp32 one: the same
// candidates, well-formed results, and agreement printed on the way.
func TestQuantizedModelServesLikeFP32(t *testing.T) {
	_, tiny := binary(t)
	dir := filepath.Join(t.TempDir(), "int8")
	r := runCmd(t, "", "quantize", "--in", tiny, "--out", dir, "--check-candidates", "50")
	if r.code != 0 || !strings.Contains(r.stdout, "quantized 12 nodes") || !strings.Contains(r.stdout, "fused 2 of 2 self-attention blocks") || !strings.Contains(r.stdout, "kendall_tau") {
		t.Fatalf("quantize: %+v", r)
	}
	var cfg struct {
		Quantization struct {
			Type, Source, Activations, Calibration string
			Attentions                             int `json:"fused_attentions"`
		} `json:"quantization"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "rerank.json")); err != nil || json.Unmarshal(b, &cfg) != nil || cfg.Quantization.Type != "int8" || cfg.Quantization.Activations != "static" || !strings.Contains(cfg.Quantization.Calibration, "100 candidates") || cfg.Quantization.Attentions != 2 {
		t.Fatalf("rerank.json: %v %+v", err, cfg)
	}
	// A second quantization of the output is refused.
	if r := runCmd(t, "", "quantize", "--in", dir, "--out", t.TempDir()); r.code == 0 || !strings.Contains(r.stderr, "already quantized") {
		t.Fatalf("re-quantize: %+v", r)
	}
	port, _ := natsembed.FreePort()
	p := startServe(t, t.TempDir(), port, "--model", "demo="+dir)
	var results [2]schemas.Result
	for i, args := range [][]string{{"submit", "--json", "--nats-url", p.url, "../../examples/job.json"},
		{"run", "--model", "demo=" + tiny, "../../examples/job.json"}} {
		r := runCmd(t, "", args...)
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &results[i]) != nil {
			t.Fatalf("%s: %+v\nserve log:\n%s", args[0], r, p.stderr.String())
		}
	}
	q, fp := results[0], results[1]
	if q.Error != nil || q.Model != "demo" || len(q.Results) != len(fp.Results) {
		t.Fatalf("int8 result %+v, fp32 %+v", q, fp)
	}
	seen := map[int]bool{}
	for i, rk := range q.Results {
		if seen[rk.Index] || rk.Index < 0 || rk.Index >= len(q.Results) || i > 0 && rk.RelevanceScore > q.Results[i-1].RelevanceScore {
			t.Fatalf("int8 results not a ranking of the candidates: %+v", q.Results)
		}
		seen[rk.Index] = true
	}
}

func TestPrintConfigPrecedence(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "rerank.toml")
	os.WriteFile(cfg, []byte("# a worker\nconcurrency = 3\nack-wait = \"10s\"\nmax-deliver = 7\nnats-url = \"nats://user:hunter2@10.0.0.1:4222\"\nmodel = [\"a=/m/a\", \"b=/m/b\"]\n"), 0o644)
	bin, _ := binary(t)
	cmd := exec.Command(bin, "serve", "--config", cfg, "--print-config", "--ack-wait", "20s")
	cmd.Env = append(os.Environ(), "RERANK_CONCURRENCY=5", "RERANK_MAX_DELIVER=9")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`ack-wait = "20s"`, "concurrency = 5", "max-deliver = 9", `model = ["a=/m/a", "b=/m/b"]`,
		`nats-url = "nats://***@10.0.0.1:4222"`, "replicas = 1"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("--print-config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "hunter2") {
		t.Fatal("the password leaked")
	}
	// Bearer tokens are masked whole, in both commands that take them.
	for _, command := range []string{"serve", "gateway"} {
		cmd := exec.Command(bin, command, "--print-config")
		cmd.Env = append(os.Environ(), "RERANK_GATEWAY_TOKENS=tok-hunter3,tok-2")
		out, err := cmd.Output()
		if err != nil || strings.Contains(string(out), "hunter3") || !strings.Contains(string(out), `gateway-tokens = "***"`+"\n") {
			t.Fatalf("%s --print-config: %v\n%s", command, err, out)
		}
	}
	os.WriteFile(cfg, []byte("no-such-flag = 1\n"), 0o644)
	if r := runCmd(t, "", "serve", "--config", cfg, "--print-config"); r.code != 2 || !strings.Contains(r.stderr, "no-such-flag") {
		t.Fatalf("unknown key: %+v", r)
	}
}

// Jobs survive a restart of `rerank serve`: file storage keeps the queue.
func TestJobsSurviveServeRestart(t *testing.T) {
	port, _ := natsembed.FreePort()
	data := t.TempDir()
	p := startServe(t, data, port, "--concurrency", "1", "--shutdown-grace", "100ms")
	nc, err := nats.Connect(p.url)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	const n = 40
	for i := range n {
		job := &schemas.Job{ID: "restart-" + strconv.Itoa(i), Query: "q", Candidates: []schemas.Candidate{}}
		for k := range 50 {
			job.Candidates = append(job.Candidates, schemas.Candidate{ID: strconv.Itoa(k), Text: strings.Repeat("word ", 60)})
		}
		b, _ := schemas.EncodeJob(job, schemas.Msgpack)
		if _, err := js.Publish(context.Background(), "rerank.jobs.demo", b, jetstream.WithMsgID(job.ID)); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	p.stop(t)
	p2 := startServe(t, data, port)
	nc2, err := nats.Connect(p2.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	deadline := time.Now().Add(90 * time.Second)
	for {
		s, err := js2.Stream(context.Background(), "RERANK_RESULTS")
		if err == nil {
			info, err := s.Info(context.Background(), jetstream.WithSubjectFilter("rerank.results.>"))
			if err == nil && len(info.State.Subjects) == n {
				for subj, c := range info.State.Subjects {
					if c != 1 {
						t.Fatalf("%s has %d results", subj, c)
					}
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every job got a result after the restart; serve log:\n%s", p2.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// 3. A crafted result (an index outside the job) prints, never panics.
func TestPrintRankingToleratesForeignIndices(t *testing.T) {
	job := &schemas.Job{ID: "j", Candidates: []schemas.Candidate{{ID: "a", Text: "alpha"}}}
	res := &schemas.Result{ID: "j", Results: []schemas.Ranked{{Index: 0, ID: "a"}, {Index: 5, ID: "x"}, {Index: -1, ID: "y"}}}
	var out strings.Builder
	printRanking(&out, job, res)
	if !strings.Contains(out.String(), "alpha") || strings.Count(out.String(), "?") != 2 {
		t.Fatalf("printed:\n%s", out.String())
	}
}
