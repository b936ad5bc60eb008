package deploy_test

// These tests keep the deployment files honest: no Docker engine or
// Kubernetes cluster is needed. They parse every file, compare the NATS
// definitions with what the worker provisions, run the built binary's
// `serve --print-config` on every configuration the files give it, and load
// compose.yaml with compose-go, the loader of `docker compose config`.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	dto "github.com/prometheus/client_model/go"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/metrics"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

var update = flag.Bool("update", false, "rewrite deploy/nats/streams and deploy/nats/consumers from worker.StreamConfigs and worker.ConsumerConfig")

const (
	demoModel    = "demo"
	natsReplicas = 3
	metricsPort  = 9464
)

// ---------------------------------------------------------------------------
// The rerank binary, built once for all tests.

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func rerankBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "rerank-deploy-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "rerank")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/rerank")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/rerank: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// printConfig runs `rerank serve --print-config ARGS` with env (and no
// RERANK_* variable of the test's own environment) and returns the
// effective settings. A non-zero exit fails the test.
func printConfig(t *testing.T, env map[string]string, args ...string) map[string]string {
	t.Helper()
	cfg, code, stderr := printConfigRaw(t, env, args...)
	if code != 0 {
		t.Fatalf("rerank serve --print-config %q with env %v: exit %d: %s", args, env, code, stderr)
	}
	return cfg
}

func printConfigRaw(t *testing.T, env map[string]string, args ...string) (map[string]string, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rerankBin(t), append([]string{"serve", "--print-config"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RERANK_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running rerank: %v", err)
	}
	if err != nil {
		return nil, ee.ExitCode(), stderr.String()
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		k, v, ok := strings.Cut(line, " = ")
		if !ok {
			t.Fatalf("print-config line %q: want key = value", line)
		}
		switch {
		case strings.HasPrefix(v, "["):
			var vs []string
			if err := json.Unmarshal([]byte(v), &vs); err != nil {
				t.Fatalf("print-config line %q: %v", line, err)
			}
			v = strings.Join(vs, ",")
		case strings.HasPrefix(v, `"`):
			s, err := strconv.Unquote(v)
			if err != nil {
				t.Fatalf("print-config line %q: %v", line, err)
			}
			v = s
		}
		out[k] = v
	}
	return out, 0, stderr.String()
}

// flagNames are the `rerank serve` flags, from --print-config (which lists
// all but itself and --config).
func flagNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{"config": true, "print-config": true}
	for k := range printConfig(t, nil) {
		names[k] = true
	}
	for _, must := range []string{"nats-url", "model", "provision", "replicas", "metrics-addr", "shutdown-grace", "ack-wait", "max-deliver"} {
		if !names[must] {
			t.Fatalf("serve --print-config does not list %q: %v", must, names)
		}
	}
	return names
}

// checkEnvNames fails for a RERANK_* variable that names no flag (the binary
// would silently ignore it).
func checkEnvNames(t *testing.T, where string, env map[string]string, flags map[string]bool) {
	t.Helper()
	for k := range env {
		if !strings.HasPrefix(k, "RERANK_") {
			continue
		}
		name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "RERANK_"), "_", "-"))
		if !flags[name] {
			t.Errorf("%s: %s names no `rerank serve` flag (--%s)", where, k, name)
		}
	}
}

func defaultShutdownGrace(t *testing.T) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(printConfig(t, nil)["shutdown-grace"])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// ---------------------------------------------------------------------------
// YAML helpers.

func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", path)
	}
	return docs
}

// at walks maps and lists: at(doc, "spec", "template", "spec").
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func mapAt(v any, path ...any) map[string]any {
	m, _ := at(v, path...).(map[string]any)
	return m
}

func listAt(v any, path ...any) []any {
	l, _ := at(v, path...).([]any)
	return l
}

func strAt(v any, path ...any) string {
	switch x := at(v, path...).(type) {
	case nil:
		return ""
	case string:
		return x
	default:
		return fmt.Sprint(x)
	}
}

func intAt(t *testing.T, v any, path ...any) int {
	t.Helper()
	s := strAt(v, path...)
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%v: %q is not an integer", path, s)
	}
	return n
}

