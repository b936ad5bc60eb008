package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/internal/natsembed"
	iproc "github.com/rerank/rerank/internal/proc"
	"github.com/rerank/rerank/schemas"
)

// spy records what one tenant's connection receives on every subject it
// subscribes to, and flags any message carrying another tenant's marker.
type spy struct {
	mu       sync.Mutex
	subjects map[string]int // received, by subject
	leaked   []string       // subjects of messages carrying the marker
	marker   string
}

func (s *spy) receive(m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subjects[m.Subject]++
	if strings.Contains(string(m.Data), s.marker) {
		s.leaked = append(s.leaked, m.Subject)
	}
}

func (s *spy) got(subject string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subjects[subject]
}

// TestTenantsAreIsolated: under the shipped deploy/nats/accounts.conf,
// with a worker (--tenants search,ads) and an HTTP gateway (tokens of both
// tenants), tenant "ads" uses everything its permissions allow against
// tenant "search" while search works: wildcard subscriptions on every
// subject it may subscribe to (and on those it may not), JetStream API
// requests, search's job ids (and Nats-Msg-Ids) submitted before search
// sends them, reply_to subjects aimed at search's namespace and inbox. It
// receives none of search's jobs or results and makes the worker send
// search nothing; search's jobs run once each, with their own content, in
// search's stream. A job search sends over HTTP is in the same namespace
// as its NATS jobs (its NATS client reads its result), and in no other.
func TestTenantsAreIsolated(t *testing.T) {
	defer dumpLogs(t)
	bin, tiny, _ := assets(t)
	e := startAuthServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tlsFlags := func(u nkeyUser) []string {
		return []string{"--nats-nkey", u.seedFile, "--tls-ca", e.pki.ca, "--tls-cert", e.workerCert, "--tls-key", e.workerKey,
			"--nats-inbox-prefix", inboxOf(u.name)}
	}
	// Ops provisions with `rerank provision`, as docs/operations.md says.
	out, err := exec.Command(bin, append([]string{"provision", "--nats-url", e.url, "--models", "demo", "--tenants", "search,ads",
		"--score-cache-kv", "rerank-scores"}, tlsFlags(e.ops)...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "stream RERANK_JOBS_T_ads") || !strings.Contains(string(out), "bucket rerank-accepted") ||
		!strings.Contains(string(out), "bucket rerank-scores") {
		t.Fatalf("rerank provision as ops: %v\n%s", err, out)
	}
	w := startWorker(t, "w1", e.url, tiny, append(tlsFlags(e.worker), "--provision=false", "--tenants", "search,ads",
		"--score-cache-kv", "rerank-scores")...)
	gw := startTenantGateway(t, bin, e.url, append(tlsFlags(e.gateway), "--provision=false",
		"--gateway-tokens", "search:tok-search,ads:tok-ads")...)

	// Both tenants listen on everything they may, and try what they may not.
	spies := map[string]*spy{}
	conns := map[string]*nats.Conn{}
	for _, u := range []nkeyUser{e.search, e.ads} {
		other := "ads"
		if u.name == "ads" {
			other = "search"
		}
		nc, errs := e.conn(t, u)
		conns[u.name] = nc
		sp := &spy{subjects: map[string]int{}, marker: other + "-secret"}
		spies[u.name] = sp
		allowed := []string{"rerank.results.>", "rerank.dead.>", inboxOf(u.name) + ".>"}
		refused := []string{">", "rerank.>", "rerank.tenant.>", "_INBOX.>", inboxOf(other) + ".>", inboxOf("worker") + ".>",
			inboxOf("gateway") + ".>", "$JS.>"}
		for _, subj := range append(allowed, refused...) {
			if _, err := nc.Subscribe(subj, sp.receive); err != nil {
				t.Fatal(err)
			}
		}
		nc.Flush()
		for _, subj := range refused {
			if errs.find(`Permissions Violation for Subscription to "`+subj+`"`) == "" {
				t.Errorf("%s may subscribe to %s", u.name, subj)
			}
		}
		// The JetStream API: its account has none, and may call none.
		for _, req := range []struct{ subj, body string }{
			{"$JS.API.INFO", ""},
			{"$JS.API.STREAM.NAMES", ""},
			{"$JS.API.STREAM.INFO." + schemas.TenantJobsStream(other, -1), ""},
			{"$JS.API.STREAM.INFO.RERANK_RESULTS", `{"subjects_filter":">"}`},
			{"$JS.API.STREAM.MSG.GET.RERANK_RESULTS", `{"last_by_subj":"rerank.tenant.` + other + `.results.` + other + `-0"}`},
			{"$JS.API.CONSUMER.MSG.NEXT." + schemas.TenantJobsStream(other, -1) + ".rerank-demo", `{"batch":1}`},
			{"$JS.API.DIRECT.GET.KV_rerank-scores.$KV.rerank-scores.00", ""}, // the shared pair cache
		} {
			if m, err := nc.Request(req.subj, []byte(req.body), 300*time.Millisecond); err == nil {
				t.Errorf("%s got an answer on %s: %s", u.name, req.subj, m.Data)
			}
			if errs.find(`Permissions Violation for Publish to "`+req.subj+`"`) == "" {
				t.Errorf("%s may request %s", u.name, req.subj)
			}
		}
	}

	// ads takes search's ids first: jobs of its own, under the same ids
	// (and so the same Nats-Msg-Ids).
	ads, _ := client.New(conns["ads"], client.Options{Model: "demo"})
	adsJob := func(id string) *schemas.Job {
		return &schemas.Job{ID: id, Query: "ads-secret query", ReturnDocuments: true,
			Candidates: []schemas.Candidate{{ID: "x", Text: "ads-secret passage"}}}
	}
	for i := range 3 {
		res, err := ads.Submit(ctx, adsJob(fmt.Sprintf("search-%d", i)))
		if err != nil || res.Error != nil || len(res.Results) != 1 || res.JobStream != "RERANK_JOBS_T_ads" {
			t.Fatalf("ads's job under search's id: %v %+v", err, res)
		}
	}
	// ads aims results at search: its namespace, its inbox, a result
	// namespace named after it. Published as raw jobs (client.Submit
	// refuses the first two before publishing).
	aimed := map[string]string{ // reply_to → the error code the worker answers with ("" for none)
		"rerank.tenant.search.results.aim-0": string(schemas.CodeInvalidReplyTo),
		inboxOf("search") + ".aim-1":         string(schemas.CodeInvalidReplyTo),
		"rerank.results.search.aim-2":        "",
	}
	adsJS, _ := jetstream.New(conns["ads"])
	for reply, code := range aimed {
		id := reply[strings.LastIndexByte(reply, '.')+1:]
		j := adsJob(id)
		j.ReplyTo = reply
		b, _ := schemas.EncodeJob(j, schemas.JSON)
		m := nats.NewMsg(schemas.JobSubject("demo"))
		m.Data = b
		m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeJSON)
		if _, err := adsJS.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
			t.Fatalf("ads publishing a job with reply_to %s: %v", reply, err)
		}
		// The answer comes back to ads, in ads's namespace: the error on
		// its default result subject, or the result where it asked, as ads
		// sees its own results.
		where := schemas.ResultSubject(id)
		if code == "" {
			where = reply
		}
		if !waitFor(30*time.Second, func() bool { return spies["ads"].got(where) > 0 }) {
			t.Errorf("ads's job with reply_to %s: no answer on %s", reply, where)
		}
	}

	// search works: its jobs run with their own content, in its own stream,
	// none taken for a duplicate of ads's.
	search, _ := client.New(conns["search"], client.Options{Model: "demo"})
	for i := range 3 {
		j := &schemas.Job{ID: fmt.Sprintf("search-%d", i), Query: "search-secret query", ReturnDocuments: true,
			Candidates: []schemas.Candidate{{ID: "a", Text: "search-secret one"}, {ID: "b", Text: "search-secret two"}}}
		p, err := search.SubmitAsync(ctx, j)
		if err != nil {
			t.Fatal(err)
		}
		if p.Duplicate() {
			t.Fatalf("search's job %s was taken for a duplicate of ads's", j.ID)
		}
		res, err := p.Result(ctx)
		if err != nil || res.Error != nil || len(res.Results) != 2 || res.JobStream != "RERANK_JOBS_T_search" ||
			!strings.Contains(*res.Results[0].Document, "search-secret") {
			t.Fatalf("search's job %s: %v %+v", j.ID, err, res)
		}
	}

	// Over HTTP, with search's token: the job is in search's namespace. Its
	// NATS client receives the result; ads cannot read it by its key.
	code, body := httpJSON(t, "POST", gw+"/v1/rerank", "tok-search",
		`{"model":"demo","query":"search-secret over http","documents":["search-secret a","search-secret b"]}`, "Idempotency-Key", "http-1")
	if code != http.StatusOK {
		t.Fatalf("search's HTTP request: %d %s", code, body)
	}
	if !waitFor(10*time.Second, func() bool { return spies["search"].got("rerank.results.http-1") > 0 }) {
		t.Error("search's NATS client did not receive the result of its HTTP job http-1")
	}
	for _, c := range []struct {
		token, id string
		want      int
	}{
		{"tok-search", "http-1", http.StatusOK},
		{"tok-search", "search-0", http.StatusOK}, // its NATS job, over HTTP
		{"tok-ads", "http-1", http.StatusNotFound},
		{"tok-ads", "search-1", http.StatusOK}, // ads's own job of that id
	} {
		code, body := httpJSON(t, "GET", gw+"/v1/jobs/"+c.id, c.token, "")
		if code != c.want || c.token == "tok-ads" && strings.Contains(body, "search-secret") {
			t.Errorf("GET /v1/jobs/%s with %s: %d %s; want %d", c.id, c.token, code, body, c.want)
		}
	}

	for name, sp := range spies {
		conns[name].Flush()
		sp.mu.Lock()
		if len(sp.leaked) > 0 {
			t.Errorf("%s received %d messages carrying the other tenant's jobs or results, on %v", name, len(sp.leaked), sp.leaked)
		}
		sp.mu.Unlock()
	}
	// The worker filled and read the shared pair cache with the shipped
	// permissions (stores are not acknowledged: ops counts the entries).
	opsNC, _ := e.conn(t, e.ops)
	opsJS, _ := jetstream.New(opsNC)
	if !waitFor(10*time.Second, func() bool {
		s, err := opsJS.Stream(ctx, "KV_rerank-scores")
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs > 0
	}) {
		t.Error("the worker stored no score in the shared pair cache")
	}
	if n := w.metric("rerank_score_cache_kv_lookups_total"); n <= 0 || w.metric("rerank_score_cache_kv_errors_total") != 0 {
		t.Errorf("shared pair cache: %v pairs looked up, %v errors", n, w.metric("rerank_score_cache_kv_errors_total"))
	}
	if !w.healthy() {
		t.Error("worker unhealthy")
	}
	say(t, "tenants: ads subscribed to 11 subjects (8 refused), was refused 7 JetStream API requests, took 3 of search's ids and aimed 3 results at search: search's jobs ran as its own and ads received none of them")
}

// startTenantGateway runs `rerank gateway` with args and returns its URL
// once it is ready.
func startTenantGateway(t *testing.T, bin, natsURL string, args ...string) string {
	t.Helper()
	port, err := natsembed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := iproc.Start(iproc.Spec{Name: "gateway", Path: bin,
		Args: append([]string{"gateway", "--nats-url", natsURL, "--http", addr, "--log-format", "text"}, args...),
		Log:  filepath.Join(buildDir, "logs", sanitize(t.Name()), "gateway.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(30 * time.Second); err != nil {
			t.Errorf("gateway: %v\n%s", err, tail(p.Log(), 30))
		}
	})
	url := "http://" + addr
	if !waitFor(60*time.Second, func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return p.Exited()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) || p.Exited() {
		t.Fatalf("the gateway was not ready:\n%s", tail(p.Log(), 30))
	}
	return url
}

// httpJSON sends a request with a bearer token and JSON body (headers in
// pairs after it), and returns the status and body.
func httpJSON(t *testing.T, method, url, token, body string, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v any
	_ = json.Unmarshal(b, &v)
	return resp.StatusCode, string(b)
}
