package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rerank/rerank/gateway"
	"github.com/rerank/rerank/schemas"
)

// serveOn runs a gateway with Serve on a loopback listener for the test's
// lifetime and returns its address.
func serveOn(t *testing.T, cfg gateway.Config, q gateway.Queue) string {
	t.Helper()
	s, err := gateway.New(cfg, q, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }() // stopped and awaited at cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// dial opens a raw connection to addr, closed at cleanup, whose reads and
// writes fail after limit.
func dial(t *testing.T, addr string, limit time.Duration) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(limit))
	return c
}

// closedByServer reads c to its end and fails unless the server closed the
// connection (before c's deadline); it returns what was read.
func closedByServer(t *testing.T, c net.Conn, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("the server kept the connection open: %v (read %q)", err, b)
	}
	return string(b)
}

// TestUnauthenticatedRequestIsAnsweredWithoutItsBody: a request with no
// token that announces a body and never sends it is answered 401 at once,
// and its connection closed, without the server waiting for the body.
func TestUnauthenticatedRequestIsAnsweredWithoutItsBody(t *testing.T) {
	addr := serveOn(t, gateway.Config{Tokens: []string{"s3cret"}}, &fakeQueue{models: []string{"m"}})
	c := dial(t, addr, 5*time.Second)
	fmt.Fprintf(c, "POST /v1/rerank HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer while the body is missing: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("%d, want 401", resp.StatusCode)
	}
	closedByServer(t, c, br)
}

// TestStalledBodyIsDisconnected: a client that sends part of its body and
// stalls is answered 408 and disconnected once ReadTimeout has passed.
func TestStalledBodyIsDisconnected(t *testing.T) {
	addr := serveOn(t, gateway.Config{ReadTimeout: 300 * time.Millisecond}, &fakeQueue{models: []string{"m"}})
	c := dial(t, addr, 5*time.Second)
	fmt.Fprintf(c, "POST /v1/rerank HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\":", addr)
	if out := closedByServer(t, c, c); out != "" && !strings.HasPrefix(out, "HTTP/1.1 408") {
		t.Fatalf("answered %q, want 408 or nothing", out)
	}
}

// TestIdleConnectionIsClosed: a keep-alive connection left idle is closed
// after IdleTimeout.
func TestIdleConnectionIsClosed(t *testing.T) {
	addr := serveOn(t, gateway.Config{IdleTimeout: 300 * time.Millisecond}, &fakeQueue{models: []string{"m"}})
	c := dial(t, addr, 5*time.Second)
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	closedByServer(t, c, br)
}

// slowQueue answers every job after delay.
type slowQueue struct {
	*fakeQueue
	delay time.Duration
}

type slowPending struct {
	gateway.Pending
	delay time.Duration
}

func (p slowPending) Result(ctx context.Context) (*schemas.Result, error) {
	select {
	case <-time.After(p.delay): // the worker's time
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting: %w", ctx.Err())
	}
	return p.Pending.Result(ctx)
}

func (q *slowQueue) Submit(ctx context.Context, job *schemas.Job, lane schemas.Lane) (gateway.Pending, error) {
	p, err := q.fakeQueue.Submit(ctx, job, lane)
	if err != nil {
		return nil, err
	}
	return slowPending{p, q.delay}, nil
}

// TestLongWaitOutlivesReadTimeout: ReadTimeout bounds reading the request,
// not the wait for its result: a result slower than ReadTimeout is still
// answered.
func TestLongWaitOutlivesReadTimeout(t *testing.T) {
	addr := serveOn(t, gateway.Config{ReadTimeout: 200 * time.Millisecond},
		&slowQueue{fakeQueue: &fakeQueue{models: []string{"m"}}, delay: 700 * time.Millisecond})
	code, _, body := post(t, "http://"+addr+"/v1/rerank", `{"query":"q","documents":["a"]}`)
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
}