func stringMap(v any) map[string]string {
	out := map[string]string{}
	switch x := v.(type) {
	case map[string]any:
		for k, v := range x {
			out[k] = fmt.Sprint(v)
		}
	case []any: // compose's list form: - KEY=value
		for _, e := range x {
			k, v, _ := strings.Cut(fmt.Sprint(e), "=")
			out[k] = v
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// NATS: stream and consumer definitions for the nats CLI.

func natsDefinitions() map[string]any {
	defs := map[string]any{}
	for _, sc := range worker.StreamConfigs(natsReplicas) {
		defs[filepath.Join("nats", "streams", sc.Name+".json")] = sc
	}
	for _, lane := range schemas.Lanes {
		defs[filepath.Join("nats", "consumers", worker.LaneConsumerName(demoModel, lane)+".json")] = worker.LaneConsumerConfig(demoModel, lane, worker.Config{})
	}
	return defs
}

func marshalDefinition(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // subjects and descriptions as written (no \u003e)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func jsonFields(t *testing.T, what string, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return m
}

// TestNATSDefinitions: deploy/nats/{streams,consumers}/*.json are, field by
// field, what worker.Provision declares (R3 streams, the demo consumer), and
// no other definition lies there.
func TestNATSDefinitions(t *testing.T) {
	defs := natsDefinitions()
	for path, cfg := range defs {
		want := marshalDefinition(cfg)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (regenerate: go test ./deploy -run TestNATSDefinitions -update)", err)
		}
		gm, wm := jsonFields(t, path, got), jsonFields(t, "worker config", want)
		keys := map[string]bool{}
		for k := range gm {
			keys[k] = true
		}
		for k := range wm {
			keys[k] = true
		}
		for k := range keys {
			if !reflect.DeepEqual(gm[k], wm[k]) {
				t.Errorf("%s: %q = %v, the worker provisions %v (regenerate: go test ./deploy -run TestNATSDefinitions -update)", path, k, gm[k], wm[k])
			}
		}
	}
	for _, dir := range []string{"streams", "consumers"} {
		files, _ := filepath.Glob(filepath.Join("nats", dir, "*.json"))
		for _, f := range files {
			if _, ok := defs[f]; !ok {
				t.Errorf("%s: no worker definition matches it", f)
			}
		}
	}
	for _, sc := range worker.StreamConfigs(natsReplicas) {
		m := jsonFields(t, sc.Name, mustRead(t, filepath.Join("nats", "streams", sc.Name+".json")))
		if m["num_replicas"] != json.Number(strconv.Itoa(natsReplicas)) || m["name"] != sc.Name {
			t.Errorf("%s.json: name %v, num_replicas %v; want %s, %d", sc.Name, m["name"], m["num_replicas"], sc.Name, natsReplicas)
		}
	}
	c := jsonFields(t, "consumer", mustRead(t, filepath.Join("nats", "consumers", "rerank-demo.json")))
	for k, want := range map[string]any{"durable_name": "rerank-demo", "filter_subject": "rerank.jobs.demo",
		"ack_policy": "explicit", "deliver_policy": "all"} {
		if c[k] != want {
			t.Errorf("rerank-demo.json: %s = %v, want %v", k, c[k], want)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNATSDefinitionsAcceptedByServer declares the streams and the consumer
// from the JSON files on a real (embedded, single-node, so R1) server, as
// `nats stream add --config` would, then runs worker.Provision over them: a
// worker started with --provision must find nothing to fight about.
func TestNATSDefinitionsAcceptedByServer(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir(), Name: "deploy-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, sc := range worker.StreamConfigs(natsReplicas) {
		var cfg jetstream.StreamConfig
		if err := json.Unmarshal(mustRead(t, filepath.Join("nats", "streams", sc.Name+".json")), &cfg); err != nil {
			t.Fatalf("%s.json: %v", sc.Name, err)
		}
		cfg.Replicas = 1
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatalf("creating stream from %s.json: %v", sc.Name, err)
		}
	}
	var cc jetstream.ConsumerConfig
	if err := json.Unmarshal(mustRead(t, filepath.Join("nats", "consumers", "rerank-demo.json")), &cc); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, schemas.JobsStream, cc); err != nil {
		t.Fatalf("creating consumer from rerank-demo.json: %v", err)
	}
	if err := worker.Provision(ctx, js, []string{demoModel}, worker.Config{Replicas: 1}); err != nil {
		t.Fatalf("worker.Provision over the declared definitions: %v", err)
	}
	cons, err := js.Consumer(ctx, schemas.JobsStream, worker.ConsumerName(demoModel))
	if err != nil {
		t.Fatal(err)
	}
	got := cons.CachedInfo().Config
	if got.AckWait != cc.AckWait || got.MaxDeliver != cc.MaxDeliver || got.MaxAckPending != cc.MaxAckPending || got.FilterSubject != cc.FilterSubject {
		t.Errorf("consumer after Provision: %+v, declared %+v", got, cc)
	}
}

// TestNATSClusterConfigs parses deploy/nats/cluster-N.conf with the server's
// own parser: names, ports, JetStream storage, routes to the two others, and
// a max_payload that lets an 8 MiB job through.
func TestNATSClusterConfigs(t *testing.T) {
	for i := 1; i <= 3; i++ {
		path := filepath.Join("nats", fmt.Sprintf("cluster-%d.conf", i))
		o, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		name := fmt.Sprintf("nats-%d", i)
		if o.ServerName != name || o.Port != 4222 || o.HTTPPort != 8222 {
			t.Errorf("%s: server_name %q, port %d, monitoring %d; want %s, 4222, 8222", path, o.ServerName, o.Port, o.HTTPPort, name)
		}
		if !o.JetStream || o.StoreDir != "/data/jetstream" {
			t.Errorf("%s: jetstream %v, store_dir %q; want JetStream in /data/jetstream", path, o.JetStream, o.StoreDir)
		}
		if o.Cluster.Name != "rerank" || o.Cluster.Port != 6222 {
			t.Errorf("%s: cluster %q port %d", path, o.Cluster.Name, o.Cluster.Port)
		}
		var routes []string
		for _, r := range o.Routes {
			routes = append(routes, r.Host)
		}
		sort.Strings(routes)
		var want []string
		for j := 1; j <= 3; j++ {
			if j != i {
				want = append(want, fmt.Sprintf("nats-%d:6222", j))
			}
		}
		if !slices.Equal(routes, want) {
			t.Errorf("%s: routes %v, want %v", path, routes, want)
		}
		if o.MaxPayload != natsembed.MaxPayload || int(o.MaxPayload) < schemas.DefaultMaxPayloadBytes || int(o.MaxPayload) < worker.DefaultMaxMsgBytes {
			t.Errorf("%s: max_payload %d; want %d (jobs up to %d bytes)", path, o.MaxPayload, natsembed.MaxPayload, schemas.DefaultMaxPayloadBytes)
		}
	}
}

// ---------------------------------------------------------------------------
// Dockerfile.

type instruction struct {
	cmd, args string
}

type stage struct {
	name, image string
	instrs      []instruction
}

func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

func (s stage) one(t *testing.T, cmd string) string {
	t.Helper()
	all := s.all(cmd)
	if len(all) != 1 {
		t.Fatalf("stage %s: %d %s instructions, want 1", s.name, len(all), cmd)
	}
	return all[0]
}

// parseDockerfile splits the Dockerfile into stages of instructions, joining
// continued lines and resolving the global ARG defaults in FROM lines.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	var logical []string
	cur := ""
	for _, line := range strings.Split(string(mustRead(t, path)), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		logical = append(logical, cur+trimmed)
		cur = ""
	}
	globals := map[string]string{}
	var stages []stage
	argRef := regexp.MustCompile(`\$\{(\w+)\}`)
	for _, l := range logical {
		if l == "" {
			continue
		}
		cmd, args, _ := strings.Cut(l, " ")
		cmd = strings.ToUpper(cmd)
		args = strings.TrimSpace(args)
		switch {
		case cmd == "FROM":
			f := strings.Fields(args)
			img := argRef.ReplaceAllStringFunc(f[0], func(s string) string { return globals[argRef.FindStringSubmatch(s)[1]] })
			st := stage{image: img}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
		case len(stages) == 0:
			if cmd == "ARG" {
				k, v, _ := strings.Cut(args, "=")
				globals[k] = v
			}
		default:
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, instruction{cmd, args})
		}
	}
	return stages
}

func stageNamed(t *testing.T, stages []stage, name string) stage {
	t.Helper()
	for _, s := range stages {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile: no stage %q", name)
	return stage{}
}

func argDefault(s stage, name string) string {
	for _, a := range s.all("ARG") {
		if k, v, ok := strings.Cut(a, "="); ok && k == name {
			return v
		}
	}
	return ""
}

func jsonArray(t *testing.T, what, s string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("%s: %q is not a JSON array (exec form): %v", what, s, err)
	}
	return out
}

// healthcheckCmd is the runtime stage's HEALTHCHECK command (exec form).
func healthcheckCmd(t *testing.T, s stage) []string {
	t.Helper()
	hc := s.one(t, "HEALTHCHECK")
	i := strings.Index(hc, "CMD ")
	if i < 0 {
		t.Fatalf("stage %s: HEALTHCHECK without CMD: %q", s.name, hc)
	}
	return jsonArray(t, "HEALTHCHECK CMD", strings.TrimSpace(hc[i+len("CMD "):]))
}

