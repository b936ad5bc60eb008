package eval_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/eval"
	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

var (
	fixtureOnce sync.Once
	fixtureRT   *model.Runtime
	fixtureErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureRT != nil {
		fixtureRT.Close()
	}
	testfixture.Cleanup(false)
	os.Exit(code)
}

// tinyModel loads the tiny random-weight cross-encoder (written once per
// test binary) through ONNX Runtime.
func tinyModel(t *testing.T) *model.Model {
	t.Helper()
	lib, dir := testenv.ORTLib(t), testfixture.TinyModel(t)
	fixtureOnce.Do(func() { fixtureRT, fixtureErr = model.OpenRuntime(lib) })
	if fixtureErr != nil {
		t.Fatalf("opening ONNX Runtime: %v", fixtureErr)
	}
	m, err := fixtureRT.Load(dir, model.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// --- the synthetic collection ------------------------------------------------
//
// 20 judged queries × 30 retrieved passages, plus one unjudged query (in the
// run only), one judged query the run lacks, and 100 decoy passages nobody
// retrieves. Query i (0-19) retrieves pid(i,k), k = 0..29, with BM25-like
// score 40.25-k (rank k+1), except that query 10 ties k=0 and k=1 at 39.25.
// The qrels are laid out so the first stage's metrics are known by hand:
//
//	i 0-9   pid(i,0) rel 2 at rank 1 (query 0 also pid(0,1) rel 1 at rank 2)
//	        → MRR 1, MAP 1, nDCG 1, recall 1 (query 0: AP (1/1+2/2)/2 = 1,
//	          DCG = ideal = 2/1 + 1/log2(3))
//	i 10-14 one rel-1 passage at rank 2 (query 10: pid(10,0), second only by
//	        trec_eval's tie-break, docno "101001" > "101000")
//	        → MRR 1/2, MAP 1/2, nDCG 1/log2(3) = 0.6309297536, recall 1
//	i 15-17 the one relevant passage, pid(i,50), was not retrieved → all 0
//	i 18    rel-1 passages at ranks 3 and 11
//	        → MRR 1/3, MAP (1/3 + 2/11)/2 = 17/66 = 0.2575757576,
//	          nDCG@10 (1/log2(4)) / (1 + 1/log2(3)) = 0.5/1.6309297536 = 0.3065735964,
//	          recall 2/2
//	i 19    (qid "x.1020", which a job id may not hold) judges two passages rel 0 only
//	        → nothing relevant: all 0, and it counts
//
// Means over the 20 queries:
//
//	MRR@10  (10·1 + 5·0.5 + 1/3) / 20 = 12.8333333333/20 = 0.6416666667
//	MAP     (10·1 + 5·0.5 + 17/66) / 20 = 12.7575757576/20 = 0.6378787879
//	nDCG@10 (10·1 + 5·0.6309297536 + 0.3065735964) / 20 = 13.4612223642/20 = 0.6730611182
//	R@100 = R@1000  (15·1 + 1) / 20 = 0.8
var wantFirstStage = eval.Scores{
	eval.MRR10:      (10 + 2.5 + 1.0/3) / 20,
	eval.MAP:        (10 + 2.5 + 17.0/66) / 20,
	eval.NDCG10:     (10 + 5/math.Log2(3) + 0.5/(1+1/math.Log2(3))) / 20,
	eval.Recall100:  0.8,
	eval.Recall1000: 0.8,
}

const (
	judgedQueries = 20
	perQuery      = 30
)

func qid(i int) string {
	switch i {
	case 19:
		return "x.1020"
	}
	return strconv.Itoa(1001 + i)
}

func pid(i, k int) string { return strconv.Itoa(100000 + i*100 + k) }

var vocabulary = strings.Fields(`retrieval passage ranking bm25 score query answer capital city river
	mountain protein energy history museum coffee language network storage engine model weights
	tokenizer vector dense sparse index document judge relevant search`)

func words(r *rand.Rand, n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = vocabulary[r.IntN(len(vocabulary))]
	}
	return strings.Join(w, " ")
}

type dataset struct {
	files eval.Files
	dir   string
}

// writeDataset writes the synthetic collection's files. dprDepth bounds the
// DPR run to the top dprDepth passages of each query (0: no DPR run).
func writeDataset(t *testing.T, dprDepth int) dataset {
	t.Helper()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 11))
	var queries, coll, run, dpr, qrels strings.Builder
	rel := func(i, k, level int) { fmt.Fprintf(&qrels, "%s 0 %s %d\n", qid(i), pid(i, k), level) }
	for i := 0; i <= judgedQueries; i++ { // query 20 ("1021") is the unjudged one
		fmt.Fprintf(&queries, "%s\t%s\n", qid(i), words(r, 3+r.IntN(5)))
		for k := 0; k < perQuery; k++ {
			fmt.Fprintf(&coll, "%s\t%s\n", pid(i, k), words(r, 20+r.IntN(40)))
			score := 40.25 - float64(k)
			if i == 10 && k == 0 {
				score = 39.25 // ties with k=1
			}
			fmt.Fprintf(&run, "%s Q0 %s %d %g bm25\n", qid(i), pid(i, k), k+1, score)
			if k < dprDepth {
				fmt.Fprintf(&dpr, "%s Q0 %s %d %g dpr\n", qid(i), pid(i, k), k+1, 80.5-2*float64(k))
			}
		}
		switch {
		case i <= 9:
			rel(i, 0, 2)
			rel(i, 5, 0)
			if i == 0 {
				rel(i, 1, 1)
			}
		case i == 10:
			rel(i, 0, 1)
		case i <= 14:
			rel(i, 1, 1)
			rel(i, 5, 0)
		case i <= 17:
			rel(i, 50, 1)
			rel(i, 3, 0)
			fmt.Fprintf(&coll, "%s\t%s\n", pid(i, 50), words(r, 30))
		case i == 18:
			rel(i, 2, 1)
			rel(i, 10, 1)
		case i == 19:
			rel(i, 0, 0)
			rel(i, 1, 0)
		}
	}
	fmt.Fprintf(&queries, "1022\tjudged but not retrieved\n")
	fmt.Fprintf(&qrels, "1022 0 999999 1\n")
	for d := 0; d < 100; d++ {
		fmt.Fprintf(&coll, "%d\t%s\n", 200000+d, words(r, 25))
	}
	ds := dataset{dir: dir, files: eval.Files{
		Queries:    filepath.Join(dir, "queries.tsv"),
		Collection: filepath.Join(dir, "collection.tsv"),
		Run:        filepath.Join(dir, "bm25.trec"),
		Qrels:      filepath.Join(dir, "qrels.txt"),
	}}
	files := map[string]string{ds.files.Queries: queries.String(), ds.files.Collection: coll.String(), ds.files.Run: run.String(), ds.files.Qrels: qrels.String()}
	if dprDepth > 0 {
		ds.files.DPRRun = filepath.Join(dir, "dpr.trec")
		files[ds.files.DPRRun] = dpr.String()
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ds
}

