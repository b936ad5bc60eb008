package eval

import "math"

// Metric names one measure.
type Metric int

// The measures, each defined as trec_eval (9.x) computes it. "Relevant"
// means judged with rel >= the relevance threshold (trec_eval -l, default 1).
// A docno absent from the qrels is not relevant and has gain 0.
const (
	// MRR10 is 1/rank of the first relevant passage within the top 10, else
	// 0: trec_eval -M 10 -m recip_rank, and MS MARCO's MRR@10.
	MRR10 Metric = iota
	// NDCG10 is trec_eval's ndcg_cut.10: gain = the judged relevance level
	// (graded, whatever the threshold), discount log2(rank+1), normalized by
	// the ideal DCG@10 of all the query's judged passages; 0 when that is 0.
	NDCG10
	// MAP is trec_eval's map (over the whole ranking, which is cut to the
	// evaluation depth): the sum of precision at each relevant rank, divided
	// by the number of relevant passages in the qrels; 0 when there are none.
	MAP
	// Recall100 and Recall1000 are trec_eval's recall.100 and recall.1000:
	// relevant passages in the top k over relevant passages in the qrels; 0
	// when there are none.
	Recall100
	Recall1000
	// NumMetrics counts the metrics.
	NumMetrics
)

var metricNames = [NumMetrics]string{"MRR@10", "nDCG@10", "MAP", "R@100", "R@1000"}

func (m Metric) String() string {
	if m < 0 || m >= NumMetrics {
		return "metric?"
	}
	return metricNames[m]
}

// Scores holds one value per metric.
type Scores [NumMetrics]float64

// Measure scores one query's ranking (docnos, best first) against its
// judgments (docno → relevance level) with the given relevance threshold.
func Measure(ranking []string, judged map[string]int, threshold int) Scores {
	var s Scores
	numRel := 0
	for _, rel := range judged {
		if rel >= threshold {
			numRel++
		}
	}
	relSoFar := 0
	sumPrec, dcg := 0.0, 0.0
	for i, doc := range ranking {
		rel, ok := judged[doc]
		if !ok {
			continue
		}
		if i < 10 && rel > 0 {
			dcg += float64(rel) / math.Log2(float64(i+2))
		}
		if rel < threshold {
			continue
		}
		relSoFar++
		sumPrec += float64(relSoFar) / float64(i+1)
		if relSoFar == 1 && i < 10 {
			s[MRR10] = 1 / float64(i+1)
		}
		if i < 100 {
			s[Recall100]++
		}
		if i < 1000 {
			s[Recall1000]++
		}
	}
	if numRel > 0 {
		s[MAP] = sumPrec / float64(numRel)
		s[Recall100] /= float64(numRel)
		s[Recall1000] /= float64(numRel)
	} else {
		s[Recall100], s[Recall1000] = 0, 0
	}
	if ideal := idealDCG10(judged); ideal > 0 {
		s[NDCG10] = dcg / ideal
	}
	return s
}

// idealDCG10 is the DCG@10 of the query's judged passages in the best
// order: gains are the positive relevance levels, highest first.
func idealDCG10(judged map[string]int) float64 {
	var top [10]int // the ten highest positive levels, descending
	n := 0
	for _, rel := range judged {
		if rel <= 0 {
			continue
		}
		if n < len(top) {
			top[n] = rel
			n++
		} else if rel <= top[n-1] {
			continue
		} else {
			top[n-1] = rel
		}
		for i := n - 1; i > 0 && top[i] > top[i-1]; i-- {
			top[i], top[i-1] = top[i-1], top[i]
		}
	}
	ideal := 0.0
	for i := 0; i < n; i++ {
		ideal += float64(top[i]) / math.Log2(float64(i+2))
	}
	return ideal
}

// Evaluation is a run's scores over the queries that trec_eval evaluates by
// default: those present in both the run and the qrels (a query whose qrels
// hold no relevant passage counts, scoring 0 on the binary metrics).
type Evaluation struct {
	Queries  []string // evaluated query ids, in run order
	PerQuery []Scores // aligned with Queries
	Mean     Scores
}

// Evaluate scores run (already in trec_eval order, as ReadRun leaves it) at
// the given depth (no cut when depth <= 0) against qrels.
func Evaluate(qrels Qrels, run *Run, depth, threshold int) *Evaluation {
	ev := &Evaluation{}
	var ranking []string
	for _, qid := range run.Order {
		judged, ok := qrels[qid]
		if !ok {
			continue
		}
		ranking = ranking[:0]
		for _, e := range run.Depth(qid, depth) {
			ranking = append(ranking, e.Doc)
		}
		ev.Queries = append(ev.Queries, qid)
		ev.PerQuery = append(ev.PerQuery, Measure(ranking, judged, threshold))
	}
	ev.Mean = Mean(ev.PerQuery)
	return ev
}

// Mean averages per-query scores (zero for no queries).
func Mean(per []Scores) Scores {
	var m Scores
	if len(per) == 0 {
		return m
	}
	for _, s := range per {
		for k := range m {
			m[k] += s[k]
		}
	}
	for k := range m {
		m[k] /= float64(len(per))
	}
	return m
}