// TestDockerfile checks the stages (Go build with cgo, ONNX Runtime from the
// pinned npm tarball, slim runtime) and the runtime image's contract: user,
// ONNXRUNTIME_LIB, /models, port, entrypoint, a default command the binary
// accepts, and a healthcheck on /healthz.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "Dockerfile")
	build := stageNamed(t, stages, "build")
	if build.image != "golang:1.26-bookworm" {
		t.Errorf("build stage from %q, want golang:1.26-bookworm", build.image)
	}
	if !slices.ContainsFunc(build.all("RUN"), func(r string) bool {
		return strings.Contains(r, "CGO_ENABLED=1 go build") && strings.Contains(r, "-o /out/rerank ./cmd/rerank")
	}) {
		t.Error("build stage: no `CGO_ENABLED=1 go build ... -o /out/rerank ./cmd/rerank`")
	}
	// The context has no .git: the version and revision are linked in, into
	// variables that exist (-X of a missing name is silently nothing).
	versionSrc := string(mustRead(t, filepath.Join("..", "version", "version.go")))
	for _, x := range regexp.MustCompile(`-X github\.com/rerank/rerank/version\.(\w+)=\$\{(\w+)\}`).FindAllStringSubmatch(strings.Join(build.all("RUN"), "\n"), -1) {
		declared := slices.ContainsFunc(build.all("ARG"), func(a string) bool { k, _, _ := strings.Cut(a, "="); return k == x[2] })
		if !regexp.MustCompile(`(?m)^var .*\b`+x[1]+`\b`).MatchString(versionSrc) || !declared {
			t.Errorf("build stage: -X version.%s=${%s}: no such variable in version/version.go, or no ARG %s", x[1], x[2], x[2])
		}
	}
	if n := strings.Count(strings.Join(build.all("RUN"), "\n"), "-X github.com/rerank/rerank/version."); n != 2 {
		t.Errorf("build stage: %d -X version flags, want the version and the revision", n)
	}

	ort := stageNamed(t, stages, "ort")
	if !strings.HasPrefix(ort.image, "node:") {
		t.Errorf("ort stage from %q, want a node image (npm pack)", ort.image)
	}
	if v := argDefault(ort, "ORT_VERSION"); v != model.ORTVersion {
		t.Errorf("ort stage: ORT_VERSION %q, the code is built for %s", v, model.ORTVersion)
	}
	pin := regexp.MustCompile(`TGZ_SHA256="([0-9a-f]{64})"`).FindSubmatch(mustRead(t, filepath.Join("..", "scripts", "fetch-ort.sh")))
	if pin == nil {
		t.Fatal("scripts/fetch-ort.sh: no TGZ_SHA256 pin found")
	}
	if v := argDefault(ort, "ORT_TGZ_SHA256"); v != string(pin[1]) {
		t.Errorf("ort stage: ORT_TGZ_SHA256 %q, scripts/fetch-ort.sh pins %s", v, pin[1])
	}
	run := strings.Join(ort.all("RUN"), "\n")
	for _, want := range []string{`npm pack --silent "onnxruntime-node@${ORT_VERSION}"`, "sha256sum -c", "package/bin/napi-v6/linux/x64/libonnxruntime.so.1"} {
		if !strings.Contains(run, want) {
			t.Errorf("ort stage: RUN lacks %q", want)
		}
	}

	runtime := stages[len(stages)-1]
	if runtime.name != "runtime" || runtime.image != "debian:bookworm-slim" {
		t.Errorf("last (default) stage %q from %q, want runtime from debian:bookworm-slim", runtime.name, runtime.image)
	}
	gpu := stageNamed(t, stages, "runtime-gpu")
	if !strings.HasPrefix(gpu.image, "nvidia/cuda:12.") || !strings.Contains(gpu.image, "cudnn") {
		t.Errorf("runtime-gpu stage from %q, want a CUDA 12 + cuDNN image", gpu.image)
	}
	for _, s := range []stage{runtime, gpu} {
		labels := strings.Join(s.all("LABEL"), " ")
		for _, want := range []string{`org.opencontainers.image.version="${VERSION}"`, `org.opencontainers.image.revision="${REVISION}"`,
			`org.opencontainers.image.source="https://github.com/rerank/rerank"`, `org.opencontainers.image.licenses="Apache-2.0"`} {
			if !strings.Contains(labels, want) {
				t.Errorf("stage %s: no LABEL %s", s.name, want)
			}
		}
		if !slices.Contains(s.all("COPY"), "LICENSE NOTICE /usr/share/doc/rerank/") {
			t.Errorf("stage %s: LICENSE and NOTICE not in the image", s.name)
		}
		if u := s.one(t, "USER"); u != "10001:10001" && u != "10001" {
			t.Errorf("stage %s: USER %q, want 10001", s.name, u)
		}
		if e := s.one(t, "ENV"); e != "ONNXRUNTIME_LIB=/opt/onnxruntime/libonnxruntime.so.1" {
			t.Errorf("stage %s: ENV %q", s.name, e)
		}
		if !slices.ContainsFunc(s.all("COPY"), func(c string) bool {
			return strings.HasPrefix(c, "--from=ort") && strings.Contains(c, "/opt/onnxruntime/")
		}) {
			t.Errorf("stage %s: ONNX Runtime not copied to /opt/onnxruntime/", s.name)
		}
		if !slices.Contains(s.all("COPY"), "--from=build /out/rerank /usr/local/bin/rerank") {
			t.Errorf("stage %s: binary not copied to /usr/local/bin/rerank", s.name)
		}
		if !slices.ContainsFunc(s.all("RUN"), func(r string) bool { return strings.Contains(r, "ca-certificates") }) {
			t.Errorf("stage %s: ca-certificates not installed", s.name)
		}
		if v := jsonArray(t, "VOLUME", s.one(t, "VOLUME")); !slices.Equal(v, []string{"/models"}) {
			t.Errorf("stage %s: VOLUME %v", s.name, v)
		}
		if p := s.one(t, "EXPOSE"); p != strconv.Itoa(metricsPort) {
			t.Errorf("stage %s: EXPOSE %q", s.name, p)
		}
		if ep := jsonArray(t, "ENTRYPOINT", s.one(t, "ENTRYPOINT")); !slices.Equal(ep, []string{"/usr/local/bin/rerank", "serve"}) {
			t.Errorf("stage %s: ENTRYPOINT %v", s.name, ep)
		}
		hc := strings.Join(healthcheckCmd(t, s), " ")
		if !strings.Contains(hc, "/healthz") || !strings.Contains(hc, strconv.Itoa(metricsPort)) {
			t.Errorf("stage %s: HEALTHCHECK %q does not hit :%d/healthz", s.name, hc, metricsPort)
		}
		// The default command is valid `rerank serve` flags.
		args := jsonArray(t, "CMD", s.one(t, "CMD"))
		cfg := printConfig(t, nil, args...)
		if cfg["model"] != "demo=/models/demo" || cfg["log-format"] != "json" {
			t.Errorf("stage %s: CMD %v gives model %q, log-format %q", s.name, args, cfg["model"], cfg["log-format"])
		}
		if _, port, _ := net.SplitHostPort(cfg["metrics-addr"]); port != strconv.Itoa(metricsPort) {
			t.Errorf("stage %s: metrics-addr %q, EXPOSE %d", s.name, cfg["metrics-addr"], metricsPort)
		}
		if want := map[string]string{"runtime": "cpu", "runtime-gpu": "cuda"}[s.name]; cfg["device"] != want {
			t.Errorf("stage %s: device %q, want %q", s.name, cfg["device"], want)
		}
	}
	ignore := strings.Fields(string(mustRead(t, "Dockerfile.dockerignore")))
	for _, want := range []string{".git", ".cache", ".data", "bin"} {
		if !slices.Contains(ignore, want) {
			t.Errorf("Dockerfile.dockerignore does not exclude %s", want)
		}
	}
}

