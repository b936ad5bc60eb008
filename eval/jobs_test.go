package eval

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/rerank/rerank/schemas"
)

func TestJobIDSatisfiesTheContract(t *testing.T) {
	prefix := NewIDPrefix()
	if !strings.HasPrefix(prefix, "eval-") || len(prefix) != len("eval-12345678-") || prefix == NewIDPrefix() {
		t.Fatalf("prefix %q (should be fresh each time)", prefix)
	}
	seen := map[string]string{}
	for _, qid := range []string{"1048585", "a.b", "a_b", "a b", "x*y>z", "tab\tq", "\xffbad", "", strings.Repeat("é", 300), "dl19.1037798"} {
		id := JobID(prefix, qid)
		if err := schemas.CheckID(id); err != nil {
			t.Errorf("qid %q → %q: %v", qid, id, err)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("qids %q and %q share job id %q", other, qid, id)
		}
		seen[id] = qid
	}
	// A clean query id is kept as is, readable in logs and subjects.
	if got := JobID("eval-", "1048585"); got != "eval-1048585" {
		t.Errorf("JobID = %q", got)
	}
	// A changed one gets a hash of the original: "a.b" and "a_b" differ.
	if got := JobID("eval-", "a.b"); !strings.HasPrefix(got, "eval-a_b~") || len(got) != len("eval-a_b~12345678") {
		t.Errorf("JobID(a.b) = %q", got)
	}
}

func TestBuildJob(t *testing.T) {
	ranked := []Entry{{"p2", 12.5}, {"p1", 9.25}, {"p3", 1}}
	texts := map[string]string{"p1": "one", "p2": "two", "p3": "three", "p4": "four"}
	job, err := BuildJob("eval-q", "q", "a question", ranked, texts, nil, DPROmit)
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.Validate(job, "m", schemas.Limits{}); err != nil {
		t.Fatal(err)
	}
	if job.ID != "eval-q" || job.Query != "a question" || job.Meta["qid"] != "q" || job.Model != "" || len(job.Candidates) != 3 {
		t.Fatalf("job %+v", job)
	}
	for i, c := range job.Candidates {
		if c.ID != ranked[i].Doc || c.Text != texts[c.ID] || c.BM25 == nil || *c.BM25 != ranked[i].Score || c.DPR != nil {
			t.Fatalf("candidate %d: %+v", i, c)
		}
	}

	dpr := []Entry{{"p1", 70}, {"p9", 60}, {"p2", 80}}
	job, _ = BuildJob("eval-q", "q", "a question", ranked, texts, dpr, DPROmit)
	if *job.Candidates[0].DPR != 80 || *job.Candidates[1].DPR != 70 || job.Candidates[2].DPR != nil {
		t.Fatalf("dpr omit: %v %v %v", job.Candidates[0].DPR, job.Candidates[1].DPR, job.Candidates[2].DPR)
	}
	// min fills p3 with the query's lowest dpr score, 60 (p9's).
	job, _ = BuildJob("eval-q", "q", "a question", ranked, texts, dpr, DPRMin)
	if job.Candidates[2].DPR == nil || *job.Candidates[2].DPR != 60 {
		t.Fatalf("dpr min: %v", job.Candidates[2].DPR)
	}
	// A query the DPR run does not have gets no dpr, whatever the policy.
	job, _ = BuildJob("eval-q", "q", "a question", ranked, texts, []Entry{}, DPRMin)
	if job.Candidates[0].DPR != nil {
		t.Fatal("dpr made up for a query the DPR run lacks")
	}

	if _, err := BuildJob("eval-q", "q", "a question", []Entry{{"p5", 1}}, texts, nil, DPROmit); err == nil || !strings.Contains(err.Error(), "p5") {
		t.Fatalf("missing passage: %v", err)
	}
	if _, err := BuildJob("bad.id", "q", "a question", ranked, texts, nil, DPROmit); !errors.Is(err, schemas.ErrInvalidID) {
		t.Fatalf("bad id: %v", err)
	}
	if _, err := ParseDPRMissing("zero"); err == nil {
		t.Fatal("unknown dpr-missing policy accepted")
	}
}

func TestWriteRunRoundTrips(t *testing.T) {
	// Logits are float32 values: written in float32's shortest form.
	ranked := []Entry{{"p2", float64(float32(0.1))}, {"p1", float64(float32(-2.5))}, {"p3", float64(float32(-2.5))}}
	var buf bytes.Buffer
	if err := WriteRun(&buf, "q1", ranked, "rerank"); err != nil {
		t.Fatal(err)
	}
	want := "q1 Q0 p2 1 0.1 rerank\nq1 Q0 p1 2 -2.5 rerank\nq1 Q0 p3 3 -2.5 rerank\n"
	if buf.String() != want {
		t.Fatalf("wrote\n%s\nwant\n%s", buf.String(), want)
	}
	// Reading it back gives what AsWritten says trec_eval will see.
	run, err := ReadRun(&buf, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	written := AsWritten(ranked)
	SortTrec(written)
	for i, e := range run.Entries["q1"] {
		if e != written[i] {
			t.Fatalf("entry %d read back as %+v, AsWritten says %+v", i, e, written[i])
		}
	}
	// A value that is not a float32 is written to round-trip as float64.
	buf.Reset()
	WriteRun(&buf, "q", []Entry{{"a", 0.1}, {"b", 1.0 / 3}}, "t")
	if got := buf.String(); got != "q Q0 a 1 0.1 t\nq Q0 b 2 0.3333333333333333 t\n" {
		t.Fatalf("float64 scores written as %q", got)
	}
}
