package sched_test

import (
	"testing"
	"time"

	"github.com/rerank/rerank/pipeline/sched"
	"github.com/rerank/rerank/schemas"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func req(lane schemas.Lane, pairs int) *sched.Request {
	return &sched.Request{Lane: lane, Pairs: pairs}
}

// picks describes a call: for each chunk, the request's name and its size.
func picks(names map[*sched.Request]string, chunks []sched.Chunk) []string {
	var out []string
	for _, c := range chunks {
		out = append(out, names[c.Req]+":"+itoa(c.Hi-c.Lo))
	}
	return out
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNext(t *testing.T) {
	type arrival struct {
		name  string
		lane  schemas.Lane
		pairs int
		at    int // ms
	}
	tests := []struct {
		name     string
		cfg      sched.Config
		arrivals []arrival
		calls    [][]string // the chunks of each Next, in order
	}{
		{
			name:     "a big job is cut into calls of BatchPairs",
			arrivals: []arrival{{"big", schemas.Interactive, 40, 0}},
			calls:    [][]string{{"big:16"}, {"big:16"}, {"big:8"}, nil},
		},
		{
			name:     "a small job that arrives during a big one goes next",
			arrivals: []arrival{{"big", schemas.Interactive, 100, 0}, {"small", schemas.Interactive, 10, 1}},
			calls:    [][]string{{"small:10", "big:6"}, {"big:16"}},
		},
		{
			name: "small jobs share one call, fewest pairs first",
			arrivals: []arrival{{"a", schemas.Interactive, 7, 0}, {"b", schemas.Interactive, 3, 0},
				{"c", schemas.Interactive, 5, 0}, {"d", schemas.Interactive, 9, 0}},
			calls: [][]string{{"b:3", "c:5", "a:7", "d:1"}, {"d:8"}},
		},
		{
			name:     "interactive before bulk",
			arrivals: []arrival{{"bulk", schemas.Bulk, 32, 0}, {"live", schemas.Interactive, 4, 1}},
			calls:    [][]string{{"live:4"}, {"bulk:16"}, {"bulk:16"}},
		},
		{
			name:     "bulk keeps its floor share while interactive work never stops",
			cfg:      sched.Config{BulkShare: 0.25},
			arrivals: []arrival{{"bulk", schemas.Bulk, 64, 0}, {"live", schemas.Interactive, 160, 0}},
			calls:    [][]string{{"live:16"}, {"live:16"}, {"live:16"}, {"bulk:16"}, {"live:16"}, {"live:16"}, {"live:16"}, {"bulk:16"}},
		},
		{
			name: "aging: a big job left waiting long enough goes before a fresh small one",
			cfg:  sched.Config{AgingRate: 100}, // 100 pairs of credit a second
			arrivals: []arrival{{"big", schemas.Interactive, 120, 0},
				{"small", schemas.Interactive, 10, 1000}}, // big waited 1 s: key 120-100 = 20 > 10
			calls: [][]string{{"small:10", "big:6"}},
		},
		{
			name: "aging wins after enough time",
			cfg:  sched.Config{AgingRate: 100},
			arrivals: []arrival{{"big", schemas.Interactive, 120, 0},
				{"small", schemas.Interactive, 10, 1200}}, // big's key 120-120 = 0 < 10
			calls: [][]string{{"big:16"}},
		},
		{
			name: "aging survives a big job's chunks: once ahead, a fresh small job does not push it back",
			cfg:  sched.Config{AgingRate: 100},
			arrivals: []arrival{{"big", schemas.Interactive, 120, 0},
				{"small", schemas.Interactive, 10, 1200}}, // after a chunk, big's key 104-120-8 = -24 < 10
			calls: [][]string{{"big:16"}, {"big:16"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sched.New(tt.cfg)
			names := map[*sched.Request]string{}
			last := 0
			for _, a := range tt.arrivals {
				r := req(a.lane, a.pairs)
				r.Arrived = at(a.at)
				names[r] = a.name
				p.Add(r, at(a.at))
				last = max(last, a.at)
			}
			for i, want := range tt.calls {
				_, chunks := p.Next(at(last))
				if got := picks(names, chunks); !equal(got, want) {
					t.Fatalf("call %d: %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestCallsTakeTheShortestPairsOfTheWindow(t *testing.T) {
	p := sched.New(sched.Config{BatchPairs: 4, Window: 12})
	a := &sched.Request{Lane: schemas.Interactive, Pairs: 4, Lengths: []int{5, 5, 50, 50}}
	b := &sched.Request{Lane: schemas.Interactive, Pairs: 4, Lengths: []int{6, 6, 7, 7}}
	huge := &sched.Request{Lane: schemas.Interactive, Pairs: 40, Lengths: make([]int, 40)} // all length 0, over the window
	names := map[*sched.Request]string{a: "a", b: "b", huge: "huge"}
	for _, r := range []*sched.Request{a, b, huge} {
		p.Add(r, t0)
	}
	for i, want := range [][]string{{"a:2", "b:2"}, {"a:2", "b:2"}, {"huge:4"}} {
		if _, chunks := p.Next(t0); !equal(picks(names, chunks), want) {
			t.Fatalf("call %d: %v, want %v (the huge request's short pairs must not join while smaller requests wait)", i, picks(names, chunks), want)
		}
	}
}

func TestChunksCoverEveryPairOnce(t *testing.T) {
	p := sched.New(sched.Config{BatchPairs: 7})
	reqs := []*sched.Request{req(schemas.Interactive, 23), req(schemas.Bulk, 50), req(schemas.Interactive, 1), req(schemas.Bulk, 6)}
	seen := map[*sched.Request][]bool{}
	for _, r := range reqs {
		p.Add(r, t0)
		seen[r] = make([]bool, r.Pairs)
	}
	for calls := 0; p.Pending() > 0; calls++ {
		if calls > 100 {
			t.Fatal("Next does not make progress")
		}
		_, chunks := p.Next(t0.Add(time.Duration(calls) * time.Millisecond))
		n := 0
		for _, c := range chunks {
			for i := c.Lo; i < c.Hi; i++ {
				if seen[c.Req][i] {
					t.Fatalf("pair %d handed out twice", i)
				}
				seen[c.Req][i] = true
			}
			n += c.Hi - c.Lo
		}
		if n == 0 || n > 7 {
			t.Fatalf("a call of %d pairs", n)
		}
	}
	for r, s := range seen {
		for i, ok := range s {
			if !ok {
				t.Fatalf("pair %d of a %d-pair request never handed out", i, r.Pairs)
			}
		}
	}
}

func TestRemoveDropsWhatIsLeft(t *testing.T) {
	p := sched.New(sched.Config{})
	a, b := req(schemas.Interactive, 40), req(schemas.Interactive, 5)
	p.Add(a, t0)
	p.Add(b, t0)
	p.Next(t0) // b:5 + a:11
	p.Remove(a)
	p.Remove(a)
	if p.Pending() != 0 {
		t.Fatalf("pending %d after removing the rest of a", p.Pending())
	}
	if _, chunks := p.Next(t0); chunks != nil {
		t.Fatalf("a removed request was handed out: %v", chunks)
	}
}

// WorkAging credits a waiting request with the pairs its lane hands out,
// so a big job goes before fresh small ones once the lane has handed out
// (its pairs − theirs)/WorkAging, however little time passes.
func TestWorkAgingLetsABigJobGoFirst(t *testing.T) {
	tests := []struct {
		name      string
		workAging float64
		calls     []string // the request of each call's first chunk
	}{
		{"WorkAging 1: big goes first after 32 pairs", 1, []string{"s1", "s2", "big", "big", "big", "s3"}},
		{"WorkAging 0.5: big goes first after 64 pairs", 0.5, []string{"s1", "s2", "s3", "s4", "big", "big", "big", "s5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sched.New(sched.Config{WorkAging: tt.workAging, AgingRate: 1e-9})
			big := req(schemas.Interactive, 48)
			names := map[*sched.Request]string{big: "big"}
			p.Add(big, t0)
			var got []string
			for i := range tt.calls {
				s := req(schemas.Interactive, 16) // a fresh small job before each call
				names[s] = "s" + itoa(i+1)
				p.Add(s, t0)
				_, chunks := p.Next(t0)
				got = append(got, names[chunks[0].Req])
			}
			if !equal(got, tt.calls) {
				t.Fatalf("calls %v, want %v", got, tt.calls)
			}
		})
	}
}

// The first half of each call goes in key order, even where the requests
// behind have shorter pairs: otherwise a big job's rest, its longest pairs,
// could lose every call to small jobs behind it.
func TestTheFirstHalfOfEachCallGoesInKeyOrder(t *testing.T) {
	tests := []struct {
		name  string
		reqs  map[string][]int // the pairs' lengths; key order a, b, c by size
		calls [][]string
	}{
		{
			name:  "the first request's longer pairs are not left behind",
			reqs:  map[string][]int{"a": {50, 50, 50, 50}, "b": {1, 1, 1, 1, 1}},
			calls: [][]string{{"a:2", "b:2"}, {"a:2", "b:2"}, {"b:1"}},
		},
		{
			name:  "the half goes to the first requests in key order, then the shortest pairs",
			reqs:  map[string][]int{"a": {50}, "b": {40, 40, 40}, "c": {1, 1, 1, 1, 1}},
			calls: [][]string{{"a:1", "b:1", "c:2"}, {"b:2", "c:2"}, {"c:1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sched.New(sched.Config{BatchPairs: 4})
			names := map[*sched.Request]string{}
			for _, n := range []string{"a", "b", "c"} {
				if l, ok := tt.reqs[n]; ok {
					r := &sched.Request{Lane: schemas.Interactive, Pairs: len(l), Lengths: l}
					names[r] = n
					p.Add(r, t0)
				}
			}
			for i, want := range tt.calls {
				if _, chunks := p.Next(t0); !equal(picks(names, chunks), want) {
					t.Fatalf("call %d: %v, want %v", i, picks(names, chunks), want)
				}
			}
		})
	}
}
