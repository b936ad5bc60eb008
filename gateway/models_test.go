package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rerank/rerank/gateway"
)

// modelsQueue lists its models slowly or not at all: the calls numbered
// from blockFrom on wait until the gate opens, and all fail when fail is
// set. entered receives once a call waits at the gate.
type modelsQueue struct {
	*fakeQueue
	calls     atomic.Int32
	blockFrom int32
	fail      bool
	entered   chan struct{}
	gate      chan struct{}
	openOnce  sync.Once
}

func newModelsQueue(t *testing.T, blockFrom int32, fail bool) *modelsQueue {
	q := &modelsQueue{fakeQueue: &fakeQueue{}, blockFrom: blockFrom, fail: fail,
		entered: make(chan struct{}, 1), gate: make(chan struct{})}
	t.Cleanup(q.open)
	return q
}

func (q *modelsQueue) open() { q.openOnce.Do(func() { close(q.gate) }) }

func (q *modelsQueue) Models(context.Context) ([]string, error) {
	if q.calls.Add(1) >= q.blockFrom {
		select {
		case q.entered <- struct{}{}:
		default:
		}
		<-q.gate
	}
	if q.fail {
		return nil, fmt.Errorf("listing models: %w", gateway.ErrUnavailable)
	}
	return []string{"m"}, nil
}

// rerankAll sends n requests at once to h and returns their statuses, or
// fails when they are not all answered within limit.
func rerankAll(t *testing.T, h http.Handler, n int, limit time.Duration) []*httptest.ResponseRecorder {
	t.Helper()
	recs := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range recs {
		recs[i] = httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/v1/rerank", strings.NewReader(`{"query":"q","documents":["a"]}`))
		req.Header.Set("Content-Type", "application/json")
		wg.Go(func() { h.ServeHTTP(recs[i], req) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }() // ends when the requests do (at the latest when the test opens the gate)
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("%d requests not answered within %s: they wait behind the model list", n, limit)
	}
	return recs
}

func wantAll(t *testing.T, recs []*httptest.ResponseRecorder, status int) {
	t.Helper()
	for _, r := range recs {
		if r.Code != status {
			t.Fatalf("%d %s, want %d", r.Code, r.Body.String(), status)
		}
		if status == http.StatusServiceUnavailable && r.Header().Get("Retry-After") == "" {
			t.Fatalf("a 503 without Retry-After")
		}
	}
}

// TestStaleModelListServesWhileRefreshBlocks: once the model list has been
// read, a refresh that hangs holds no request up: they are served from the
// stale list (within ModelsMaxStale) while one refresh runs.
func TestStaleModelListServesWhileRefreshBlocks(t *testing.T) {
	q := newModelsQueue(t, 2, false)
	s, err := gateway.New(gateway.Config{ModelsTTL: time.Nanosecond}, q, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantAll(t, rerankAll(t, s.Handler(), 1, 5*time.Second), http.StatusOK)
	wantAll(t, rerankAll(t, s.Handler(), 20, 5*time.Second), http.StatusOK)
	if n := q.calls.Load(); n != 2 {
		t.Fatalf("%d calls to Models, want 2 (the first, and one refresh)", n)
	}
}

// TestModelListIsReadOnceForWaitingRequests: requests that arrive before
// there is any model list wait for one read of it, not one each.
func TestModelListIsReadOnceForWaitingRequests(t *testing.T) {
	q := newModelsQueue(t, 1, false)
	s, err := gateway.New(gateway.Config{}, q, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { <-q.entered; q.open() }() // the gate opens once a read is under way
	wantAll(t, rerankAll(t, s.Handler(), 20, 5*time.Second), http.StatusOK)
	if n := q.calls.Load(); n != 1 {
		t.Fatalf("%d calls to Models, want 1", n)
	}
}

// TestModelListFailureIsCached: a failed read of the model list is
// answered 503 (with Retry-After) at once to the requests that follow,
// without asking the queue again within ModelsErrorTTL.
func TestModelListFailureIsCached(t *testing.T) {
	q := newModelsQueue(t, 2, true)
	s, err := gateway.New(gateway.Config{ModelsErrorTTL: time.Minute}, q, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantAll(t, rerankAll(t, s.Handler(), 1, 5*time.Second), http.StatusServiceUnavailable)
	wantAll(t, rerankAll(t, s.Handler(), 20, 5*time.Second), http.StatusServiceUnavailable)
	if n := q.calls.Load(); n != 1 {
		t.Fatalf("%d calls to Models, want 1", n)
	}
}

// TestOutageAnswersAtOnceWhileOneReadRuns: during an outage, once a read of
// the model list has failed, the next read (after ModelsErrorTTL) runs
// alone: the requests meanwhile are answered 503 at once, not queued
// behind it.
func TestOutageAnswersAtOnceWhileOneReadRuns(t *testing.T) {
	q := newModelsQueue(t, 2, true)
	s, err := gateway.New(gateway.Config{ModelsErrorTTL: time.Nanosecond}, q, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantAll(t, rerankAll(t, s.Handler(), 1, 5*time.Second), http.StatusServiceUnavailable)
	wantAll(t, rerankAll(t, s.Handler(), 20, 5*time.Second), http.StatusServiceUnavailable)
	if n := q.calls.Load(); n != 2 {
		t.Fatalf("%d calls to Models, want 2 (the failed one, and one in flight)", n)
	}
}

// GET /v1/models names the digests of the results received for each
// model, most recently seen first: workers serving one name from different
// files show as two.
func TestModelsShowDigestsOfResults(t *testing.T) {
	q := &fakeQueue{models: []string{"m", "other"}}
	ts, _ := newServer(t, q, gateway.Config{})
	models := func() string {
		resp, err := http.Get(ts.URL + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if body := models(); strings.Contains(body, "digests") {
		t.Fatalf("digests before any result: %s", body)
	}
	for _, d := range []string{"aaa", "bbb", "aaa", "bbb"} {
		q.mu.Lock()
		q.digest = d
		q.mu.Unlock()
		if code, _, body := post(t, ts.URL+"/v1/rerank", `{"model":"m","query":"q","documents":["x","y"]}`); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	want := `{"id":"m","object":"model","digests":["bbb","aaa"]},{"id":"other","object":"model"}`
	if body := models(); !strings.Contains(body, want) {
		t.Fatalf("models: %s, want %s", body, want)
	}
}

// Digests not seen for an hour are dropped; a model keeps at most eight,
// the least recently seen going first.
func TestDigestLogWindowAndBound(t *testing.T) {
	var d gateway.DigestLog
	t0 := time.Now()
	d.Record("m", "old", t0)
	for i := range 10 {
		d.Record("m", fmt.Sprint("d", i), t0.Add(30*time.Minute))
	}
	got := d.Recent("m", t0.Add(61*time.Minute))
	if want := []string{"d9", "d8", "d7", "d6", "d5", "d4", "d3", "d2"}; !slices.Equal(got, want) {
		t.Fatalf("recent %v, want %v", got, want)
	}
	if got := d.Recent("m", t0.Add(91*time.Minute)); len(got) != 0 {
		t.Fatalf("after the window: %v", got)
	}
	d.Record("m", "", t0)
	d.Record("", "x", t0)
	if got := d.Recent("", t0); len(got) != 0 {
		t.Fatalf("empty names recorded: %v", got)
	}
}
