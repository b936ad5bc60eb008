package eval

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// synthCollection generates "pid<TAB>text" lines on the fly, so a large
// collection can be streamed without ever existing in memory or on disk.
type synthCollection struct {
	n, i    int
	text    []byte
	line    []byte
	pending []byte
	bytes   int64
}

func newSynthCollection(n, textBytes int) *synthCollection {
	return &synthCollection{n: n, text: []byte(strings.Repeat("lorem ipsum ", textBytes/12+1)[:textBytes])}
}

func (g *synthCollection) Read(p []byte) (int, error) {
	for len(g.pending) == 0 {
		if g.i == g.n {
			return 0, io.EOF
		}
		g.line = strconv.AppendInt(g.line[:0], int64(g.i), 10)
		g.line = append(g.line, '\t')
		g.line = append(g.line, g.text...)
		g.line = strconv.AppendInt(g.line, int64(g.i), 10)
		g.line = append(g.line, '\n')
		g.pending = g.line
		g.i++
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	g.bytes += int64(n)
	return n, nil
}

// TestCollectionStreamsKeepingOnlyReferencedPassages streams a 64 MiB
// collection (200,000 passages of 320 bytes) wanting 50 of them: only those
// 50 are kept, and the pass allocates a few hundred KiB at most (the
// scanner's buffer and the 50 texts), not a copy of each line.
func TestCollectionStreamsKeepingOnlyReferencedPassages(t *testing.T) {
	const n, size = 200_000, 320
	want := Set{}
	for i := 0; i < n; i += n / 50 {
		want.Add(strconv.Itoa(i))
	}
	want.Add("not-in-collection")
	gen := newSynthCollection(n, size)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	texts, st, err := ReadTSV(gen, want)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if st.Lines != n || st.Kept != 50 || len(texts) != 50 {
		t.Fatalf("scanned %d lines, kept %d (map %d); want %d and 50", st.Lines, st.Kept, len(texts), n)
	}
	for id, text := range texts {
		if !want.Has(id) || !strings.HasSuffix(text, id) || len(text) != size+len(id) {
			t.Fatalf("kept %q → %q", id, text[:20])
		}
	}
	if _, ok := texts["1"]; ok {
		t.Fatal("kept a passage nobody asked for")
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("streamed %.1f MiB, allocated %.1f KiB", float64(gen.bytes)/(1<<20), float64(allocated)/(1<<10))
	if gen.bytes < 60<<20 {
		t.Fatalf("only %d bytes streamed", gen.bytes)
	}
	if allocated > 2<<20 {
		t.Fatalf("reading the collection allocated %d bytes: lines not wanted are being copied", allocated)
	}
}

func TestReadTSV(t *testing.T) {
	in := "1\tfirst query\r\n\n2\twith\ttab\n3\tbad \xff byte\n"
	got, st, err := ReadTSV(strings.NewReader(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Lines != 3 || got["1"] != "first query" || got["2"] != "with\ttab" || got["3"] != "bad \uFFFD byte" {
		t.Fatalf("got %q, %+v", got, st)
	}
	if _, _, err := ReadTSV(strings.NewReader("1\ta\n1\tb\n"), nil); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate id: %v", err)
	}
	// A duplicate of an id nobody wants is not an error: it is never looked at.
	if _, _, err := ReadTSV(strings.NewReader("1\ta\n1\tb\n2\tc\n"), Set{"2": {}}); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoadIndexesOnlyWhatTheRunNeeds: Load reads the run first and then
// keeps only the selected queries and the passages they retrieve (to depth).
func TestLoadIndexesOnlyWhatTheRunNeeds(t *testing.T) {
	dir := t.TempDir()
	// q1 and q2 are judged; q3 is not (not re-ranked by default).
	writeFile(t, filepath.Join(dir, "qrels"), "q1 0 p1 1\nq2 0 p5 2\nq9 0 p1 1\n")
	writeFile(t, filepath.Join(dir, "run"), strings.Join([]string{
		"q1 Q0 p1 1 9 bm25", "q1 Q0 p2 2 8 bm25", "q1 Q0 p3 3 7 bm25",
		"q2 Q0 p4 1 9 bm25", "q2 Q0 p5 2 8 bm25", "q2 Q0 p6 3 7 bm25",
		"q3 Q0 p7 1 9 bm25", "q3 Q0 p8 2 8 bm25",
	}, "\n")+"\n")
	writeFile(t, filepath.Join(dir, "dpr"), "q1 Q0 p1 1 80 dpr\nq1 Q0 p9 2 70 dpr\nq2 Q0 p4 1 60 dpr\nq3 Q0 p7 1 60 dpr\n")
	writeFile(t, filepath.Join(dir, "queries"), "q1\tfirst\nq2\tsecond\nq3\tthird\nq4\tfourth\n")
	var coll strings.Builder
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&coll, "p%d\tpassage number %d\n", i, i)
	}
	// The collection is gzipped, as it may be on disk.
	f, err := os.Create(filepath.Join(dir, "collection.tsv.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	io.WriteString(zw, coll.String())
	zw.Close()
	f.Close()

	files := Files{Queries: filepath.Join(dir, "queries"), Collection: filepath.Join(dir, "collection.tsv.gz"),
		Run: filepath.Join(dir, "run"), DPRRun: filepath.Join(dir, "dpr"), Qrels: filepath.Join(dir, "qrels")}
	var msgs []string
	in, st, err := Load(context.Background(), files, Options{Depth: 2}, func(s string) { msgs = append(msgs, s) })
	if err != nil {
		t.Fatal(err)
	}
	// Depth 2: q1 needs p1, p2; q2 needs p4, p5.
	if st.Selected != 2 || st.Candidates != 4 || st.Passages != 4 || st.Collection.Lines != 1000 || st.Collection.Kept != 4 || len(in.Texts) != 4 {
		t.Fatalf("stats %+v, %d texts", st, len(in.Texts))
	}
	for _, p := range []string{"p1", "p2", "p4", "p5"} {
		if in.Texts[p] != "passage number "+p[1:] {
			t.Fatalf("text of %s = %q", p, in.Texts[p])
		}
	}
	if len(in.Queries) != 2 || in.Queries["q1"] != "first" || in.Queries["q2"] != "second" {
		t.Fatalf("queries kept: %v", in.Queries)
	}
	// The DPR run is kept for the selected queries only, whole (p9 is
	// beyond the first stage's candidates but costs nothing); p2 and p5 lack
	// a dpr score.
	if len(in.DPR.Entries) != 2 || len(in.DPR.Entries["q1"]) != 2 || st.DPRMissing != 2 {
		t.Fatalf("dpr %+v, missing %d", in.DPR.Entries, st.DPRMissing)
	}
	if len(msgs) == 0 {
		t.Fatal("no status messages")
	}

	// With --rerank-unjudged, q3 and its passages are loaded too.
	in, st, err = Load(context.Background(), files, Options{Depth: 2, RerankUnjudged: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Selected != 3 || len(in.Texts) != 6 || in.Queries["q3"] != "third" {
		t.Fatalf("unjudged: stats %+v", st)
	}

	// A passage missing from the collection is named.
	writeFile(t, filepath.Join(dir, "small"), "p1\tx\np2\ty\np4\tz\n")
	files.Collection = filepath.Join(dir, "small")
	if _, _, err := Load(context.Background(), files, Options{Depth: 2}, nil); err == nil || !strings.Contains(err.Error(), "p5") {
		t.Fatalf("missing passage: %v", err)
	}
	// A query missing from the queries file is named.
	writeFile(t, filepath.Join(dir, "fewq"), "q1\tfirst\n")
	files.Collection, files.Queries = filepath.Join(dir, "collection.tsv.gz"), filepath.Join(dir, "fewq")
	if _, _, err := Load(context.Background(), files, Options{Depth: 2}, nil); err == nil || !strings.Contains(err.Error(), "q2") {
		t.Fatalf("missing query: %v", err)
	}
	// No overlap between run and qrels is an error, not an empty report.
	writeFile(t, filepath.Join(dir, "otherqrels"), "x 0 p1 1\n")
	files.Queries, files.Qrels = filepath.Join(dir, "queries"), filepath.Join(dir, "otherqrels")
	if _, _, err := Load(context.Background(), files, Options{}, nil); err == nil || !strings.Contains(err.Error(), "same query set") {
		t.Fatalf("disjoint qrels: %v", err)
	}
	// A cancelled context stops the reading.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	files.Qrels = filepath.Join(dir, "qrels")
	if _, _, err := Load(ctx, files, Options{}, nil); err == nil {
		t.Fatal("cancelled load succeeded")
	}
}
