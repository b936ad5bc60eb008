package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// Tracked clients of two tenants and of the shared namespace submit one
// job id with different content: three jobs, no conflict, each answered
// in its own namespace and found there by Lookup and AcceptedAt.
func TestTenantClientsHaveOwnIDs(t *testing.T) {
	e := setupWith(t, worker.Config{Provision: true, FetchWait: 200 * time.Millisecond, WorkerID: "w", Tenants: []string{"a", "b"}}, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	texts := map[string][]string{"": {"x"}, "a": {"x", "yy"}, "b": {"x", "yy", "zzz"}}
	for _, tenant := range []string{"", "a", "b"} {
		c, err := client.New(e.nc, client.Options{Model: "m", Track: true, Tenant: tenant})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.ProvisionTracking(ctx, 1, time.Hour); err != nil {
			t.Fatal(err)
		}
		res, err := c.Submit(ctx, job("k", texts[tenant]...))
		if err != nil || res.Error != nil || len(res.Results) != len(texts[tenant]) {
			t.Fatalf("tenant %q: %v %+v", tenant, err, res)
		}
		if want := schemas.TenantJobsStream(tenant, -1); res.JobStream != want {
			t.Errorf("tenant %q: job in %s, want %s", tenant, res.JobStream, want)
		}
		got, err := c.Lookup(ctx, "k")
		if err != nil || !got.Answers(res.JobStream, res.JobSeq) {
			t.Errorf("tenant %q: Lookup = %+v, %v", tenant, got, err)
		}
		if ok, err := c.Accepted(ctx, "k"); !ok || err != nil {
			t.Errorf("tenant %q: Accepted = %v, %v", tenant, ok, err)
		}
	}
	// A tenant's client may not aim results outside its results.
	c, _ := client.New(e.nc, client.Options{Model: "m", Tenant: "a"})
	j := job("k2", "x")
	j.ReplyTo = "_INBOX.elsewhere"
	if _, err := c.SubmitAsync(ctx, j); schemas.AsError(err) == nil || schemas.AsError(err).Code != schemas.CodeInvalidReplyTo {
		t.Errorf("tenant reply_to outside its results: %v", err)
	}
	if _, err := client.New(e.nc, client.Options{Tenant: "a.b"}); err == nil {
		t.Error("tenant a.b accepted")
	}
}
