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
		{"tenant name with the separator", []string{"ac~me:x"}, false},
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

// A tenant's job goes on the queue as "<tenant>~<key>", and is answered
// under its key; a key too long to fit beside the tenant's name is refused.
func TestTenantJobIDs(t *testing.T) {
	q := &fakeQueue{models: []string{"m"}}
	ts, _ := newServer(t, q, gateway.Config{Tokens: []string{"acme:tok"}})
	code, hdr, body := post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a","bb"]}`,
		"Authorization", "Bearer tok", "Idempotency-Key", "k1")
	if code != 200 || hdr.Get(gateway.HeaderJobID) != "k1" || !strings.Contains(body, `"id":"k1"`) {
		t.Fatalf("%d %v %s", code, hdr, body)
	}
	if got := q.jobs[0].ID; got != "acme~k1" {
		t.Fatalf("queued as %q, want acme~k1", got)
	}
	code, _, body = post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a"]}`,
		"Authorization", "Bearer tok", "Idempotency-Key", strings.Repeat("k", 252))
	if code != 400 || !strings.Contains(body, "invalid_id") {
		t.Fatalf("a key too long for the tenant: %d %s", code, body)
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
// request's timeout (504, "not queued"), not an outage (503); and no
// answer shows a tenant's internal job id.
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
	if code != http.StatusGatewayTimeout || !strings.Contains(body, "queueing was confirmed") || strings.Contains(body, "acme~") {
		t.Fatalf("%d %s; want 504 saying the job's queueing was not confirmed, without the internal id", code, body)
	}
}

// No key holds the tenant separator, on an open gateway either: it would
// name a tenant's job there.
func TestKeysCannotNameATenantsJob(t *testing.T) {
	q := &fakeQueue{models: []string{"m"}}
	ts, _ := newServer(t, q, gateway.Config{})
	code, _, body := post(t, ts.URL+"/v1/rerank", `{"query":"q","documents":["a"]}`, "Idempotency-Key", "acme~k1")
	if code != http.StatusBadRequest || len(q.jobs) != 0 {
		t.Fatalf("%d %s, %d jobs queued; want 400 and none", code, body, len(q.jobs))
	}
	resp, err := http.Get(ts.URL + "/v1/jobs/acme~k1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("GET of a tenant's id on an open gateway: %d, want 400", resp.StatusCode)
	}
}
