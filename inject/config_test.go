package inject_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/rerank/rerank/inject"
)

// Validate reports every problem at once and changes nothing; Prepare
// compiles the templates of a config built by hand.
func TestValidateReportsEveryProblem(t *testing.T) {
	bad := &inject.Config{TextA: "{query} {nope}", TextB: "{bm25}",
		Scores: inject.Scores{DPR: &inject.ScoreSpec{Normalization: "odd", Format: inject.Int}}}
	err := bad.Validate()
	if !errors.Is(err, inject.ErrInvalidConfig) {
		t.Fatalf("Validate: %v", err)
	}
	for _, want := range []string{"text_a", "scores.dpr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %s: %v", want, err)
		}
	}
	missing := &inject.Config{TextA: "{query}", TextB: "{bm25}"}
	err = missing.Validate()
	for _, want := range []string{"{passage}", "scores.bm25"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %s: %v", want, err)
		}
	}
	good := &inject.Config{TextA: "{query}", TextB: "{passage}"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if good.NeedsBM25() || good.NeedsDPR() {
		t.Fatal("an unprepared config uses scores")
	}
	withBM25 := &inject.Config{TextA: "{query} [SEP] {bm25}", TextB: "{passage}",
		Scores: inject.Scores{BM25: &inject.ScoreSpec{Normalization: inject.None, Format: inject.Int}}}
	if err := withBM25.Validate(); err != nil || withBM25.NeedsBM25() {
		t.Fatalf("Validate compiled the templates (%v)", err)
	}
	if err := withBM25.Prepare(); err != nil || !withBM25.NeedsBM25() {
		t.Fatalf("Prepare: %v, needs bm25 %v", err, withBM25.NeedsBM25())
	}
}
