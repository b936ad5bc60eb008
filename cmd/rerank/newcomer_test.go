package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/schemas"
)

// One settings file exported as RERANK_CONFIG reaches every command: each
// takes the keys it has flags for (a worker's concurrency does not break
// submit), a key no command has is still an error, and inject's own
// --config reads a model's rerank.json, as README documents.
func TestSharedSettingsFileAndInjectConfig(t *testing.T) {
	dir := t.TempDir()
	settings := filepath.Join(dir, "rerank.toml")
	os.WriteFile(settings, []byte("concurrency = 3\nnats-url = \"nats://10.0.0.9:4222\"\nmodel = [\"demo=/m/demo\"]\n"), 0o644)
	bin, _ := binary(t)
	run := func(env string, args ...string) result {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env)
		cmd.Stdin = strings.NewReader(readmeJob(t))
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		r := result{stdout: out.String(), stderr: errb.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, command := range []string{"serve", "submit", "inject", "tokenize", "eval", "run"} {
		r := run("RERANK_CONFIG="+settings, command, "--print-config")
		if r.code != 0 {
			t.Fatalf("%s with a shared settings file: %+v", command, r)
		}
		if command == "submit" && !strings.Contains(r.stdout, `nats-url = "nats://10.0.0.9:4222"`) {
			t.Fatalf("submit did not take the shared nats-url:\n%s", r.stdout)
		}
	}
	os.WriteFile(settings, []byte("concurency = 3\n"), 0o644) // no command has it
	if r := run("RERANK_CONFIG="+settings, "submit", "--print-config"); r.code != 2 || !strings.Contains(r.stderr, "concurency") {
		t.Fatalf("a key no command has: %+v", r)
	}
	// inject --config is the model's rerank.json, even beside RERANK_CONFIG.
	rj := filepath.Join(dir, "rerank.json")
	os.WriteFile(rj, []byte(`{"name": "bm25", "preset": "all-MiniLM-L12-v3-bm25"}`), 0o644)
	os.WriteFile(settings, []byte("concurrency = 3\n"), 0o644)
	r := run("RERANK_CONFIG="+settings, "inject", "--config", rj, "-")
	if r.code != 0 || !strings.Contains(r.stdout, `"text_a":"28 [SEP] what is the capital of france"`) {
		t.Fatalf("inject --config rerank.json: %+v", r)
	}
	// A preset that writes no score says so when the job's scores go unread.
	r = run("X=1", "inject", "--preset", "all-MiniLM-L12-v2.1-bm25added", "-")
	if r.code != 0 || strings.Contains(r.stdout, "[SEP]") || !strings.Contains(r.stderr, "writes no first-stage score") {
		t.Fatalf("plain preset on a job with scores: %+v", r)
	}
}

// Every command prints its effective settings with --print-config, and
// does nothing else (version has no settings to print).
func TestPrintConfigOnEveryCommand(t *testing.T) {
	for _, c := range commands {
		r := runCmd(t, "", c.name, "--print-config")
		if r.code != 0 || r.stderr != "" || c.name != "version" && !strings.Contains(r.stdout, " = ") {
			t.Errorf("%s --print-config: %+v", c.name, r)
		}
	}
}

// The binary finds ONNX Runtime and the demo model beside its own
// installation (bin/rerank of a checkout), from any working directory.
func TestFilesFoundRelativeToTheBinary(t *testing.T) {
	bin, tiny := binary(t)
	root := t.TempDir()
	for _, d := range []string{"bin", ".cache/onnxruntime/" + model.ORTVersion, ".cache/models"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin", "rerank"), b, 0o755)
	os.Symlink(testenv.ORTLib(t), filepath.Join(root, ".cache/onnxruntime", model.ORTVersion, "libonnxruntime.so.1"))
	os.Symlink(tiny, filepath.Join(root, ".cache/models/demo"))
	job, _ := filepath.Abs("../../examples/job-plain.json")
	cmd := exec.Command(filepath.Join(root, "bin", "rerank"), "run", job)
	cmd.Dir = t.TempDir()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, model.EnvLibrary+"=") && !strings.HasPrefix(kv, "RERANK_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.Output()
	var res schemas.Result
	if err != nil || json.Unmarshal(out, &res) != nil || res.Error != nil || res.Model != "demo" || len(res.Results) == 0 {
		t.Fatalf("run from elsewhere: %v\n%s", err, out)
	}
}

// run serves its one model: a job that names another (examples/ name
// demo) runs on it, with a note; the table has no worker's attempt.
func TestRunTakesTheModelItLoaded(t *testing.T) {
	_, tiny := binary(t)
	r := runCmd(t, "", "run", "--table", "--model", tiny, "../../examples/job-plain.json")
	if r.code != 0 || !strings.Contains(r.stderr, `names model "demo"; running it on "tiny"`) || strings.Contains(r.stdout, "attempt") || !strings.Contains(r.stdout, "RANK") {
		t.Fatalf("%+v", r)
	}
	// Input that is neither JSON nor msgpack says which it wanted.
	if r := runCmd(t, "hello\n", "run", "--model", tiny, "-"); r.code != 2 || !strings.Contains(r.stderr, "neither a JSON job") {
		t.Fatalf("hello: %+v", r)
	}
}

// `rerank version` and `rerank --version` say which build this is: the
// test binary is built from this checkout, so git stamped its revision.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := runCmd(t, "", args...)
		if r.code != 0 || !regexp.MustCompile(`(?m)^rerank \S+\nrevision +[0-9a-f]{40}`).MatchString(r.stdout) ||
			!strings.Contains(r.stdout, "\ngo           go1.") || !strings.Contains(r.stdout, "onnxruntime  "+model.ORTVersion) {
			t.Fatalf("%v: %+v", args, r)
		}
	}
}
