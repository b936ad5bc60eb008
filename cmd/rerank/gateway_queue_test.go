package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/gateway"
	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// gatewayNATS starts an embedded NATS server with the streams and the
// consumers of model "m" (as a worker provisions them, with wcfg's limits)
// and the accepted-jobs bucket, and returns it with a gateway's connection
// and queue over it.
func gatewayNATS(t *testing.T, maxPayload int32, wcfg worker.Config) (*natsembed.Server, *nats.Conn, *natsQueue) {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir(), MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	nc, err := connectGatewayNATS(ns.ClientURL(), []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := worker.Provision(ctx, js, []string{"m"}, wcfg); err != nil {
		t.Fatal(err)
	}
	q, err := newNATSQueue(nc, schemas.Limits{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.shared().ProvisionTracking(ctx, 1, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	return ns, nc, q
}

func oneJob(id string) *schemas.Job {
	return &schemas.Job{ID: id, Model: "m", Query: "q", Candidates: []schemas.Candidate{{ID: "a", Text: "x"}}}
}

// TestGatewayAnswersUnavailableAtOnceWhenNATSIsDown: once the gateway's
// NATS connection is lost, Submit, Lookup and Models answer
// gateway.ErrUnavailable at once (nothing is buffered to be published
// after the request was answered), and an HTTP request gets 503 with
// Retry-After within a second or two.
func TestGatewayAnswersUnavailableAtOnceWhenNATSIsDown(t *testing.T) {
	ns, nc, q := gatewayNATS(t, 0, worker.Config{})
	if _, err := q.Models(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.New(gateway.Config{}, q, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	ns.Stop()
	for deadline := time.Now().Add(10 * time.Second); nc.Status() == nats.CONNECTED; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client never noticed the server stopped")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, call := range map[string]func() error{
		"Submit": func() error { _, err := q.Submit(ctx, oneJob("down-1"), schemas.Interactive); return err },
		"Lookup": func() error { _, _, err := q.Lookup(ctx, "", "down-1"); return err },
		"Models": func() error { _, err := q.Models(ctx); return err },
	} {
		start := time.Now()
		err := call()
		if !errors.Is(err, gateway.ErrUnavailable) || time.Since(start) > time.Second {
			t.Fatalf("%s after %s: %v, want gateway.ErrUnavailable at once", name, time.Since(start), err)
		}
	}
	start := time.Now()
	req, _ := http.NewRequest("POST", ts.URL+"/v1/rerank", strings.NewReader(`{"query":"q","documents":["a"]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || time.Since(start) > 2*time.Second {
		t.Fatalf("after %s: %d %v %s, want 503 with Retry-After at once", time.Since(start), resp.StatusCode, resp.Header, b)
	}
}

// TestGatewayUnavailableErrors: the NATS errors of a lost or closing
// connection are gateway.ErrUnavailable (503), a coded error stays coded,
// and a client's own cancellation is not an outage.
func TestGatewayUnavailableErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{nats.ErrReconnectBufExceeded, gateway.ErrUnavailable},
		{nats.ErrConnectionReconnecting, gateway.ErrUnavailable},
		{nats.ErrConnectionDraining, gateway.ErrUnavailable},
		{nats.ErrConnectionClosed, gateway.ErrUnavailable},
		{nats.ErrNoResponders, gateway.ErrUnavailable},
		{jetstream.ErrNoStreamResponse, gateway.ErrUnavailable},
		{context.DeadlineExceeded, gateway.ErrUnavailable},
		{schemas.Errorf(schemas.CodeQueueFull, "full"), &schemas.Error{Code: schemas.CodeQueueFull}},
	} {
		wrapped := fmt.Errorf("publishing job j: %w", tc.err)
		if err := unavailable(wrapped); !errors.Is(err, tc.want) || !errors.Is(err, tc.err) {
			t.Errorf("unavailable(%v) = %v, want %v", wrapped, err, tc.want)
		}
	}
	if err := unavailable(context.Canceled); errors.Is(err, gateway.ErrUnavailable) {
		t.Errorf("a canceled request reads as an outage: %v", err)
	}
}

// TestGatewayRefusesJobOverServerMaxPayload: a job whose encoding is over
// the NATS server's max payload is a 413 payload_too_large, not a 500.
func TestGatewayRefusesJobOverServerMaxPayload(t *testing.T) {
	_, _, q := gatewayNATS(t, 1<<20, worker.Config{})
	job := oneJob("big-1")
	job.Candidates = nil
	for i := range 40 {
		job.Candidates = append(job.Candidates, schemas.Candidate{ID: fmt.Sprint(i), Text: strings.Repeat("x", 40<<10)})
	}
	_, err := q.Submit(context.Background(), job, schemas.Interactive)
	if !errors.Is(err, schemas.ErrPayloadTooLarge) {
		t.Fatalf("%v, want payload_too_large", err)
	}
}

// TestGatewayLookupOfEvictedResultIsGone: a job accepted before the oldest
// result the results stream still holds (the stream, full, dropped the
// older ones) reads as gone, not pending for the rest of the day; a job
// accepted since reads pending, and a stored result is served.
func TestGatewayLookupOfEvictedResultIsGone(t *testing.T) {
	_, nc, q := gatewayNATS(t, 0, worker.Config{ResultsMaxBytes: 8 << 10})
	ctx := context.Background()
	if _, err := q.Submit(ctx, oneJob("old-1"), schemas.Interactive); err != nil {
		t.Fatal(err)
	}
	if _, pending, err := q.Lookup(ctx, "", "old-1"); !pending || err != nil {
		t.Fatalf("before any eviction: pending %v, %v", pending, err)
	}
	for i := range 20 { // 20 KiB of results through an 8 KiB stream
		m := nats.NewMsg(schemas.ResultSubject(fmt.Sprintf("other-%d", i)))
		m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeJSON)
		m.Data = fmt.Appendf(nil, `{"v":1,"id":"other-%d","model":"m","results":[],"pad":%q}`, i, strings.Repeat("p", 1<<10))
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s, err := js.Stream(ctx, schemas.ResultsStream)
		if err == nil && s.CachedInfo().State.LastSeq >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the results never reached the stream")
		}
	}
	if _, _, err := q.Lookup(ctx, "", "old-1"); !errors.Is(err, gateway.ErrGone) {
		t.Fatalf("an accepted job whose result would have been evicted: %v, want gateway.ErrGone", err)
	}
	if _, err := q.Submit(ctx, oneJob("new-1"), schemas.Interactive); err != nil {
		t.Fatal(err)
	}
	if _, pending, err := q.Lookup(ctx, "", "new-1"); !pending || err != nil {
		t.Fatalf("a job accepted after the oldest stored result: pending %v, %v", pending, err)
	}
	if res, _, err := q.Lookup(ctx, "", "other-19"); err != nil || res == nil || res.ID != "other-19" {
		t.Fatalf("a stored result: %+v %v", res, err)
	}
}

// TestGatewayOnLoopbackRefusesForeignHosts: a gateway without tokens on a
// loopback address answers loopback Host names only (DNS rebinding); one
// with tokens, or on another address, answers any.
func TestGatewayOnLoopbackRefusesForeignHosts(t *testing.T) {
	_, nc, _ := gatewayNATS(t, 0, worker.Config{})
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		tokens []string
		want   int
	}{
		{nil, http.StatusMisdirectedRequest},
		{[]string{"t0ken"}, http.StatusOK},
	} {
		gw, err := startGateway(context.Background(), nc, gateway.Config{Tokens: tc.tokens}, false, 1, 0, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- gw.Serve(ctx, ln) }() // stopped and awaited below
		for host, want := range map[string]int{"evil.example:8080": tc.want, ln.Addr().String(): http.StatusOK, "localhost": http.StatusOK} {
			req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/v1/models", nil)
			req.Host = host
			req.Header.Set("Authorization", "Bearer t0ken")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("tokens %v, Host %s: %d, want %d", tc.tokens, host, resp.StatusCode, want)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestGatewayMemoryLimitFlag: `rerank gateway` takes --memory-limit as
// `rerank serve` does, and refuses a bad one before it starts.
func TestGatewayMemoryLimitFlag(t *testing.T) {
	r := runCmd(t, "", "gateway", "--memory-limit", "lots")
	if r.code != 2 || !strings.Contains(r.stderr, `--memory-limit "lots"`) {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
}

// A token's tenant the workers do not serve (no job stream of its own)
// is answered unavailable, naming the --tenants it lacks, at once; and
// nothing of it is queued in the shared namespace.
func TestGatewayTenantWithoutStream(t *testing.T) {
	_, nc, q := gatewayNATS(t, 0, worker.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j := oneJob("t-1")
	j.Tenant = "acme"
	start := time.Now()
	_, err := q.Submit(ctx, j, schemas.Interactive)
	if !errors.Is(err, gateway.ErrUnavailable) || !strings.Contains(err.Error(), "--tenants acme") {
		t.Fatalf("Submit for an unserved tenant: %v; want ErrUnavailable naming --tenants acme", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("answered after %s", d)
	}
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, schemas.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("%d jobs in %s", n, schemas.JobsStream)
	}
}

// Without the accepted-jobs bucket (a gateway with --provision=false
// before ops ran `rerank provision`), the gateway is not ready, and a
// request is answered unavailable naming the remedy, not an internal error.
func TestGatewayWithoutBucketIsNotReady(t *testing.T) {
	_, nc, q := gatewayNATS(t, 0, worker.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	if err := js.DeleteKeyValue(ctx, client.AcceptedBucket); err != nil {
		t.Fatal(err)
	}
	if err := q.Ready(ctx); !errors.Is(err, gateway.ErrUnavailable) || !strings.Contains(err.Error(), "rerank provision") {
		t.Fatalf("Ready without the bucket: %v", err)
	}
	if _, err := q.Submit(ctx, oneJob("b-1"), schemas.Interactive); !errors.Is(err, gateway.ErrUnavailable) || !strings.Contains(err.Error(), "rerank provision") {
		t.Fatalf("Submit without the bucket: %v", err)
	}
}

// An empty consumer list (no worker pool yet, or a server listing none
// for a moment while it restarts) is unavailable, retried by clients, not
// a 404 that would end a request whose job may be queued already.
func TestGatewayEmptyModelListIsUnavailable(t *testing.T) {
	_, nc, q := gatewayNATS(t, 0, worker.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	for _, lane := range schemas.Lanes {
		if err := js.DeleteConsumer(ctx, schemas.JobsStream, worker.LaneConsumerName("m", lane)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Models(ctx); !errors.Is(err, gateway.ErrUnavailable) {
		t.Fatalf("Models with no consumers: %v, want ErrUnavailable", err)
	}
}
