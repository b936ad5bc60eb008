package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/testmodel"
)

// docExample is what TestDocExamples does with one ```sh block of the docs,
// found by its first line: run it as written and check its output, or skip
// it for a stated reason.
type docExample struct {
	file, first string
	skip        string
	// check looks at the block's output: its JSON values in order (text
	// between them, such as a ranked table, is in text).
	check func(text string, values []any) error
	// serve: the block starts a worker; it runs until its banner names
	// this, then is stopped.
	serve string
}

var docExamples = []docExample{
	{file: "README.md", first: "make run ", skip: "the set-up itself: `make test` runs this test, and startServe is `make run`'s `rerank serve`"},
	{file: "README.md", first: "bin/rerank submit examples/job.json", check: func(text string, v []any) error {
		res, _ := field(one(v), "results").([]any)
		if !strings.Contains(text, "RANK") || len(res) != 5 || field(one(v), "model") != "demo" {
			return fmt.Errorf("want a ranked table, then a result of 5 entries from demo")
		}
		return nil
	}},
	{file: "README.md", first: "curl -s http://127.0.0.1:8080/v1/rerank --json", check: rankedDocuments(2, false)},
	{file: "README.md", first: "optimum-cli export onnx", skip: "needs the Hugging Face hub, which no test machine reaches"},
	{file: "README.md", first: "bin/rerank serve --model msmarco-l12=models/msmarco-l12", serve: "rerank is serving msmarco-l12, bm25 on "},
	{file: "README.md", first: "helm install rerank deploy/helm/rerank", skip: "needs a Kubernetes cluster; deploy/helm's test renders the chart with Helm's engine"},
	{file: "docs/http.md", first: `curl -s http://127.0.0.1:8080/v1/rerank -H "Authorization: Bearer $TOKEN"`, check: rankedDocuments(2, true)},
	{file: "docs/http.md", first: "curl -s http://127.0.0.1:8080/rerank --json", check: func(_ string, v []any) error {
		arr, _ := one(v).([]any)
		if len(arr) != 2 || field(arr[0], "text") == nil || field(arr[0], "score") == nil || field(arr[0], "index") == nil {
			return fmt.Errorf("want TEI's [{index, score, text}] of 2")
		}
		return nil
	}},
	{file: "docs/http.md", first: "curl -s http://127.0.0.1:8080/v1/jobs --json @examples/job.json", check: func(_ string, v []any) error {
		// The job (example-1) was queued over NATS by README's submit
		// just before: the gateway answers it from its stored result.
		if len(v) != 2 || field(v[0], "id") != "example-1" || field(v[1], "id") != "example-1" {
			return fmt.Errorf("want the job queued as example-1 and then read back by that id")
		}
		if st := field(v[1], "status"); st != "pending" && field(v[1], "results") == nil {
			return fmt.Errorf("GET answered neither pending nor a result")
		}
		return nil
	}},
}

// TestDocExamples runs the shell examples of README.md and docs/http.md as
// written (bin/rerank is the test's binary, 127.0.0.1:8080 a live
// `rerank serve`'s gateway, RERANK_NATS_URL its NATS server) and checks
// their answers, so that the docs cannot drift from what the commands do.
// A block the table does not know fails the test.
func TestDocExamples(t *testing.T) {
	bin, tiny := binary(t)
	port, _ := natsembed.FreePort()
	p := startServe(t, t.TempDir(), port)
	root, _ := filepath.Abs("../..")
	env := append(os.Environ(), "RERANK_NATS_URL="+p.url, "TOKEN=docs-example-token")
	expand := func(block string) string {
		block = strings.ReplaceAll(block, "http://127.0.0.1:8080", p.http)
		return regexp.MustCompile(`(?m)^bin/rerank `).ReplaceAllString(block, bin+" ")
	}
	seen := map[int]bool{}
	for _, file := range []string{"README.md", "docs/http.md"} {
		for _, block := range shellBlocks(t, filepath.Join(root, file)) {
			i := findExample(file, block)
			if i < 0 {
				t.Errorf("%s: an example the test does not know: %q\nadd it to docExamples with a check (or the reason it cannot run)", file, block)
				continue
			}
			seen[i] = true
			ex := docExamples[i]
			switch {
			case ex.skip != "":
				t.Logf("%s: not run (%s): %s", file, ex.skip, firstLine(block))
			case ex.serve != "":
				runServeExample(t, ex, expand(block), tiny)
			default:
				cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", expand(block))
				cmd.Dir, cmd.Env = root, env
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				if err := cmd.Run(); err != nil {
					t.Errorf("%s: %s: %v\nstdout: %s\nstderr: %s", file, firstLine(block), err, out.String(), errb.String())
					continue
				}
				text, values := jsonValues(out.String())
				if err := ex.check(text, values); err != nil {
					t.Errorf("%s: %s: %v; it printed:\n%s", file, firstLine(block), err, out.String())
				}
			}
		}
	}
	for i, ex := range docExamples {
		if !seen[i] {
			t.Errorf("%s: no example starts %q any more: remove it from docExamples", ex.file, ex.first)
		}
	}
}