// TestHealthcheck runs the image's HEALTHCHECK command against a local HTTP
// server on another port: 0 for a 200 from /healthz, non-zero for a 503 or
// nothing listening.
func TestHealthcheck(t *testing.T) {
	stages := parseDockerfile(t, "Dockerfile")
	cmd := healthcheckCmd(t, stages[len(stages)-1])
	if _, err := exec.LookPath(cmd[0]); err != nil {
		t.Skipf("%s not installed here: %v", cmd[0], err)
	}
	run := func(port string) error {
		args := slices.Clone(cmd)
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], "/"+strconv.Itoa(metricsPort), "/"+port)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return exec.CommandContext(ctx, args[0], args[1:]...).Run()
	}
	serve := func(status int) (string, func()) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(status)
		}))
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		return port, srv.Close
	}
	port, stop := serve(http.StatusOK)
	if err := run(port); err != nil {
		t.Errorf("healthcheck against a healthy /healthz: %v", err)
	}
	stop()
	if err := run(port); err == nil {
		t.Error("healthcheck passed with nothing listening")
	}
	port, stop = serve(http.StatusServiceUnavailable)
	defer stop()
	if err := run(port); err == nil {
		t.Error("healthcheck passed on a 503")
	}
}

// ---------------------------------------------------------------------------
// Compose, Prometheus, alerts.

// TestComposeConfig loads compose.yaml with compose-go, the loader
// `docker compose config` runs (the Compose schema, interpolation, merge
// keys, normalization), and checks that it reads the services, images,
// commands and environments that TestCompose reads from the plain YAML.
func TestComposeConfig(t *testing.T) {
	opts, err := composecli.NewProjectOptions([]string{"compose.yaml"}, composecli.WithName("rerank"))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml does not load as docker compose loads it: %v", err)
	}
	services := mapAt(yamlDocs(t, "compose.yaml")[0], "services")
	if got, want := project.ServiceNames(), slices.Sorted(maps.Keys(services)); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
		t.Fatalf("compose-go services %v, YAML services %v", got, want)
	}
	for name, svc := range project.Services {
		if img := strAt(services, name, "image"); svc.Image != img && img != "" {
			t.Errorf("%s: image %q, YAML %q", name, svc.Image, img)
		}
		var cmd []string
		for _, c := range listAt(services, name, "command") {
			cmd = append(cmd, fmt.Sprint(c))
		}
		if !slices.Equal([]string(svc.Command), cmd) {
			t.Errorf("%s: command %q, YAML %q", name, svc.Command, cmd)
		}
		env := map[string]string{}
		for k, v := range mapAt(services, name, "environment") {
			env[k] = fmt.Sprint(v)
		}
		got := map[string]string{}
		for k, v := range svc.Environment {
			if v != nil {
				got[k] = *v
			}
		}
		if !maps.Equal(got, env) {
			t.Errorf("%s: environment %v, YAML %v", name, got, env)
		}
	}
}

