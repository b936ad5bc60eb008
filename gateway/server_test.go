package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rerank/rerank/gateway"
	"github.com/rerank/rerank/schemas"
)

// fakeQueue answers each job by scoring candidate i with its text length,
// unless told to fail or to never answer.
type fakeQueue struct {
	mu       sync.Mutex
	models   []string
	jobs     []*schemas.Job
	lanes    []schemas.Lane
	down     bool // every call fails as unreachable
	hang     bool // results never come
	full     bool // the job stream refuses new jobs
	answer   *schemas.Error
	digest   string // the results' model_digest
	stored   map[string]*schemas.Result
	accepted map[string]bool
}

type fakePending struct {
	res  *schemas.Result
	hang bool
}

func (p fakePending) Result(ctx context.Context) (*schemas.Result, error) {
	if p.hang {
		<-ctx.Done()
		return nil, fmt.Errorf("waiting: %w", ctx.Err())
	}
	return p.res, nil
}
func (fakePending) Cancel() {}

func (q *fakeQueue) Submit(_ context.Context, job *schemas.Job, lane schemas.Lane) (gateway.Pending, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.down {
		return nil, fmt.Errorf("publishing: %w", gateway.ErrUnavailable)
	}
	if err := schemas.Validate(job, job.Model, schemas.Limits{}); err != nil {
		return nil, err
	}
	if q.full {
		return nil, fmt.Errorf("publishing: %w", schemas.Errorf(schemas.CodeQueueFull, "the job queue is full"))
	}
	q.jobs, q.lanes = append(q.jobs, job), append(q.lanes, lane)
	if q.accepted == nil {
		q.accepted = map[string]bool{}
	}
	q.accepted[job.Tenant+"/"+job.ID] = true
	res := &schemas.Result{V: 1, ID: job.ID, Model: job.Model, ModelDigest: q.digest}
	if q.answer != nil {
		res.Error = q.answer
		return fakePending{res: res}, nil
	}
	for i, c := range job.Candidates {
		rk := schemas.Ranked{Index: i, ID: c.ID, RelevanceScore: float64(len(c.Text))}
		if job.ReturnDocuments {
			rk.Document = &job.Candidates[i].Text
		}
		res.Results = append(res.Results, rk)
	}
	sort.SliceStable(res.Results, func(a, b int) bool { return res.Results[a].RelevanceScore > res.Results[b].RelevanceScore })
	if job.TopN > 0 {
		res.Results = res.Results[:job.TopN]
	}
	return fakePending{res: res, hang: q.hang}, nil
}

// Lookup reads tenant's job id: stored results of the shared namespace
// are keyed by id, a tenant's by "<tenant>/<id>".
func (q *fakeQueue) Lookup(_ context.Context, tenant, id string) (*schemas.Result, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	key := id
	if tenant != "" {
		key = tenant + "/" + id
	}
	if r, ok := q.stored[key]; ok {
		return r, false, nil
	}
	if q.accepted[tenant+"/"+id] {
		return nil, true, nil
	}
	return nil, false, gateway.ErrNotFound
}

func (q *fakeQueue) Models(context.Context) ([]string, error) {
	if q.down {
		return nil, gateway.ErrUnavailable
	}
	return q.models, nil
}

func (q *fakeQueue) Ready(ctx context.Context) error {
	_, err := q.Models(ctx)
	return err
}

type obs struct {
	mu    sync.Mutex
	calls map[string]int
}

func (o *obs) Request(endpoint string, status int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.calls == nil {
		o.calls = map[string]int{}
	}
	o.calls[fmt.Sprintf("%s %d", endpoint, status)]++
}