// runServeExample runs README's `rerank serve` of two exported model
// directories, in a folder where models/ holds two (the tiny model as a
// plain export, and with a rerank.json choosing a BM25-injecting preset),
// until its banner names both; then stops it with SIGTERM.
func runServeExample(t *testing.T, ex docExample, line, tiny string) {
	t.Helper()
	dir := t.TempDir()
	for _, m := range []string{"msmarco-l12", "my-v3-bm25"} {
		if err := os.CopyFS(filepath.Join(dir, "models", m), os.DirFS(tiny)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "models/my-v3-bm25", testmodel.RerankFile), []byte(`{"preset": "all-MiniLM-L12-v3-bm25"}`), 0o644)
	port, _ := natsembed.FreePort()
	cmd := exec.Command("bash", "-c", "exec "+line)
	cmd.Dir = dir
	// Run from a folder of its own: ONNX Runtime is named as README says
	// for a library outside the checkout.
	cmd.Env = append(os.Environ(), fmt.Sprintf("RERANK_LISTEN=127.0.0.1:%d", port), "RERANK_HTTP=", "RERANK_METRICS_ADDR=",
		"RERANK_DATA_DIR="+filepath.Join(dir, "nats"), model.EnvLibrary+"="+testenv.ORTLib(t))
	errb := &syncBuffer{}
	cmd.Stderr = errb
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		banner <- line
		io.Copy(io.Discard, stdout)
	}()
	select {
	case got := <-banner:
		if !strings.HasPrefix(got, ex.serve) {
			t.Errorf("README.md: %s: banner %q, want %q…\n%s", line, got, ex.serve, errb.String())
		}
	case <-time.After(60 * time.Second):
		t.Errorf("README.md: %s: no banner within 60 s\n%s", line, errb.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("README.md: %s: after SIGTERM: %v\n%s", line, err, errb.String())
	}
}

// shellBlocks returns the ```sh blocks of a Markdown file.
func shellBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?ms)^```sh\n(.*?)^```").FindAllSubmatch(b, -1) {
		out = append(out, string(m[1]))
	}
	return out
}

func findExample(file, block string) int {
	for i, ex := range docExamples {
		if ex.file == file && strings.HasPrefix(block, ex.first) {
			return i
		}
	}
	return -1
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// jsonValues splits output into the JSON values it holds (objects and
// arrays starting a line) and the rest of the text.
func jsonValues(out string) (string, []any) {
	var text strings.Builder
	var values []any
	for rest := out; rest != ""; {
		if rest[0] == '{' || rest[0] == '[' {
			dec := json.NewDecoder(strings.NewReader(rest))
			var v any
			if dec.Decode(&v) == nil {
				values = append(values, v)
				rest = strings.TrimPrefix(rest[dec.InputOffset():], "\n")
				continue
			}
		}
		line, after, _ := strings.Cut(rest, "\n")
		text.WriteString(line + "\n")
		rest = after
	}
	return text.String(), values
}

func one(v []any) any {
	if len(v) != 1 {
		return nil
	}
	return v[0]
}

func field(v any, name string) any {
	m, _ := v.(map[string]any)
	return m[name]
}

// rankedDocuments checks a Cohere answer of n results, in order of
// relevance, with the documents' text when withDocs.
func rankedDocuments(n int, withDocs bool) func(string, []any) error {
	return func(_ string, v []any) error {
		res, _ := field(one(v), "results").([]any)
		if len(res) != n {
			return fmt.Errorf("want a Cohere answer of %d results", n)
		}
		for i, r := range res {
			s, ok := field(r, "relevance_score").(float64)
			if !ok || field(r, "index") == nil || (withDocs && field(field(r, "document"), "text") == nil) {
				return fmt.Errorf("result %d lacks index, relevance_score or (asked for) its document", i)
			}
			if prev, _ := field(res[max(i-1, 0)], "relevance_score").(float64); s > prev {
				return fmt.Errorf("results not in order of relevance")
			}
		}
		return nil
	}
}
