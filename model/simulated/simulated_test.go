package simulated_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rerank/rerank/model/simulated"
	"github.com/rerank/rerank/model/wordpiece"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		cost simulated.Cost
		err  error
	}{
		{"sim:500us:2ms", "sim", simulated.Cost{PerPair: 500 * time.Microsecond, PerCall: 2 * time.Millisecond}, nil},
		{"a:0s:0s", "a", simulated.Cost{}, nil},
		{"sim:500us", "", simulated.Cost{}, simulated.ErrInvalidSpec},
		{":1ms:1ms", "", simulated.Cost{}, simulated.ErrInvalidSpec},
		{"sim:x:1ms", "", simulated.Cost{}, simulated.ErrInvalidSpec},
		{"sim:1ms:-1ms", "", simulated.Cost{}, simulated.ErrInvalidSpec},
		{"sim:2s:1ms", "", simulated.Cost{}, simulated.ErrInvalidSpec},
	} {
		name, cost, err := simulated.ParseSpec(tc.in)
		if !errors.Is(err, tc.err) || name != tc.name || cost != tc.cost {
			t.Errorf("ParseSpec(%q) = %q, %+v, %v; want %q, %+v, %v", tc.in, name, cost, err, tc.name, tc.cost, tc.err)
		}
	}
}

func TestScoresDependOnTheTextAlone(t *testing.T) {
	m := simulated.New(simulated.Cost{})
	pairs := []wordpiece.Pair{{A: "q", B: "a"}, {A: "q", B: "b"}, {A: "r", B: "a"}, {A: "q", B: "a"}}
	encs, err := m.Tokenize(pairs)
	if err != nil {
		t.Fatal(err)
	}
	all, st, err := m.ScoreEncoded(context.Background(), encs)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pairs != 4 || st.Batches != 1 {
		t.Errorf("stats %+v", st)
	}
	if all[0] != all[3] || all[0] == all[1] || all[0] == all[2] {
		t.Errorf("scores %v: equal texts must score equal, different ones differ", all)
	}
	for i, e := range encs {
		one, _, err := m.ScoreEncoded(context.Background(), []wordpiece.Encoding{e})
		if err != nil {
			t.Fatal(err)
		}
		if one[0] != all[i] {
			t.Errorf("pair %d scores %v alone and %v in a batch", i, one[0], all[i])
		}
		if one[0] < -8 || one[0] >= 8 {
			t.Errorf("pair %d score %v outside [-8, 8)", i, one[0])
		}
	}
}

func TestCostIsWaited(t *testing.T) {
	c := simulated.Cost{PerPair: 2 * time.Millisecond, PerCall: 10 * time.Millisecond}
	if got := c.Of(5); got != 20*time.Millisecond {
		t.Fatalf("Of(5) = %s", got)
	}
	m := simulated.New(c)
	encs, _ := m.Tokenize(make([]wordpiece.Pair, 5))
	start := time.Now()
	if _, _, err := m.ScoreEncoded(context.Background(), encs); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("a call of 5 pairs returned after %s, before its cost of 20ms", d)
	}
}

func TestCancelledCallReturns(t *testing.T) {
	m := simulated.New(simulated.Cost{PerCall: time.Hour / 60})
	encs, _ := m.Tokenize(make([]wordpiece.Pair, 1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := m.ScoreEncoded(ctx, encs); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if _, _, err := m.ScoreEncoded(context.Background(), []wordpiece.Encoding{{IDs: []int64{1, 2, 3}}}); err == nil {
		t.Error("a foreign encoding was scored")
	}
}