// TestCompose parses compose.yaml (anchors and merge keys resolved) and
// checks the stack: three NATS servers on their configs, two workers built
// from deploy/Dockerfile on the cluster with R3 streams, Prometheus, volumes,
// healthchecks, drain time; and runs the workers' effective configuration
// through `rerank serve --print-config`.
func TestCompose(t *testing.T) {
	doc := yamlDocs(t, "compose.yaml")[0]
	services := mapAt(doc, "services")
	for _, want := range []string{"nats-1", "nats-2", "nats-3", "models-init", "worker-1", "worker-2", "prometheus"} {
		if services[want] == nil {
			t.Fatalf("compose.yaml: no service %s", want)
		}
	}
	declared := mapAt(doc, "volumes")
	namedVolume := func(svc, spec string) (src, dst string) {
		parts := strings.Split(spec, ":")
		if len(parts) < 2 {
			t.Fatalf("%s: volume %q: want SRC:DST", svc, spec)
		}
		src, dst = parts[0], parts[1]
		if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
			if _, ok := declared[src]; !ok {
				t.Errorf("%s: volume %q is not declared under volumes:", svc, src)
			}
		} else if _, err := os.Stat(src); err != nil {
			t.Errorf("%s: bind mount %q: %v", svc, src, err)
		}
		return src, dst
	}
	mounts := func(svc string) map[string]string { // dst -> src
		out := map[string]string{}
		for _, v := range listAt(services, svc, "volumes") {
			src, dst := namedVolume(svc, fmt.Sprint(v))
			out[dst] = src
		}
		return out
	}
	healthy := func(svc string) {
		if len(listAt(services, svc, "healthcheck", "test")) == 0 {
			t.Errorf("%s: no healthcheck", svc)
		}
	}

	var natsURLs []string
	for i := 1; i <= 3; i++ {
		svc := fmt.Sprintf("nats-%d", i)
		if img := strAt(services, svc, "image"); !strings.HasPrefix(img, "nats:2.11") {
			t.Errorf("%s: image %q, want nats:2.11", svc, img)
		}
		healthy(svc)
		cmd := listAt(services, svc, "command")
		if len(cmd) != 2 || cmd[0] != "--config" {
			t.Fatalf("%s: command %v, want --config PATH", svc, cmd)
		}
		m := mounts(svc)
		if want := fmt.Sprintf("./nats/cluster-%d.conf", i); m[fmt.Sprint(cmd[1])] != want {
			t.Errorf("%s: %s is mounted from %q, want %s", svc, cmd[1], m[fmt.Sprint(cmd[1])], want)
		}
		if m["/data"] == "" {
			t.Errorf("%s: no volume at /data (JetStream store_dir /data/jetstream)", svc)
		}
		natsURLs = append(natsURLs, fmt.Sprintf("nats://%s:4222", svc))
	}

	flags := flagNames(t)
	grace := defaultShutdownGrace(t)
	stages := parseDockerfile(t, "Dockerfile")
	runtime := stages[len(stages)-1]
	imageCmd := jsonArray(t, "CMD", runtime.one(t, "CMD"))
	wantHC := append([]string{"CMD"}, healthcheckCmd(t, runtime)...)
	ids := map[string]bool{}
	for _, svc := range []string{"worker-1", "worker-2", "models-init"} {
		if c, f := strAt(services, svc, "build", "context"), strAt(services, svc, "build", "dockerfile"); c != ".." || f != "deploy/Dockerfile" {
			t.Errorf("%s: build context %q dockerfile %q, want .. and deploy/Dockerfile", svc, c, f)
		}
	}
	if strAt(services, "models-init", "image") != strAt(services, "worker-1", "image") {
		t.Error("models-init and the workers use different images")
	}
	initCmd := strings.Join(func() []string {
		var s []string
		for _, v := range listAt(services, "models-init", "command") {
			s = append(s, fmt.Sprint(v))
		}
		return s
	}(), " ")
	if !strings.Contains(initCmd, "gen-model") || !strings.Contains(initCmd, "--out /models/demo") {
		t.Errorf("models-init: command %q does not write /models/demo", initCmd)
	}
	if mounts("models-init")["/models"] == "" {
		t.Error("models-init: no volume at /models")
	}
	for _, svc := range []string{"worker-1", "worker-2"} {
		healthy(svc)
		hc := listAt(services, svc, "healthcheck", "test")
		if !reflect.DeepEqual(hc, toAny(wantHC)) {
			t.Errorf("%s: healthcheck %v differs from the image's %v", svc, hc, wantHC)
		}
		env := stringMap(at(services, svc, "environment"))
		checkEnvNames(t, "compose.yaml "+svc, env, flags)
		if env["RERANK_NATS_URL"] != strings.Join(natsURLs, ",") {
			t.Errorf("%s: RERANK_NATS_URL %q, want %q", svc, env["RERANK_NATS_URL"], strings.Join(natsURLs, ","))
		}
		if env["RERANK_REPLICAS"] != strconv.Itoa(natsReplicas) {
			t.Errorf("%s: RERANK_REPLICAS %q, want %d", svc, env["RERANK_REPLICAS"], natsReplicas)
		}
		if id := env["RERANK_WORKER_ID"]; id == "" || ids[id] {
			t.Errorf("%s: RERANK_WORKER_ID %q missing or shared", svc, id)
		} else {
			ids[id] = true
		}
		if src := mounts(svc)["/models"]; src == "" || src != mounts("models-init")["/models"] {
			t.Errorf("%s: /models from %q, models-init writes %q", svc, src, mounts("models-init")["/models"])
		}
		deps := mapAt(services, svc, "depends_on")
		for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
			if strAt(deps, n, "condition") != "service_healthy" {
				t.Errorf("%s: does not wait for %s to be healthy", svc, n)
			}
		}
		if strAt(deps, "models-init", "condition") != "service_completed_successfully" {
			t.Errorf("%s: does not wait for models-init", svc)
		}
		stop, err := time.ParseDuration(strAt(services, svc, "stop_grace_period"))
		if err != nil || stop <= grace {
			t.Errorf("%s: stop_grace_period %q must exceed --shutdown-grace %s", svc, strAt(services, svc, "stop_grace_period"), grace)
		}
		cfg := printConfig(t, env, imageCmd...)
		if cfg["replicas"] != "3" || cfg["nats-url"] != strings.Join(natsURLs, ",") || cfg["model"] != "demo=/models/demo" || cfg["provision"] != "true" {
			t.Errorf("%s: effective config replicas %s, nats-url %s, model %s, provision %s", svc, cfg["replicas"], cfg["nats-url"], cfg["model"], cfg["provision"])
		}
	}

	healthy("prometheus")
	if img := strAt(services, "prometheus", "image"); !strings.HasPrefix(img, "prom/prometheus") {
		t.Errorf("prometheus: image %q", img)
	}
	pm := mounts("prometheus")
	var configFile string
	for _, a := range listAt(services, "prometheus", "command") {
		if v, ok := strings.CutPrefix(fmt.Sprint(a), "--config.file="); ok {
			configFile = v
		}
	}
	if pm[configFile] != "./prometheus/prometheus.yml" {
		t.Errorf("prometheus: --config.file %q is mounted from %q, want ./prometheus/prometheus.yml", configFile, pm[configFile])
	}
	prom := yamlDocs(t, filepath.Join("prometheus", "prometheus.yml"))[0]
	for _, rf := range listAt(prom, "rule_files") {
		if pm[fmt.Sprint(rf)] != "./prometheus/alerts.yaml" {
			t.Errorf("prometheus.yml: rule file %v is not the mounted ./prometheus/alerts.yaml", rf)
		}
	}
	var targets []string
	for _, sc := range listAt(prom, "scrape_configs") {
		if strAt(sc, "job_name") == "rerank" && strAt(sc, "metrics_path") == "/metrics" {
			for _, st := range listAt(sc, "static_configs") {
				for _, tg := range listAt(st, "targets") {
					targets = append(targets, fmt.Sprint(tg))
				}
			}
		}
	}
	sort.Strings(targets)
	if want := []string{fmt.Sprintf("worker-1:%d", metricsPort), fmt.Sprintf("worker-2:%d", metricsPort)}; !slices.Equal(targets, want) {
		t.Errorf("prometheus.yml: job rerank scrapes %v, want %v", targets, want)
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// exportedMetrics are the metric names a worker with the gateway really
// exports: the collectors of package metrics, each exercised once, gathered
// from their registry (histograms also as _bucket, _sum and _count), plus
// Prometheus' own up.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New(func() float64 { return 1 })
	g := metrics.NewGateway(m.Registry)
	var _ worker.Observer = m
	var _ pipeline.Observer = m
	m.JobDone("m", worker.OutcomeOK, 1, time.Millisecond, time.Millisecond)
	m.Redelivered("m")
	m.DeadLettered("m", "internal")
	m.Panicked("m")
	m.InFlight(1)
	m.Backlog("m", "interactive", 1, 1)
	m.ObserveScore("m", "interactive", 1, 1, []int{1}, 1, time.Millisecond)
	m.ObserveLaneWait("m", "interactive", time.Millisecond)
	m.ChunksInFlight("m", 1)
	g.Request("tei", 200, time.Millisecond)
	metrics.RegisterCache(m.Registry, func() metrics.CacheStats { return metrics.CacheStats{} })
	metrics.RegisterSharedCache(m.Registry, func() metrics.SharedCacheStats { return metrics.SharedCacheStats{} })(1, 1, time.Millisecond)
	metrics.RegisterModelInfo(m.Registry, map[string]string{"m": "digest"})
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{"up": true}
	for _, mf := range mfs {
		n := mf.GetName()
		names[n] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		}
	}
	for _, want := range []string{"rerank_jobs_total", "rerank_backlog_jobs", "rerank_gateway_requests_total", "process_resident_memory_bytes"} {
		if !names[want] {
			t.Fatalf("%s is not among the gathered metrics %v", want, names)
		}
	}
	return names
}

// checkExpr reports the metrics, outcomes and error codes of a PromQL
// expression that the worker and gateway do not have.
func checkExpr(t *testing.T, where, expr string, names map[string]bool) (problems []string) {
	t.Helper()
	bad := func(f string, args ...any) { problems = append(problems, where+": "+fmt.Sprintf(f, args...)) }
	outcomes := map[string]bool{worker.OutcomeOK: true, worker.OutcomeInvalid: true, worker.OutcomeRetry: true, worker.OutcomeFailed: true,
		worker.OutcomeAbandoned: true, worker.OutcomeStored: true}
	// Identifiers followed by { ( [ or an operator: metric names; PromQL's
	// functions and keywords are skipped.
	keywords := map[string]bool{"sum": true, "max": true, "min": true, "by": true, "rate": true, "increase": true, "deriv": true,
		"histogram_quantile": true, "and": true, "or": true, "absent": true, "le": true, "without": true, "count": true}
	for _, m := range regexp.MustCompile(`\b([a-z_][a-z0-9_]*)\b\s*[{\[]|\b((?:rerank|process|go|up)[a-z0-9_]*)\b`).FindAllStringSubmatch(stripLabels(expr), -1) {
		n := m[1] + m[2]
		if keywords[n] || strings.HasPrefix(n, "__") {
			continue
		}
		if !names[n] {
			bad("metric %s is not exported by the worker or the gateway", n)
		}
	}
	for _, m := range regexp.MustCompile(`outcome=~?"([^"]+)"`).FindAllStringSubmatch(expr, -1) {
		for _, o := range strings.Split(m[1], "|") {
			if !outcomes[o] {
				bad("outcome %q is not a worker outcome", o)
			}
		}
	}
	for _, m := range regexp.MustCompile(`code="([^"]+)"`).FindAllStringSubmatch(expr, -1) {
		if m[1] != string(schemas.CodeInternal) && !strings.Contains(string(mustRead(t, filepath.Join("..", "schemas", "errors.go"))), `"`+m[1]+`"`) {
			bad("code %q is not an error code", m[1])
		}
	}
	for _, m := range regexp.MustCompile(`state="([^"]+)"`).FindAllStringSubmatch(expr, -1) {
		if m[1] != "pending" && m[1] != "unacked" {
			bad("state %q is not a backlog state", m[1])
		}
	}
	return problems
}