// --- the service -------------------------------------------------------------

// startService runs an embedded JetStream server and a worker serving the
// tiny model as "tiny" with the given input format, and returns a client
// connection.
func startService(t *testing.T, ic *inject.Config) *nats.Conn {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	p, err := pipeline.New(pipeline.Config{MaxBatchDelay: time.Millisecond}, pipeline.Model{Name: "tiny", Scorer: tinyModel(t), Inject: ic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	testfixture.StartWorker(t, ns.ClientURL(), p, worker.Config{Provision: true, AckWait: 10 * time.Second, Concurrency: 4,
		ShutdownGrace: 5 * time.Second, FetchWait: 200 * time.Millisecond, WorkerID: "eval-test"})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := js.Consumer(context.Background(), schemas.JobsStream, worker.ConsumerName("tiny")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not provision its consumer")
		}
	}
	return nc
}

// natsReranker is what cmd/rerank plugs in: SubmitAsync, then wait.
type natsReranker struct{ c *client.Client }

func (n natsReranker) Rerank(ctx context.Context, job *schemas.Job) (*schemas.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	p, err := n.c.SubmitAsync(ctx, job)
	if err != nil {
		return nil, err
	}
	return p.Result(ctx)
}

func checkScoresNear(t *testing.T, what string, got, want eval.Scores) {
	t.Helper()
	for m := range eval.NumMetrics {
		if math.Abs(got[m]-want[m]) > 1e-12 {
			t.Errorf("%s %s = %.12f, want %.12f", what, m, got[m], want[m])
		}
	}
}

// TestEndToEndThroughWorker evaluates the synthetic collection through a
// real JetStream server, worker, pipeline and the tiny random-weight model,
// with the BM25-injecting input format (so every job must carry bm25). The
// model's scores are random: the test checks structure, not quality.
func TestEndToEndThroughWorker(t *testing.T) {
	ds := writeDataset(t, 0)
	ic, err := inject.Preset("all-MiniLM-L12-v3-bm25")
	if err != nil {
		t.Fatal(err)
	}
	nc := startService(t, ic)
	c, err := client.New(nc, client.Options{Model: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := eval.Options{Depth: eval.DefaultDepth, RelThreshold: 1}
	in, st, err := eval.Load(ctx, ds.files, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Only the judged queries' retrieved passages are kept: 20 × 30 of the
	// 21 × 30 + 3 + 100 passages in the collection.
	if st.Selected != judgedQueries || st.Collection.Lines != 21*perQuery+3+100 || st.Collection.Kept != judgedQueries*perQuery || len(in.Texts) != judgedQueries*perQuery {
		t.Fatalf("load stats %+v", st)
	}

	var out bytes.Buffer
	var last eval.Progress
	runner := &eval.Runner{Reranker: natsReranker{c}, Options: opts, Inflight: 4, Out: &out, Model: "tiny",
		Progress: func(p eval.Progress) { last = p }}
	start := time.Now()
	rep, err := runner.Run(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("evaluated in %s:\n%s%s", time.Since(start).Round(time.Millisecond), table.String(), rep.Summary())

	// Every judged query answered; the unjudged one ("1021") not asked.
	if rep.Reranked != judgedQueries || len(rep.Queries) != judgedQueries || rep.Pairs != judgedQueries*perQuery || rep.JudgedNotInRun != 1 {
		t.Fatalf("report: reranked %d, evaluated %d, pairs %d, judged-not-in-run %d", rep.Reranked, len(rep.Queries), rep.Pairs, rep.JudgedNotInRun)
	}
	if last.Done != judgedQueries || last.Pairs != last.TotalPairs {
		t.Fatalf("last progress %+v", last)
	}
	// The first stage scores exactly the hand-computed values.
	checkScoresNear(t, "first stage", rep.FirstMean, wantFirstStage)
	// Every score is a proportion, every p-value a probability.
	for i, q := range rep.Queries {
		for m := range eval.NumMetrics {
			if v := rep.Rerank[i][m]; v < 0 || v > 1 || math.IsNaN(v) {
				t.Fatalf("query %s %s = %v", q, m, v)
			}
		}
	}
	for m := range eval.NumMetrics {
		if v := rep.RerankMean[m]; v < 0 || v > 1 {
			t.Fatalf("mean %s = %v", m, v)
		}
		if p := rep.Tests[m].P; !(p >= 0 && p <= 1) {
			t.Fatalf("%s p = %v", m, p)
		}
	}
	// Re-ranking the whole depth cannot change recall at 100 or 1,000.
	if rep.RerankMean[eval.Recall100] != 0.8 || rep.RerankMean[eval.Recall1000] != 0.8 || rep.Tests[eval.Recall1000].P != 1 {
		t.Fatalf("recall changed: %v, %+v", rep.RerankMean, rep.Tests[eval.Recall1000])
	}

	// The written run: 30 lines per judged query, ranks 1..30 in order,
	// scores non-increasing, the original query ids, tag "rerank".
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != judgedQueries*perQuery {
		t.Fatalf("%d lines written", len(lines))
	}
	perQ := map[string][]string{}
	var order []string
	prev := map[string]float64{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 6 || f[1] != "Q0" || f[5] != "rerank" {
			t.Fatalf("line %q", l)
		}
		if len(perQ[f[0]]) == 0 {
			order = append(order, f[0])
		}
		perQ[f[0]] = append(perQ[f[0]], f[2])
		if rank, _ := strconv.Atoi(f[3]); rank != len(perQ[f[0]]) {
			t.Fatalf("line %q: rank out of order", l)
		}
		score, _ := strconv.ParseFloat(f[4], 64)
		if p, ok := prev[f[0]]; ok && score > p {
			t.Fatalf("line %q: score above the previous line's %v", l, p)
		}
		prev[f[0]] = score
	}
	wantOrder := make([]string, judgedQueries)
	for i := range wantOrder {
		wantOrder[i] = qid(i)
	}
	if !slices.Equal(order, wantOrder) {
		t.Fatalf("queries written in order %v", order)
	}
	for q, d := range perQ {
		if len(d) != perQuery {
			t.Fatalf("query %s: %d lines", q, len(d))
		}
	}
	// trec_eval's view of the written file is the report's.
	written, err := eval.ReadRun(strings.NewReader(out.String()), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkScoresNear(t, "written run", eval.Evaluate(in.Qrels, written, 0, 1).Mean, rep.RerankMean)
}

// TestEndToEndLocalWithDPR runs the in-process pipeline (what --local
// plugs in) with a model that injects both bm25 and dpr, from a DPR run
// that scores only the top 25 of each query's 30 candidates.
func TestEndToEndLocalWithDPR(t *testing.T) {
	ds := writeDataset(t, 25)
	ic, err := inject.Resolve("", []byte(`{"preset": "all-MiniLM-L12-v3-bm25dpr", "scores": {"dpr": {"min": 0, "max": 100}}}`))
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := pipeline.New(pipeline.Config{}, pipeline.Model{Name: "tiny", Scorer: tinyModel(t), Inject: ic})
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Close()
	local := eval.RerankerFunc(func(ctx context.Context, job *schemas.Job) (*schemas.Result, error) {
		return pipe.Rerank(ctx, "tiny", job, time.Time{})
	})
	ctx := context.Background()

	// By default a candidate without a dpr score is left without one, and
	// the model rejects the job, naming the candidate.
	opts := eval.Options{Depth: perQuery}
	in, st, err := eval.Load(ctx, ds.files, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.DPRMissing != judgedQueries*5 {
		t.Fatalf("dpr missing for %d candidates, want %d", st.DPRMissing, judgedQueries*5)
	}
	_, err = (&eval.Runner{Reranker: local, Options: opts}).Run(ctx, in)
	if err == nil || !strings.Contains(err.Error(), "missing_score") {
		t.Fatalf("err %v, want missing_score", err)
	}

	// With --dpr-missing min every job succeeds; with depth 25 no candidate
	// lacks a score in the first place.
	for _, opts := range []eval.Options{{Depth: perQuery, DPRMissing: eval.DPRMin}, {Depth: 25}} {
		in, _, err := eval.Load(ctx, ds.files, opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := (&eval.Runner{Reranker: local, Options: opts, Model: "tiny"}).Run(ctx, in)
		if err != nil {
			t.Fatalf("%+v: %v", opts, err)
		}
		if rep.Reranked != judgedQueries || rep.Pairs != judgedQueries*opts.Depth {
			t.Fatalf("%+v: report %+v", opts, rep)
		}
		if opts.Depth == perQuery {
			checkScoresNear(t, "first stage", rep.FirstMean, wantFirstStage)
		}
	}
}
