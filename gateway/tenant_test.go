package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rerank/rerank/gateway"
	"github.com/rerank/rerank/schemas"
)

func TestTokensConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tokens []string
		ok     bool
	}{
		{"bare", []string{"s3cret"}, true},
		{"named", []string{"acme:s3cret", "globex:other"}, true},
		{"rotation: two tokens, one tenant", []string{"acme:old", "acme:new"}, true},
		{"secret with a colon", []string{"acme:a:b"}, true},
		{"empty", []string{""}, false},
		{"whitespace", []string{"a b"}, false},
		{"tenant name with a dot", []string{"ac.me:x"}, false},
		{"tenant name with a tilde", []string{"ac~me:x"}, false},
		{"tenant name too long", []string{strings.Repeat("a", 65) + ":x"}, false},
		{"empty secret", []string{"acme:"}, false},
		{"one secret, two tenants", []string{"acme:x", "globex:x"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := gateway.New(gateway.Config{Tokens: tc.tokens}, &fakeQueue{}, nil, nil)
			if (err == nil) != tc.ok {
				t.Fatalf("tokens %q: error %v, want ok=%v", tc.tokens, err, tc.ok)
			}
		})
	}
}

// A tenant's job goes on the queue under its key, in its tenant's
// namespace (Job.Tenant): two tenants' one key are two jobs, and each
// tenant's GET reads its own.
func TestTenantJobsAreInTheirNamespace(t *testing.T) {
	q := &fakeQueue{models: []string{"m"}}
	ts, _ := newServer(t, q, gateway.Config{Tokens: []string{"acme:tok", "globex:tok2"}})
	for _, tok := range []string{"tok", "tok2"} {
		code, hdr, body := post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a","bb"]}`,
			"Authorization", "Bearer "+tok, "Idempotency-Key", "k1")
		if code != 200 || hdr.Get(gateway.HeaderJobID) != "k1" || !strings.Contains(body, `"id":"k1"`) {
			t.Fatalf("%d %v %s", code, hdr, body)
		}
	}
	if len(q.jobs) != 2 || q.jobs[0].ID != "k1" || q.jobs[0].Tenant != "acme" || q.jobs[1].ID != "k1" || q.jobs[1].Tenant != "globex" {
		t.Fatalf("queued %+v, want k1 of acme and k1 of globex", q.jobs)
	}
	code, _, _ := post(t, ts.URL+"/v1/jobs", `{"id":"only-acme","query":"q","candidates":[{"id":"a","text":"a"}]}`, "Authorization", "Bearer tok")
	if code != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs: %d", code)
	}
	for tok, want := range map[string]int{"tok": http.StatusAccepted, "tok2": http.StatusNotFound} {
		req, _ := http.NewRequest("GET", ts.URL+"/v1/jobs/only-acme", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET acme's job with %s: %d, want %d", tok, resp.StatusCode, want)
		}
	}
}

func TestTenantsOfTokens(t *testing.T) {
	got, err := gateway.Tenants([]string{"globex:a", "acme:b", "acme:c", "bare"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != "acme" || got[1] != "globex" || !strings.HasPrefix(got[2], "t") || len(got[2]) != 17 {
		t.Fatalf("Tenants = %v, want acme, globex and the bare token's t<16 hex>", got)
	}
	if _, err := gateway.Tenants([]string{"a.b:x"}); err == nil {
		t.Fatal("tenant a.b accepted")
	}
}

// stuckQueue publishes only once its context has ended: a request whose
// own deadline passes during the publish.
type stuckQueue struct{ fakeQueue }

func (q *stuckQueue) Submit(ctx context.Context, job *schemas.Job, lane schemas.Lane) (gateway.Pending, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("%w: publishing job %s: %w", gateway.ErrUnavailable, job.ID, ctx.Err())
}

// A deadline that passes while the job is being published is the
// request's timeout (504, "not queued"), not an outage (503).
func TestDeadlineDuringPublishIsATimeout(t *testing.T) {
	q := &stuckQueue{fakeQueue{models: []string{"m"}}}
	s, err := gateway.New(gateway.Config{Tokens: []string{"acme:tok"}}, q, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	code, _, body := post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a"]}`,
		"Authorization", "Bearer tok", "Idempotency-Key", "k1", "X-Request-Timeout", "50ms")
	if code != http.StatusGatewayTimeout || !strings.Contains(body, "queueing was confirmed") {
		t.Fatalf("%d %s; want 504 saying the job's queueing was not confirmed", code, body)
	}
}