// stripLabels blanks label matchers' values, so that strings never pass
// for metric names.
func stripLabels(expr string) string {
	return regexp.MustCompile(`"[^"]*"`).ReplaceAllString(expr, `""`)
}

// TestAlerts: every example alert has a name, an expression and a severity,
// and its expression uses only metrics, outcomes and error codes the worker
// and gateway have.
func TestAlerts(t *testing.T) {
	names := exportedMetrics(t)
	doc := yamlDocs(t, filepath.Join("prometheus", "alerts.yaml"))[0]
	seen := map[string]bool{}
	for _, g := range listAt(doc, "groups") {
		for _, r := range listAt(g, "rules") {
			name, expr := strAt(r, "alert"), strAt(r, "expr")
			if name == "" || expr == "" || strAt(r, "labels", "severity") == "" {
				t.Errorf("alerts.yaml: rule %v lacks alert, expr or labels.severity", r)
			}
			seen[name] = true
			for _, p := range checkExpr(t, "alert "+name, expr, names) {
				t.Error(p)
			}
		}
	}
	// The check itself catches what it is for.
	for _, bogus := range []string{`rate(rerank_bogus_total[5m]) > 0`, `rerank_jobs_total{outcome="exploded"}`,
		`rerank_dead_letters_total{code="no_such_code"}`, `sum(rerank_backlog_jobs{state="lost"})`, `histogram_quantile(0.9, rate(rerank_nope_bucket[5m]))`} {
		if len(checkExpr(t, "self-check", bogus, names)) == 0 {
			t.Errorf("checkExpr passed %s", bogus)
		}
	}
	// The alerts operators asked for.
	for _, want := range []string{"RerankBacklogGrowing", "RerankDeadLetter", "RerankNoReadyWorker", "RerankRedeliveryStorm", "RerankNATSDisconnected"} {
		if !seen[want] {
			t.Errorf("alerts.yaml: no alert %s", want)
		}
	}
}

