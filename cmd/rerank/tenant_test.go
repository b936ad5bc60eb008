package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/schemas"
)

// Bearer tokens are tenants, end to end through `rerank serve` (gateway,
// NATS, the worker's slots and pipeline): one tenant can neither read
// another's job by its key nor pre-empt it by sending the key first. A bare
// token is a tenant of its own; NAME:TOKEN names one.
func TestGatewayTenantsAreIsolated(t *testing.T) {
	port, _ := natsembed.FreePort()
	p := startServe(t, t.TempDir(), port, "--gateway-tokens", "tok-acme,tok-globex,named:tok-named")
	docs := func(n int) string {
		d := make([]string, n)
		for i := range d {
			d[i] = strings.Repeat("passage ", i+1)
		}
		b, _ := json.Marshal(d)
		return string(b)
	}
	rerank := func(token, key string, n int) (int, []any) {
		t.Helper()
		code, body := httpDo(t, "POST", p.http+"/v1/rerank", token, `{"query":"q","documents":`+docs(n)+`}`,
			"Idempotency-Key", key, "Content-Type", "application/json")
		var out struct {
			ID      string `json:"id"`
			Results []any  `json:"results"`
		}
		if code == http.StatusOK && (json.Unmarshal([]byte(body), &out) != nil || out.ID != key) {
			t.Fatalf("answer %s: want id %q", body, key)
		}
		return code, out.Results
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) { // the worker's consumers provisioned
		if _, body := httpDo(t, "GET", p.http+"/v1/models", "tok-acme", ""); strings.Contains(body, `"demo"`) {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the gateway lists no model: %s", body)
		}
	}
	// globex sends acme's key first, with its own (2) documents.
	if code, res := rerank("tok-globex", "k-shared", 2); code != 200 || len(res) != 2 {
		t.Fatalf("globex: %d, %d results", code, len(res))
	}
	// acme's request with that key is acme's job: its own 3 documents.
	if code, res := rerank("tok-acme", "k-shared", 3); code != 200 || len(res) != 3 {
		t.Fatalf("acme, after globex used its key: %d, %d results; want acme's own 3", code, len(res))
	}
	// A key is one request: acme's key with other documents is a conflict.
	if code, _ := rerank("tok-acme", "k-shared", 5); code != http.StatusConflict {
		t.Fatalf("acme reusing its key for other documents: %d, want 409", code)
	}
	// acme queues a job; globex cannot read it by its key, acme can.
	code, body := httpDo(t, "POST", p.http+"/v1/jobs", "tok-acme", `{"id":"acme-private","query":"q","candidates":[{"id":"a","text":"secret text"}]}`,
		"Content-Type", "application/json")
	if code != http.StatusAccepted {
		t.Fatalf("acme's job: %d %s", code, body)
	}
	var got string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, got = httpDo(t, "GET", p.http+"/v1/jobs/acme-private", "tok-acme", "")
		if code == http.StatusOK || time.Now().After(deadline) {
			break
		}
	}
	if code != http.StatusOK || !strings.Contains(got, `"id":"acme-private"`) {
		t.Fatalf("acme reading its job: %d %s", code, got)
	}
	for _, token := range []string{"tok-globex", "tok-named"} {
		if code, body := httpDo(t, "GET", p.http+"/v1/jobs/acme-private", token, ""); code != http.StatusNotFound || strings.Contains(body, "secret") {
			t.Fatalf("%s reading acme's job: %d %s; want 404", token, code, body)
		}
	}
	// A named tenant's token works the same.
	if code, res := rerank("tok-named", "k-shared", 4); code != 200 || len(res) != 4 {
		t.Fatalf("named tenant: %d, %d results", code, len(res))
	}

	// One namespace per tenant, over NATS and HTTP: a job the tenant's
	// service submits over NATS (in its namespace, as its account's imports
	// put it there; here a client.Options.Tenant in the service account) is
	// the tenant's over HTTP, and no other tenant's.
	nc, err := nats.Connect(p.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc, client.Options{Model: "demo", Tenant: "named"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Submit(ctx, &schemas.Job{ID: "from-nats", Query: "q", Candidates: []schemas.Candidate{{ID: "a", Text: "nats text"}}})
	if err != nil || res.Error != nil {
		t.Fatalf("named's NATS job: %v %+v", err, res)
	}
	if code, body := httpDo(t, "GET", p.http+"/v1/jobs/from-nats", "tok-named", ""); code != http.StatusOK || !strings.Contains(body, `"id":"from-nats"`) {
		t.Fatalf("named reading its NATS job over HTTP: %d %s", code, body)
	}
	if code, body := httpDo(t, "GET", p.http+"/v1/jobs/from-nats", "tok-acme", ""); code != http.StatusNotFound {
		t.Fatalf("acme reading named's NATS job: %d %s; want 404", code, body)
	}
}
