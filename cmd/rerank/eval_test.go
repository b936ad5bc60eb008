package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rerank eval --local, as docs/evaluation.md runs it: two queries of five
// passages each; the table names every metric for both runs, the written
// run holds every re-ranked passage in TREC format, and a missing input
// or a bad depth is a usage error (exit 2) before anything is read.
func TestEvalLocal(t *testing.T) {
	_, tiny := binary(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var coll, run, qrels strings.Builder
	for q := 1; q <= 2; q++ {
		for p := 1; p <= 5; p++ {
			pid := fmt.Sprintf("%d%02d", q, p)
			fmt.Fprintf(&coll, "%s\tpassage %d about topic %d, with some words\n", pid, p, q)
			fmt.Fprintf(&run, "%d Q0 %s %d %.1f bm25\n", q, pid, p, 20-float64(p))
		}
		fmt.Fprintf(&qrels, "%d 0 %d03 1\n", q, q)
	}
	args := []string{"eval", "--local", "--model", "demo=" + tiny,
		"--queries", write("queries.tsv", "1\twhat is topic one\n2\twhat is topic two\n"),
		"--collection", write("collection.tsv", coll.String()),
		"--run", write("run.trec", run.String()),
		"--qrels", write("qrels.txt", qrels.String())}
	out := filepath.Join(dir, "reranked.trec")
	r := runCmd(t, "", append(args, "--out", out)...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	// The relevant passage is third in the first stage: MRR@10 1/3, and
	// nDCG@10 1/log2(4) = 0.5, computed by hand.
	for _, want := range []string{"MRR@10   0.3333", "nDCG@10  0.5000", "MAP      0.3333", "R@100    1.0000", "R@1000"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the table has no %s:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "run written to "+out) {
		t.Errorf("the summary does not name the run file: %s", r.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 10 {
		t.Fatalf("the written run has %d lines, want 10:\n%s", len(lines), b)
	}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) != 6 || f[1] != "Q0" || f[5] != "rerank" {
			t.Fatalf("not a TREC run line: %q", l)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".reranked.trec.*")); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	for _, bad := range [][]string{
		{"eval", "--local", "--queries", "q"},
		append(append([]string{}, args...), "--depth", "0"),
	} {
		if r := runCmd(t, "", bad...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", bad[1:], r.code, r.stderr)
		}
	}
}