// TestGrafanaDashboard: every panel of deploy/grafana/rerank.json (written
// by gen.py) queries metrics the worker and gateway export, and the
// dashboard shows what operators watch.
func TestGrafanaDashboard(t *testing.T) {
	names := exportedMetrics(t)
	var dash struct {
		UID    string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(mustRead(t, filepath.Join("grafana", "rerank.json")), &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Panels) < 10 || dash.UID == "" {
		t.Fatalf("dashboard: %d panels, uid %q", len(dash.Panels), dash.UID)
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, p := range checkExpr(t, "panel "+p.Title, tg.Expr, names) {
				t.Error(p)
			}
			for n := range names {
				if strings.Contains(tg.Expr, n) {
					used[n] = true
				}
			}
		}
	}
	for _, want := range []string{"rerank_backlog_jobs", "rerank_queue_wait_seconds_bucket", "rerank_job_duration_seconds_bucket", "rerank_batch_size_sum",
		"rerank_dead_letters_total", "rerank_redeliveries_total", "rerank_gateway_requests_total", "rerank_gateway_request_duration_seconds_bucket",
		"rerank_score_cache_hits_total", "rerank_score_cache_kv_hits_total"} {
		if !used[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
}

// ---------------------------------------------------------------------------
// Kubernetes.

type k8sObject struct {
	file string
	doc  map[string]any
}

func (o k8sObject) kind() string { return strAt(o.doc, "kind") }
func (o k8sObject) name() string { return strAt(o.doc, "metadata", "name") }

func k8sObjects(t *testing.T) map[string][]k8sObject {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no deploy/k8s/*.yaml")
	}
	byKind := map[string][]k8sObject{}
	for _, f := range files {
		for _, d := range yamlDocs(t, f) {
			o := k8sObject{f, d}
			if o.kind() == "" || strAt(d, "apiVersion") == "" || o.name() == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
				continue
			}
			byKind[o.kind()] = append(byKind[o.kind()], o)
		}
	}
	return byKind
}

// selects reports whether every key of selector is in labels with its value.
func selects(selector map[string]any, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if fmt.Sprint(labels[k]) != fmt.Sprint(v) {
			return false
		}
	}
	return true
}

func containerNamed(d map[string]any, name string) map[string]any {
	for _, c := range listAt(d, "spec", "template", "spec", "containers") {
		if strAt(c, "name") == name {
			return c.(map[string]any)
		}
	}
	return nil
}

// probePort resolves a probe's port (a number or a named container port).
func probePort(c map[string]any, port any) int {
	if n, err := strconv.Atoi(fmt.Sprint(port)); err == nil {
		return n
	}
	for _, p := range listAt(c, "ports") {
		if strAt(p, "name") == fmt.Sprint(port) {
			n, _ := strconv.Atoi(strAt(p, "containerPort"))
			return n
		}
	}
	return 0
}

// checkGatewayDeployment: the gateway runs `rerank gateway` with known
// RERANK_* variables, probes its HTTP port, and a Service routes to it.
func checkGatewayDeployment(t *testing.T, gws, services, pdbs []k8sObject) {
	t.Helper()
	if len(gws) != 1 {
		t.Fatalf("want one rerank-gateway Deployment, got %d", len(gws))
	}
	d := gws[0]
	c := containerNamed(d.doc, "gateway")
	if c == nil {
		t.Fatalf("%s: no container gateway", d.file)
	}
	if args := listAt(c, "args"); len(args) != 1 || fmt.Sprint(args[0]) != "gateway" {
		t.Errorf("%s: args %v, want [gateway]", d.file, args)
	}
	env := map[string]string{}
	for _, e := range listAt(c, "env") {
		env[strAt(e, "name")] = strAt(e, "value")
	}
	gwFlags := map[string]bool{}
	for _, f := range []string{"http", "nats-url", "replicas", "log-format", "gateway-tokens", "gateway-tokens-file", "gateway-model"} {
		gwFlags[f] = true
	}
	for name := range env {
		f := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "RERANK_")), "_", "-")
		if !gwFlags[f] {
			t.Errorf("%s: %s is not a flag of rerank gateway", d.file, name)
		}
	}
	_, port, _ := strings.Cut(env["RERANK_HTTP"], ":")
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if p := probePort(c, at(c, probe, "httpGet", "port")); strconv.Itoa(p) != port {
			t.Errorf("%s: %s port %d, the gateway listens on %q", d.file, probe, p, env["RERANK_HTTP"])
		}
	}
	podLabels := mapAt(d.doc, "spec", "template", "metadata", "labels")
	if !slices.ContainsFunc(services, func(s k8sObject) bool {
		return s.name() == "rerank-gateway" && selects(mapAt(s.doc, "spec", "selector"), podLabels)
	}) {
		t.Errorf("%s: no Service rerank-gateway selects its pods", d.file)
	}
	for _, s := range services {
		if s.name() != "rerank-gateway" && selects(mapAt(s.doc, "spec", "selector"), podLabels) {
			t.Errorf("Service %s (workers) also selects the gateway's pods", s.name())
		}
	}
	for _, pdb := range pdbs {
		if selects(mapAt(pdb.doc, "spec", "selector", "matchLabels"), podLabels) {
			t.Errorf("the workers' PodDisruptionBudget %s also selects the gateway's pods", pdb.name())
		}
	}
}

// TestKubernetes checks deploy/k8s: API versions; both Deployments' probes,
// drain time, resources, provisioning off, ConfigMap mount (and, through
// `rerank serve --print-config`, the effective configuration each container
// gets); the GPU variant's GPU; the ConfigMap's rerank.toml against the flags
// and the declared consumer; Service and PodDisruptionBudget selectors; the
// KEDA ScaledObject's trigger against the stream and consumer definitions.
func TestKubernetes(t *testing.T) {
	objs := k8sObjects(t)
	wantAPI := map[string]string{"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1",
		"PodDisruptionBudget": "policy/v1", "ScaledObject": "keda.sh/v1alpha1"}
	for kind, list := range objs {
		for _, o := range list {
			if want, ok := wantAPI[kind]; !ok {
				t.Errorf("%s: unexpected kind %s", o.file, kind)
			} else if got := strAt(o.doc, "apiVersion"); got != want {
				t.Errorf("%s: %s apiVersion %q, want %q", o.file, kind, got, want)
			}
		}
	}
	for kind := range wantAPI {
		if len(objs[kind]) == 0 {
			t.Fatalf("deploy/k8s: no %s", kind)
		}
	}

	// The ConfigMap's rerank.toml: known keys only, and the values the
	// declared consumer and streams need.
	if len(objs["ConfigMap"]) != 1 {
		t.Fatalf("want one ConfigMap, got %d", len(objs["ConfigMap"]))
	}
	cm := objs["ConfigMap"][0]
	toml := strAt(cm.doc, "data", "rerank.toml")
	if toml == "" {
		t.Fatalf("%s: no data.rerank.toml", cm.file)
	}
	tomlPath := filepath.Join(t.TempDir(), "rerank.toml")
	if err := os.WriteFile(tomlPath, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, code, stderr := printConfigRaw(t, map[string]string{"RERANK_CONFIG": tomlPath}); code != 0 {
		t.Fatalf("%s: rerank.toml rejected by `rerank serve --print-config` (exit %d): %s", cm.file, code, stderr)
	}
	consumer := jsonFields(t, "consumer", mustRead(t, filepath.Join("nats", "consumers", "rerank-demo.json")))
	flags := flagNames(t)
	grace := defaultShutdownGrace(t)

	deployments := map[string]k8sObject{}
	var gateways []k8sObject
	for _, d := range objs["Deployment"] {
		if d.name() == "rerank-gateway" {
			gateways = append(gateways, d)
			continue
		}
		deployments[d.name()] = d
	}
	checkGatewayDeployment(t, gateways, objs["Service"], objs["PodDisruptionBudget"])
	if deployments["rerank"].doc == nil || deployments["rerank-gpu"].doc == nil {
		t.Fatalf("want Deployments rerank and rerank-gpu, got %v", slices.Collect(maps.Keys(deployments)))
	}
	var cpuLimit float64
	for name, d := range deployments {
		where := d.file + " " + name
		podLabels := mapAt(d.doc, "spec", "template", "metadata", "labels")
		if !selects(mapAt(d.doc, "spec", "selector", "matchLabels"), podLabels) {
			t.Errorf("%s: selector does not select its own pods", where)
		}
		spec := mapAt(d.doc, "spec", "template", "spec")
		tg := intAt(t, spec, "terminationGracePeriodSeconds")
		if time.Duration(tg)*time.Second <= grace {
			t.Errorf("%s: terminationGracePeriodSeconds %d must exceed the worker's drain grace %s", where, tg, grace)
		}
		c := containerNamed(d.doc, "rerank")
		if c == nil {
			t.Fatalf("%s: no container rerank", where)
		}
		for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
			if got := strAt(c, probe, "httpGet", "path"); got != path {
				t.Errorf("%s: %s path %q, want %s", where, probe, got, path)
			}
			if p := probePort(c, at(c, probe, "httpGet", "port")); p != metricsPort {
				t.Errorf("%s: %s port %d, want %d", where, probe, p, metricsPort)
			}
		}
		for _, kind := range []string{"requests", "limits"} {
			for _, res := range []string{"cpu", "memory"} {
				if strAt(c, "resources", kind, res) == "" {
					t.Errorf("%s: resources.%s.%s not set", where, kind, res)
				}
			}
		}
		// Environment, the ConfigMap mount, and the effective configuration.
		env := map[string]string{}
		for _, e := range listAt(c, "env") {
			n := strAt(e, "name")
			if at(e, "valueFrom") != nil {
				env[n] = "from-" + n // e.g. the pod name
			} else {
				env[n] = strAt(e, "value")
			}
		}
		checkEnvNames(t, where, env, flags)
		if env["RERANK_PROVISION"] != "false" {
			t.Errorf("%s: RERANK_PROVISION %q, want false (the deployment declares streams and consumers)", where, env["RERANK_PROVISION"])
		}
		cfgPath := env["RERANK_CONFIG"]
		var mounted bool
		for _, vm := range listAt(c, "volumeMounts") {
			if filepath.Join(strAt(vm, "mountPath"), "rerank.toml") != cfgPath {
				continue
			}
			for _, v := range listAt(spec, "volumes") {
				if strAt(v, "name") == strAt(vm, "name") && strAt(v, "configMap", "name") == cm.name() {
					mounted = true
				}
			}
		}
		if !mounted || cfgPath != "/etc/rerank/rerank.toml" {
			t.Errorf("%s: RERANK_CONFIG %q is not the ConfigMap %s mounted as /etc/rerank/rerank.toml", where, cfgPath, cm.name())
		}
		env["RERANK_CONFIG"] = tomlPath
		var args []string
		for _, a := range listAt(c, "args") {
			args = append(args, fmt.Sprint(a))
		}
		if len(args) == 0 {
			t.Errorf("%s: no args: the image's CMD (--model ...) would win over the ConfigMap", where)
		}
		cfg := printConfig(t, env, args...)
		if cfg["provision"] != "false" || cfg["model"] != "demo=/models/demo" {
			t.Errorf("%s: effective provision %q, model %q", where, cfg["provision"], cfg["model"])
		}
		if _, port, _ := net.SplitHostPort(cfg["metrics-addr"]); port != strconv.Itoa(metricsPort) {
			t.Errorf("%s: metrics-addr %q, probes use %d", where, cfg["metrics-addr"], metricsPort)
		}
		if ack, _ := time.ParseDuration(cfg["ack-wait"]); json.Number(strconv.FormatInt(int64(ack), 10)) != consumer["ack_wait"] {
			t.Errorf("%s: ack-wait %s, the declared consumer's ack_wait is %v ns", where, cfg["ack-wait"], consumer["ack_wait"])
		}
		if json.Number(cfg["max-deliver"]) != consumer["max_deliver"] {
			t.Errorf("%s: max-deliver %s, the declared consumer's max_deliver is %v", where, cfg["max-deliver"], consumer["max_deliver"])
		}
		if cfg["replicas"] != strconv.Itoa(natsReplicas) {
			t.Errorf("%s: replicas %s, streams are declared with %d", where, cfg["replicas"], natsReplicas)
		}
		if sg, _ := time.ParseDuration(cfg["shutdown-grace"]); time.Duration(tg)*time.Second <= sg {
			t.Errorf("%s: terminationGracePeriodSeconds %d not above shutdown-grace %s", where, tg, sg)
		}
		if name == "rerank" {
			lim, err := strconv.ParseFloat(strAt(c, "resources", "limits", "cpu"), 64)
			if err != nil {
				t.Errorf("%s: CPU limit %q: give whole CPUs", where, strAt(c, "resources", "limits", "cpu"))
			}
			cpuLimit = lim
			if cfg["intra-op-threads"] != strconv.Itoa(int(lim)) {
				t.Errorf("%s: intra-op-threads %s, CPU limit %v", where, cfg["intra-op-threads"], lim)
			}
			if cfg["device"] != "cpu" {
				t.Errorf("%s: device %q", where, cfg["device"])
			}
		} else {
			if cfg["device"] != "cuda" {
				t.Errorf("%s: device %q, want cuda", where, cfg["device"])
			}
			if strAt(c, "resources", "limits", "nvidia.com/gpu") != "1" {
				t.Errorf("%s: resources.limits nvidia.com/gpu %q, want 1", where, strAt(c, "resources", "limits", "nvidia.com/gpu"))
			}
			if len(mapAt(spec, "nodeSelector")) == 0 && len(listAt(spec, "tolerations")) == 0 {
				t.Errorf("%s: no nodeSelector or tolerations for GPU nodes", where)
			}
		}
		// Services and PDBs.
		if !slices.ContainsFunc(objs["Service"], func(s k8sObject) bool { return selects(mapAt(s.doc, "spec", "selector"), podLabels) }) {
			t.Errorf("%s: no Service selects its pods", where)
		}
		var pdbs []string
		for _, p := range objs["PodDisruptionBudget"] {
			if selects(mapAt(p.doc, "spec", "selector", "matchLabels"), podLabels) {
				pdbs = append(pdbs, p.name())
				if at(p.doc, "spec", "minAvailable") == nil && at(p.doc, "spec", "maxUnavailable") == nil {
					t.Errorf("%s: PodDisruptionBudget %s sets neither minAvailable nor maxUnavailable", p.file, p.name())
				}
			}
		}
		if len(pdbs) != 1 {
			t.Errorf("%s: %d PodDisruptionBudgets select its pods (%v), want 1", where, len(pdbs), pdbs)
		}
	}
	for _, s := range objs["Service"] {
		if s.name() == "rerank-gateway" {
			continue // checkGatewayDeployment
		}
		var port bool
		for _, p := range listAt(s.doc, "spec", "ports") {
			port = port || (strAt(p, "port") == strconv.Itoa(metricsPort) && (strAt(p, "targetPort") == "metrics" || strAt(p, "targetPort") == strconv.Itoa(metricsPort)))
		}
		if !port {
			t.Errorf("%s: Service %s does not expose the metrics port %d", s.file, s.name(), metricsPort)
		}
	}

	// KEDA.
	cmCfg := printConfig(t, map[string]string{"RERANK_CONFIG": tomlPath})
	concurrency, _ := strconv.Atoi(cmCfg["concurrency"])
	for _, so := range objs["ScaledObject"] {
		where := so.file + " " + so.name()
		if target := strAt(so.doc, "spec", "scaleTargetRef", "name"); deployments[target].doc == nil {
			t.Errorf("%s: scaleTargetRef %q is no Deployment here", where, target)
		}
		triggers := listAt(so.doc, "spec", "triggers")
		if len(triggers) != len(schemas.Lanes) {
			t.Fatalf("%s: want one nats-jetstream trigger per lane (KEDA sees the backlog of both), got %v", where, triggers)
		}
		for _, trig := range triggers {
			if strAt(trig, "type") != "nats-jetstream" {
				t.Fatalf("%s: trigger type %q", where, strAt(trig, "type"))
			}
			md := mapAt(trig, "metadata")
			for _, k := range []string{"natsServerMonitoringEndpoint", "account"} {
				if strAt(md, k) == "" {
					t.Errorf("%s: trigger metadata %s is empty", where, k)
				}
			}
			if _, port, err := net.SplitHostPort(strAt(md, "natsServerMonitoringEndpoint")); err != nil || port != "8222" {
				t.Errorf("%s: natsServerMonitoringEndpoint %q: want host:8222 (the monitoring port)", where, strAt(md, "natsServerMonitoringEndpoint"))
			}
			declared := jsonFields(t, "consumer", mustRead(t, filepath.Join("nats", "consumers", strAt(md, "consumer")+".json")))
			if strAt(md, "stream") != schemas.JobsStream || strAt(md, "consumer") != declared["durable_name"] {
				t.Errorf("%s: stream %q consumer %q; the declared consumer is %v on %s", where, strAt(md, "stream"), strAt(md, "consumer"), declared["durable_name"], schemas.JobsStream)
			}
			if !strings.HasPrefix(fmt.Sprint(declared["filter_subject"]), schemas.JobsPrefix) {
				t.Errorf("consumer filter %v is not under %s", declared["filter_subject"], schemas.JobsPrefix)
			}
			models := strings.Split(cmCfg["model"], ",")
			if !slices.ContainsFunc(models, func(m string) bool {
				name, _, _ := strings.Cut(m, "=")
				return worker.ConsumerName(name) == strAt(md, "consumer") || worker.BulkConsumerName(name) == strAt(md, "consumer")
			}) {
				t.Errorf("%s: consumer %q belongs to no model the ConfigMap serves (%v)", where, strAt(md, "consumer"), models)
			}
			lag := intAt(t, md, "lagThreshold")
			if lag < concurrency {
				t.Errorf("%s: lagThreshold %d is below the worker's concurrency %d: jobs in flight alone would scale up", where, lag, concurrency)
			}
			if intAt(t, md, "activationLagThreshold") < 0 {
				t.Errorf("%s: negative activationLagThreshold", where)
			}
		}
		minR, maxR := intAt(t, so.doc, "spec", "minReplicaCount"), intAt(t, so.doc, "spec", "maxReplicaCount")
		if minR < 0 || maxR < max(minR, 1) {
			t.Errorf("%s: minReplicaCount %d, maxReplicaCount %d", where, minR, maxR)
		}
		if ackPending, _ := strconv.Atoi(fmt.Sprint(consumer["max_ack_pending"])); maxR*concurrency > ackPending {
			t.Errorf("%s: maxReplicaCount %d × concurrency %d exceeds the consumer's max_ack_pending %d", where, maxR, concurrency, ackPending)
		}
	}
	if cpuLimit == 0 {
		t.Error("no CPU limit on the CPU Deployment")
	}
}
