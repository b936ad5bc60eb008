package eval

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func checkScores(t *testing.T, what string, got, want Scores) {
	t.Helper()
	for m := range NumMetrics {
		if !near(got[m], want[m]) {
			t.Errorf("%s %s = %.15g, want %.15g", what, m, got[m], want[m])
		}
	}
}

func readFixture(t *testing.T) (Qrels, *Run) {
	t.Helper()
	qf, err := os.Open("testdata/qrels.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer qf.Close()
	qrels, err := ReadQrels(qf)
	if err != nil {
		t.Fatal(err)
	}
	rf, err := os.Open("testdata/run.trec")
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	run, err := ReadRun(rf, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return qrels, run
}

func docs(e []Entry) []string {
	out := make([]string, len(e))
	for i, x := range e {
		out[i] = x.Doc
	}
	return out
}

func TestReadRunRanksLikeTrecEval(t *testing.T) {
	_, run := readFixture(t)
	if want := []string{"1", "2", "3", "5"}; !slices.Equal(run.Order, want) {
		t.Fatalf("order %v, want %v", run.Order, want)
	}
	// d1 and d4 tie at 2.0: trec_eval breaks the tie by docno descending,
	// so d4 comes first although the file (and its rank column) lists d1 first.
	if got, want := docs(run.Entries["1"]), []string{"d2", "d4", "d1", "d3", "d5"}; !slices.Equal(got, want) {
		t.Fatalf("query 1 ranked %v, want %v", got, want)
	}
	if got := docs(run.Depth("5", 3)); !slices.Equal(got, []string{"g01", "g02", "g03"}) {
		t.Fatalf("depth 3 of query 5: %v", got)
	}
	cut, err := ReadRun(strings.NewReader("q Q0 b 1 1 t\nq Q0 a 2 1 t\nq Q0 c 3 5 t\n"), nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Ranked c (5), b (1, "b" > "a"), a; the depth cut applies after ranking.
	if got := docs(cut.Entries["q"]); !slices.Equal(got, []string{"c", "b"}) {
		t.Fatalf("cut run %v", got)
	}
}

// TestFixtureMetrics checks every metric on testdata/ against values worked
// out by hand. log2(2)=1, log2(3)=1.5849625007, log2(4)=2, log2(5)=2.3219280949.
func TestFixtureMetrics(t *testing.T) {
	qrels, run := readFixture(t)

	// Threshold 1 (MS MARCO's convention).
	ev := Evaluate(qrels, run, 0, 1)
	// Query 3 has no qrels and query 4 no results: trec_eval evaluates the
	// queries in both, and so do we. Query 2 (judged, nothing relevant) counts.
	if want := []string{"1", "2", "5"}; !slices.Equal(ev.Queries, want) {
		t.Fatalf("evaluated %v, want %v", ev.Queries, want)
	}
	// Query 1, ranked d2(rel 0) d4(unjudged) d1(rel 1) d3(rel 2) d5(unjudged);
	// relevant (rel >= 1): d1, d3 and the unretrieved d9, so 3 relevant.
	//   MRR@10: first relevant d1 at rank 3            → 1/3
	//   MAP: (1/3 at d1 + 2/4 at d3) / 3 relevant      → 0.8333333/3 = 0.2777777778
	//   R@100 = R@1000: 2 of 3 retrieved               → 0.6666666667
	//   nDCG@10: DCG = 1/log2(3+1) + 2/log2(4+1) = 0.5 + 0.8613531161 = 1.3613531161
	//            ideal gains 2,1,1 (d3, d1, d9): 2/1 + 1/1.5849625007 + 1/2 = 3.1309297536
	//            nDCG = 1.3613531161 / 3.1309297536      → 0.4348079399
	q1 := Scores{MRR10: 1.0 / 3, NDCG10: 1.3613531161467862 / 3.1309297535714578, MAP: (1.0/3 + 2.0/4) / 3, Recall100: 2.0 / 3, Recall1000: 2.0 / 3}
	// Query 2 judges only e1, as rel 0: nothing relevant, so every binary
	// metric is 0 (trec_eval leaves the value at 0 when num_rel is 0) and
	// nDCG is 0 (ideal DCG 0). It still counts in the mean.
	q2 := Scores{}
	// Query 5: g01..g12 scored 12..1, the one relevant g11 at rank 11.
	//   MRR@10: rank 11 is past the cut-off → 0;  MAP: (1/11)/1 = 0.0909090909
	//   R@100 = R@1000 = 1/1;  nDCG@10: nothing relevant in the top 10 → 0
	q5 := Scores{MAP: 1.0 / 11, Recall100: 1, Recall1000: 1}
	checkScores(t, "query 1", ev.PerQuery[0], q1)
	checkScores(t, "query 2", ev.PerQuery[1], q2)
	checkScores(t, "query 5", ev.PerQuery[2], q5)
	// Means over the 3 queries:
	//   MRR@10 (1/3 + 0 + 0)/3 = 0.1111111111
	//   nDCG@10 (0.4348079399 + 0 + 0)/3 = 0.1449359800
	//   MAP (0.2777777778 + 0 + 0.0909090909)/3 = 0.1228956229
	//   R@100 = R@1000 (0.6666666667 + 0 + 1)/3 = 0.5555555556
	checkScores(t, "mean", ev.Mean, Scores{MRR10: 1.0 / 9, NDCG10: 0.4348079399079101 / 3, MAP: 0.12289562289562288, Recall100: 5.0 / 9, Recall1000: 5.0 / 9})

	// Threshold 2 (TREC DL's convention for the binary metrics).
	ev = Evaluate(qrels, run, 0, 2)
	// Query 1: only d3 (rel 2, rank 4) is relevant, 1 relevant in all.
	//   MRR@10 1/4; MAP (1/4)/1 = 0.25; recall 1/1; nDCG unchanged (graded).
	checkScores(t, "query 1 at rel>=2", ev.PerQuery[0], Scores{MRR10: 0.25, NDCG10: q1[NDCG10], MAP: 0.25, Recall100: 1, Recall1000: 1})
	// Query 5: g11 is rel 1 < 2, so nothing is relevant: all 0.
	checkScores(t, "query 5 at rel>=2", ev.PerQuery[2], Scores{})
	// Means: MRR@10 = MAP = 0.25/3 = 0.0833333333, recall 1/3, nDCG as before.
	checkScores(t, "mean at rel>=2", ev.Mean, Scores{MRR10: 0.25 / 3, NDCG10: q1[NDCG10] / 3, MAP: 0.25 / 3, Recall100: 1.0 / 3, Recall1000: 1.0 / 3})

	// Depth 3 (trec_eval -M 3) drops d3 from query 1:
	//   MAP (1/3)/3 = 0.1111111111; recall 1/3; nDCG (1/2) / 3.1309297536 = 0.1596969716
	ev = Evaluate(qrels, run, 3, 1)
	checkScores(t, "query 1 at depth 3", ev.PerQuery[0], Scores{MRR10: 1.0 / 3, NDCG10: 0.5 / 3.1309297535714578, MAP: 1.0 / 9, Recall100: 1.0 / 3, Recall1000: 1.0 / 3})
}

func TestRecallCutoffsAndMAPDepth(t *testing.T) {
	// 150 retrieved, relevant at ranks 50 and 120 (2 relevant).
	ranking := make([]string, 150)
	for i := range ranking {
		ranking[i] = fmt.Sprintf("p%d", i+1)
	}
	judged := map[string]int{"p50": 1, "p120": 1, "p7": 0, "p8": -1}
	got := Measure(ranking, judged, 1)
	// MRR@10 0 (first relevant at 50); nDCG@10 0;
	// MAP (1/50 + 2/120)/2 = (0.02 + 0.0166666667)/2 = 0.0183333333;
	// R@100 1/2 (only rank 50 is within 100); R@1000 2/2.
	checkScores(t, "ranks 50 and 120", got, Scores{MAP: (1.0/50 + 2.0/120) / 2, Recall100: 0.5, Recall1000: 1})
}

func TestNDCGIdealIsCutAtTen(t *testing.T) {
	// Twelve rel-1 passages retrieved at ranks 1..12: the ideal DCG@10 has
	// the same ten gains of 1 in the same places, so nDCG@10 = 1 exactly.
	var ranking []string
	judged := map[string]int{}
	for i := range 12 {
		d := fmt.Sprintf("r%02d", i)
		ranking = append(ranking, d)
		judged[d] = 1
	}
	if got := Measure(ranking, judged, 1); got[NDCG10] != 1 {
		t.Fatalf("nDCG@10 = %v, want 1", got[NDCG10])
	}
	// Graded: rel 1 at ranks 1-3, the rel-3 passage at rank 11.
	//   DCG@10 = 1/1 + 1/log2(3) + 1/log2(4) = 1 + 0.6309297536 + 0.5 = 2.1309297536
	//   ideal (3,1,1,1) = 3/1 + 1/log2(3) + 1/log2(4) + 1/log2(5)
	//                   = 3 + 0.6309297536 + 0.5 + 0.4306765581 = 4.5616063116
	//   nDCG@10 = 2.1309297536 / 4.5616063116 = 0.4671445995
	ranking = []string{"a", "b", "c", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "top"}
	judged = map[string]int{"a": 1, "b": 1, "c": 1, "top": 3}
	got := Measure(ranking, judged, 1)
	dcg := 1 + 1/math.Log2(3) + 0.5
	ideal := 3 + 1/math.Log2(3) + 0.5 + 1/math.Log2(5)
	if !near(got[NDCG10], dcg/ideal) || math.Abs(got[NDCG10]-0.4671445995) > 1e-10 {
		t.Fatalf("nDCG@10 = %.10f, want %.10f (0.4671445995)", got[NDCG10], dcg/ideal)
	}
	// Same ranking at threshold 2: "top" is the only relevant one, at 11.
	//   MRR@10 0, MAP 1/11, recall 1; nDCG unchanged.
	checkScores(t, "threshold 2", Measure(ranking, judged, 2), Scores{NDCG10: dcg / ideal, MAP: 1.0 / 11, Recall100: 1, Recall1000: 1})
}

func TestReadErrors(t *testing.T) {
	for _, tc := range []struct{ name, run, want string }{
		{"duplicate docno", "1 Q0 a 1 2 t\n1 Q0 a 2 1 t\n", "retrieved twice"},
		{"msmarco 3-column", "1\ta\t1\n", "TREC format"},
		{"NaN score", "1 Q0 a 1 NaN t\n", "finite"},
		{"bad score", "1 Q0 a 1 x t\n", "finite"},
	} {
		if _, err := ReadRun(strings.NewReader(tc.run), nil, 0); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	if _, err := ReadQrels(strings.NewReader("1 0 a 1\n1 0 a 0\n")); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate judgment: %v", err)
	}
	if _, err := ReadQrels(strings.NewReader("1 0 a x\n")); err == nil {
		t.Error("non-integer relevance accepted")
	}
	if _, _, err := ReadTSV(strings.NewReader("no tab here\n"), nil); err == nil {
		t.Error("TSV line without a tab accepted")
	}
	// A run restricted to some queries keeps only those.
	run, err := ReadRun(strings.NewReader("1 Q0 a 1 2 t\n2 Q0 b 1 2 t\n"), Set{"2": {}}, 0)
	if err != nil || !slices.Equal(run.Order, []string{"2"}) || len(run.Entries) != 1 {
		t.Fatalf("filtered run %+v, %v", run, err)
	}
}
