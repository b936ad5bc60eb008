package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/schemas"
)

// The pair cache end to end, through `rerank serve` (NATS, the slot pool,
// the pipeline): a re-submitted candidate list, under a new job id, is
// answered with the same ranking from the cache, in each tenant's own
// entries (another tenant's first submission of it is scored); every
// result names the model's digest, which /metrics and the gateway's
// GET /v1/models show too, and the hits are counted there.
func TestPairCacheThroughServe(t *testing.T) {
	port, _ := natsembed.FreePort()
	p := startServe(t, t.TempDir(), port, "--tenants", "acme")
	nc, err := nats.Connect(p.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	job := func(id string) *schemas.Job {
		j := &schemas.Job{ID: id, Query: "what is the capital of france"}
		for i, text := range []string{"Paris is the capital of France.", "Lyon is a city.", "Berlin is in Germany.", "Madrid is in Spain."} {
			j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprint(i), Text: text})
		}
		return j
	}
	shared, _ := client.New(nc, client.Options{Model: "demo"})
	acme, _ := client.New(nc, client.Options{Model: "demo", Tenant: "acme"})
	first, err := shared.Submit(ctx, job("first"))
	if err != nil || first.Error != nil || first.ModelDigest == "" || first.Cached != 0 {
		t.Fatalf("first: %v %+v", err, first)
	}
	for _, c := range []struct {
		who    *client.Client
		id     string
		cached int
	}{{shared, "again", 4}, {acme, "first", 0}, {acme, "again", 4}} {
		r, err := c.who.Submit(ctx, job(c.id))
		if err != nil || r.Error != nil || r.Cached != c.cached || r.ModelDigest != first.ModelDigest {
			t.Fatalf("%s: %v %+v; want %d pairs from the cache, digest %s", c.id, err, r, c.cached, first.ModelDigest)
		}
		for i := range r.Results {
			if r.Results[i].Index != first.Results[i].Index || r.Results[i].RelevanceScore != first.Results[i].RelevanceScore {
				t.Fatalf("%s: %+v, first %+v", c.id, r.Results, first.Results)
			}
		}
	}
	// The gateway lists the digest of the results it received.
	if code, body := httpDo(t, "POST", p.http+"/v1/rerank", "", `{"model":"demo","query":"q","documents":["a","b"]}`); code != 200 {
		t.Fatalf("HTTP rerank: %d %s", code, body)
	}
	if _, body := httpDo(t, "GET", p.http+"/v1/models", "", ""); !strings.Contains(body, `"digests":["`+first.ModelDigest+`"]`) {
		t.Errorf("GET /v1/models: %s, want the digest %s", body, first.ModelDigest)
	}
	_, body := httpDo(t, "GET", p.metrics+"/metrics", "", "")
	if !strings.Contains(body, `rerank_model_info{digest="`+first.ModelDigest+`",model="demo"} 1`) {
		t.Errorf("/metrics has no rerank_model_info for digest %s", first.ModelDigest)
	}
	m := regexp.MustCompile(`(?m)^rerank_score_cache_hits_total (\d+)`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("/metrics has no rerank_score_cache_hits_total")
	}
	if n, _ := strconv.Atoi(m[1]); n != 8 {
		t.Errorf("rerank_score_cache_hits_total %d, want 8", n)
	}
	if !strings.Contains(p.stderr.String(), "digest="+first.ModelDigest) {
		t.Errorf("the log does not name the digest")
	}
}
