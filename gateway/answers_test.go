package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rerank/rerank/gateway"
	"github.com/rerank/rerank/schemas"
)

// logRecorder keeps a logger's records, as text.
type logRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logRecorder) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logRecorder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestClientDisconnectIs499: a request whose client went away is recorded
// as 499, its own outcome, not as a 500, and nothing is logged as an error.
func TestClientDisconnectIs499(t *testing.T) {
	var logs logRecorder
	o := &obs{}
	s, err := gateway.New(gateway.Config{}, &fakeQueue{models: []string{"m"}, hang: true}, o, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client is gone
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/rerank", strings.NewReader(`{"query":"q","documents":["a"]}`))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 499 || o.calls["cohere_v1 499"] != 1 {
		t.Fatalf("answered %d, observed %v; want 499", rec.Code, o.calls)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("a client disconnect logged as an error:\n%s", logs.String())
	}
}

// failingQueue fails every Submit with err.
type failingQueue struct {
	*fakeQueue
	err error
}

func (q *failingQueue) Submit(context.Context, *schemas.Job, schemas.Lane) (gateway.Pending, error) {
	return nil, q.err
}

// TestInternalErrorsAreNotEchoed: an internal error is answered with a
// generic message naming the request id (X-Request-Id), and logged in full
// with that id.
func TestInternalErrorsAreNotEchoed(t *testing.T) {
	const secret = "dial tcp 10.1.2.3:4222: password=hunter2"
	for name, q := range map[string]gateway.Queue{
		"queue error":     &failingQueue{fakeQueue: &fakeQueue{models: []string{"m"}}, err: errors.New(secret)},
		"worker internal": &fakeQueue{models: []string{"m"}, answer: schemas.Errorf(schemas.CodeInternal, "%s", secret)},
	} {
		t.Run(name, func(t *testing.T) {
			var logs logRecorder
			s, err := gateway.New(gateway.Config{}, q, nil, logs.logger())
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewServer(s.Handler())
			defer ts.Close()
			code, hdr, body := post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a"]}`)
			id := hdr.Get(gateway.HeaderRequestID)
			if code != 500 || strings.Contains(body, "hunter2") || id == "" || !strings.Contains(body, id) {
				t.Fatalf("%d %s (request id %q): want 500, the id, and no error text", code, body, id)
			}
			if l := logs.String(); !strings.Contains(l, "hunter2") || !strings.Contains(l, id) {
				t.Fatalf("the log does not hold the error and the request id %s:\n%s", id, l)
			}
		})
	}
	// Every answer carries a request id, each its own.
	ts, _ := newServer(t, &fakeQueue{models: []string{"m"}}, gateway.Config{})
	_, h1, _ := post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a"]}`)
	_, h2, _ := post(t, ts.URL+"/v1/rerank", `{"query":"","documents":["a"]}`)
	if a, b := h1.Get(gateway.HeaderRequestID), h2.Get(gateway.HeaderRequestID); a == "" || b == "" || a == b {
		t.Fatalf("request ids %q and %q", a, b)
	}
}

// TestLocationIsEscaped: the Location of an async job is its id escaped as
// a path segment, and that path reads the job back.
func TestLocationIsEscaped(t *testing.T) {
	q := &fakeQueue{models: []string{"m"}}
	ts, _ := newServer(t, q, gateway.Config{})
	code, hdr, body := post(t, ts.URL+"/v1/jobs", `{"id":"k?x#y%z","query":"q","candidates":[{"id":"a","text":"x"}]}`)
	if code != 202 || hdr.Get("Location") != "/v1/jobs/k%3Fx%23y%25z" {
		t.Fatalf("%d Location %q %s", code, hdr.Get("Location"), body)
	}
	resp, err := http.Get(ts.URL + hdr.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 || resp.Header.Get(gateway.HeaderJobID) != "k?x#y%z" {
		t.Fatalf("GET Location: %d %v", resp.StatusCode, resp.Header)
	}
}

// goneQueue reads every job as expired.
type goneQueue struct{ *fakeQueue }

func (goneQueue) Lookup(_ context.Context, _, id string) (*schemas.Result, bool, error) {
	return nil, false, fmt.Errorf("job %s: %w", id, gateway.ErrGone)
}

// TestExpiredJobIsGone: a job the queue reports as expired (accepted, its
// result no longer stored) is answered 410 gone, not 202 pending.
func TestExpiredJobIsGone(t *testing.T) {
	s, err := gateway.New(gateway.Config{}, goneQueue{&fakeQueue{models: []string{"m"}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/jobs/old-1", nil))
	if rec.Code != http.StatusGone || !strings.Contains(rec.Body.String(), `"gone"`) || rec.Header().Get(gateway.HeaderJobID) != "old-1" {
		t.Fatalf("%d %v %s, want 410 gone", rec.Code, rec.Header(), rec.Body.String())
	}
}