func newServer(t *testing.T, q *fakeQueue, cfg gateway.Config) (*httptest.Server, *obs) {
	t.Helper()
	o := &obs{}
	s, err := gateway.New(cfg, q, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, o
}

func post(t *testing.T, url, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestCohereRerank(t *testing.T) {
	q := &fakeQueue{models: []string{"demo"}}
	ts, o := newServer(t, q, gateway.Config{})
	code, hdr, body := post(t, ts.URL+"/v1/rerank",
		`{"model":"demo","query":"q","documents":["aa",{"text":"aaaa","bm25":12.5,"id":"d1"},"a"],"top_n":2,"return_documents":true}`,
		"Idempotency-Key", "req-1")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var out struct {
		ID      string
		Results []struct {
			Index          int
			RelevanceScore float64 `json:"relevance_score"`
			Document       *struct{ Text string }
		}
		Meta struct {
			APIVersion struct{ Version string } `json:"api_version"`
		}
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	if out.ID != "req-1" || hdr.Get(gateway.HeaderJobID) != "req-1" || len(out.Results) != 2 || out.Results[0].Index != 1 ||
		out.Results[0].Document == nil || out.Results[0].Document.Text != "aaaa" || out.Results[1].Index != 0 || out.Meta.APIVersion.Version != "1" {
		t.Fatalf("response %s", body)
	}
	job := q.jobs[0]
	if job.ID != "req-1" || job.TopN != 2 || job.Candidates[1].ID != "d1" || *job.Candidates[1].BM25 != 12.5 || job.Candidates[0].ID != "0" || q.lanes[0] != schemas.Interactive {
		t.Fatalf("job %+v lane %v", job, q.lanes[0])
	}
	// v2, no model named (the only one served), priority: the bulk lane;
	// top_n over the documents is clamped.
	code, _, body = post(t, ts.URL+"/v2/rerank", `{"query":"q","documents":["x","yy"],"top_n":10,"priority":1}`)
	if code != 200 || !strings.Contains(body, `"version":"2"`) || strings.Contains(body, "document") || q.lanes[1] != schemas.Bulk || q.jobs[1].TopN != 2 {
		t.Fatalf("v2: %d %s, lane %v", code, body, q.lanes[1])
	}
	if !strings.HasPrefix(q.jobs[1].ID, "gw-") {
		t.Fatalf("generated id %q", q.jobs[1].ID)
	}
	if o.calls["cohere_v1 200"] != 1 || o.calls["cohere_v2 200"] != 1 {
		t.Fatalf("observed %v", o.calls)
	}
}

func TestTEIRerank(t *testing.T) {
	q := &fakeQueue{models: []string{"a", "b"}}
	ts, _ := newServer(t, q, gateway.Config{DefaultModel: "b"})
	code, _, body := post(t, ts.URL+"/rerank", `{"query":"q","texts":["x","xyz","xy"],"return_text":true,"truncate":true}`)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var out []struct {
		Index int
		Score float64
		Text  *string
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out) != 3 || out[0].Index != 1 || out[0].Score != 3 || *out[0].Text != "xyz" || q.jobs[0].Model != "b" {
		t.Fatalf("%v %s", err, body)
	}
	code, _, body = post(t, ts.URL+"/rerank", `{"query":"q","texts":["x"],"raw_scores":true}`)
	if code != 400 || !strings.Contains(body, `"error_type":"bad_request"`) {
		t.Fatalf("raw_scores: %d %s", code, body)
	}
}

func TestErrorsMapOntoStatuses(t *testing.T) {
	big := `{"query":"q","documents":["` + strings.Repeat("x", 9<<20) + `"]}`
	for _, tc := range []struct {
		name   string
		q      *fakeQueue
		cfg    gateway.Config
		path   string
		body   string
		hdr    []string
		status int
		code   string
	}{
		{"unauthorized", &fakeQueue{models: []string{"m"}}, gateway.Config{Tokens: []string{"s3cret"}}, "/v1/rerank", `{"query":"q","documents":["a"]}`, nil, 401, "unauthorized"},
		{"wrong token", &fakeQueue{models: []string{"m"}}, gateway.Config{Tokens: []string{"s3cret"}}, "/v1/rerank", `{"query":"q","documents":["a"]}`, []string{"Authorization", "Bearer nope"}, 401, "unauthorized"},
		{"unknown model", &fakeQueue{models: []string{"m"}}, gateway.Config{}, "/v1/rerank", `{"model":"x","query":"q","documents":["a"]}`, nil, 404, "unknown_model"},
		{"no model to choose", &fakeQueue{models: []string{"m", "n"}}, gateway.Config{}, "/v1/rerank", `{"query":"q","documents":["a"]}`, nil, 400, "no_model"},
		{"invalid job", &fakeQueue{models: []string{"m"}}, gateway.Config{}, "/v1/rerank", `{"query":"","documents":["a"]}`, nil, 400, "missing_query"},
		{"no documents", &fakeQueue{models: []string{"m"}}, gateway.Config{}, "/v1/rerank", `{"query":"q","documents":[]}`, nil, 400, "no_candidates"},
		{"too many", &fakeQueue{models: []string{"m"}}, gateway.Config{Limits: schemas.Limits{MaxCandidates: 2}}, "/v1/rerank", `{"query":"q","documents":["a","b","c"]}`, nil, 400, "too_many_candidates"},
		{"body too large", &fakeQueue{models: []string{"m"}}, gateway.Config{Limits: schemas.Limits{MaxPayloadBytes: 1 << 20}}, "/v1/rerank", big, nil, 413, "payload_too_large"},
		{"bad json", &fakeQueue{models: []string{"m"}}, gateway.Config{}, "/v1/rerank", `{"query":`, nil, 400, "bad_request"},
		{"bad document", &fakeQueue{models: []string{"m"}}, gateway.Config{}, "/v1/rerank", `{"query":"q","documents":[{"title":"a"}]}`, nil, 400, "bad_request"},
		{"bad idempotency key", &fakeQueue{models: []string{"m"}}, gateway.Config{}, "/v1/rerank", `{"query":"q","documents":["a"]}`, []string{"Idempotency-Key", "a.b"}, 400, "invalid_id"},
		{"bad timeout", &fakeQueue{models: []string{"m"}}, gateway.Config{}, "/v1/rerank", `{"query":"q","documents":["a"]}`, []string{"X-Request-Timeout", "soon"}, 400, "bad_request"},
		{"queue full", &fakeQueue{models: []string{"m"}, full: true}, gateway.Config{}, "/v1/jobs", `{"query":"q","candidates":[{"id":"a","text":"x"}]}`, nil, 503, "queue_full"},
		{"nats down", &fakeQueue{models: []string{"m"}, down: true}, gateway.Config{}, "/v1/rerank", `{"query":"q","documents":["a"]}`, nil, 503, "unavailable"},
		{"worker error", &fakeQueue{models: []string{"m"}, answer: schemas.Errorf(schemas.CodeInputTooLong, "too long")}, gateway.Config{}, "/v1/rerank", `{"query":"q","documents":["a"]}`, nil, 422, "input_too_long"},
		{"worker internal", &fakeQueue{models: []string{"m"}, answer: schemas.Errorf(schemas.CodeInternal, "boom")}, gateway.Config{}, "/rerank", `{"query":"q","texts":["a"]}`, nil, 500, "internal"},
		{"deadline", &fakeQueue{models: []string{"m"}, hang: true}, gateway.Config{}, "/v1/rerank", `{"query":"q","documents":["a"],"timeout":0.2}`, []string{"Idempotency-Key", "slow-1"}, 504, "timeout"},
		{"deadline header", &fakeQueue{models: []string{"m"}, hang: true}, gateway.Config{}, "/rerank", `{"query":"q","texts":["a"]}`, []string{"X-Request-Timeout", "150ms"}, 504, "timeout"},
		{"reply_to refused", &fakeQueue{models: []string{"m"}}, gateway.Config{}, "/v1/jobs", `{"query":"q","candidates":[{"id":"a","text":"x"}],"reply_to":"elsewhere"}`, nil, 400, "invalid_reply_to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, _ := newServer(t, tc.q, tc.cfg)
			code, hdr, body := post(t, ts.URL+tc.path, tc.body, tc.hdr...)
			if code != tc.status || !strings.Contains(body, `"`+tc.code+`"`) {
				t.Fatalf("%d %.300s, want %d %s", code, body, tc.status, tc.code)
			}
			if tc.code == "timeout" && (hdr.Get(gateway.HeaderJobID) == "" || !strings.Contains(body, "/v1/jobs/")) {
				t.Fatalf("a timeout must name the job: %v %s", hdr, body)
			}
			if tc.status == 503 && hdr.Get("Retry-After") == "" {
				t.Fatalf("a 503 without Retry-After: %v", hdr)
			}
		})
	}
	// A good token passes.
	ts, _ := newServer(t, &fakeQueue{models: []string{"m"}}, gateway.Config{Tokens: []string{"s3cret", "other"}})
	if code, _, body := post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a"]}`, "Authorization", "Bearer other"); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if _, err := gateway.New(gateway.Config{Tokens: []string{"a b"}}, &fakeQueue{}, nil, nil); err == nil {
		t.Fatal("a token with a space was accepted")
	}
}

func TestAsyncJobs(t *testing.T) {
	q := &fakeQueue{models: []string{"m"}, stored: map[string]*schemas.Result{}}
	ts, _ := newServer(t, q, gateway.Config{})
	code, hdr, body := post(t, ts.URL+"/v1/jobs", `{"id":"job-1","query":"q","candidates":[{"id":"a","text":"x"}]}`)
	if code != 202 || hdr.Get("Location") != "/v1/jobs/job-1" || !strings.Contains(body, `"id":"job-1"`) || q.lanes[0] != schemas.Bulk || q.jobs[0].Model != "m" {
		t.Fatalf("%d %v %s", code, hdr, body)
	}
	get := func(id string) (int, string) {
		resp, err := http.Get(ts.URL + "/v1/jobs/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("job-1"); code != 202 || !strings.Contains(body, "pending") {
		t.Fatalf("pending: %d %s", code, body)
	}
	q.mu.Lock()
	q.stored["job-1"] = &schemas.Result{V: 1, ID: "job-1", Model: "m", Results: []schemas.Ranked{{Index: 0, ID: "a", RelevanceScore: 0.5}}}
	q.mu.Unlock()
	if code, body := get("job-1"); code != 200 || !strings.Contains(body, `"relevance_score":0.5`) {
		t.Fatalf("stored: %d %s", code, body)
	}
	if code, body := get("nope"); code != 404 || !strings.Contains(body, "not_found") {
		t.Fatalf("unknown: %d %s", code, body)
	}
	// Without an id the job gets one; the interactive lane on request.
	code, _, body = post(t, ts.URL+"/v1/jobs", `{"query":"q","candidates":[{"id":"a","text":"x"}],"lane":"interactive"}`, "Idempotency-Key", "k-2")
	if code != 202 || q.jobs[1].ID != "k-2" || q.lanes[1] != schemas.Interactive {
		t.Fatalf("%d %s %+v", code, body, q.jobs[1])
	}
	resp, err := http.Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"id":"m"`) {
		t.Fatalf("models: %s", b)
	}
}

func TestReadiness(t *testing.T) {
	q := &fakeQueue{models: []string{"m"}, down: true}
	ts, _ := newServer(t, q, gateway.Config{})
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// A job refused for one of its documents names that document, as the
// native error names its candidate: the message says which, and the body
// carries {index, id} in both dialects.
func TestErrorsNameTheDocument(t *testing.T) {
	answer := &schemas.Error{Code: schemas.CodeMissingScore, Message: "the model injects bm25 and this candidate has none",
		Candidate: &schemas.CandidateRef{Index: 1, ID: "1"}}
	q := &fakeQueue{models: []string{"m"}, answer: answer}
	ts, _ := newServer(t, q, gateway.Config{})
	for _, tc := range []struct{ path, body string }{
		{"/v1/rerank", `{"query":"q","documents":[{"text":"a","bm25":1},"b"]}`},
		{"/rerank", `{"query":"q","texts":["a","b"]}`},
	} {
		code, _, body := post(t, ts.URL+tc.path, tc.body)
		var out struct {
			Candidate *schemas.CandidateRef `json:"candidate"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil || code != 400 || out.Candidate == nil || out.Candidate.Index != 1 ||
			!strings.Contains(body, `document 1 (id \"1\")`) || !strings.Contains(body, "missing_score") {
			t.Errorf("%s: %d %s", tc.path, code, body)
		}
	}
}

// top_n 0 is every document, as in native jobs; below 0 is refused.
func TestTopNZeroIsEveryDocument(t *testing.T) {
	q := &fakeQueue{models: []string{"m"}}
	ts, _ := newServer(t, q, gateway.Config{})
	if code, _, body := post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a","bb","c"],"top_n":0}`); code != 200 || strings.Count(body, `"index"`) != 3 {
		t.Fatalf("top_n 0: %d %s", code, body)
	}
	if code, _, body := post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a"],"top_n":-1}`); code != 400 || !strings.Contains(body, "top_n") {
		t.Fatalf("top_n -1: %d %s", code, body)
	}
}
