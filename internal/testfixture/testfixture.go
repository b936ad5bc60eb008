// Package testfixture builds, once per test process, what the end-to-end
// tests of several packages run: the rerank binary and the tiny random-weight
// model, in one temporary directory; and it runs in-process workers for a
// test. Like testenv it fails the test, never skips it, when something is
// missing.
//
// Test support only. It may import internal/testenv, model/testmodel and
// worker.
package testfixture

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/model/testmodel"
	"github.com/rerank/rerank/worker"
)

var (
	dirOnce sync.Once
	dir     string
	dirErr  error

	binOnce sync.Once
	bin     string
	binErr  error

	tiny, l12 lazyModel
)

// lazyModel is a generated model directory, written on first use.
type lazyModel struct {
	once sync.Once
	dir  string
	err  error
}

func (l *lazyModel) get(tb testing.TB, name string, spec testmodel.Spec) string {
	tb.Helper()
	d := Dir(tb)
	tok := testenv.TokenizerJSON(tb)
	l.once.Do(func() {
		l.dir = filepath.Join(d, name)
		l.err = testmodel.WriteDir(l.dir, spec, tok)
	})
	if l.err != nil {
		tb.Fatal(l.err)
	}
	return l.dir
}

// Dir is the process's fixture directory, created on first use.
func Dir(tb testing.TB) string {
	tb.Helper()
	dirOnce.Do(func() { dir, dirErr = os.MkdirTemp("", "rerank-test-") })
	if dirErr != nil {
		tb.Fatalf("creating the test fixture directory: %v", dirErr)
	}
	return dir
}

// Binary builds cmd/rerank into Dir once and returns its path.
func Binary(tb testing.TB) string {
	tb.Helper()
	d := Dir(tb)
	binOnce.Do(func() {
		bin = filepath.Join(d, "rerank")
		// The revision is linked in as `make build` does (GOFLAGS may
		// turn the toolchain's own VCS stamp off).
		args := []string{"build", "-o", bin}
		if rev, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
			args = append(args, "-ldflags", "-X github.com/rerank/rerank/version.stampedRevision="+strings.TrimSpace(string(rev)))
		}
		if out, err := exec.Command("go", append(args, "github.com/rerank/rerank/cmd/rerank")...).CombinedOutput(); err != nil {
			binErr = fmt.Errorf("building rerank: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		tb.Fatal(binErr)
	}
	return bin
}

// TinyModel writes the 2-layer random-weight model directory into Dir once
// and returns it.
func TinyModel(tb testing.TB) string {
	tb.Helper()
	return tiny.get(tb, "tiny", testmodel.Tiny)
}

// L12Model writes the MiniLM-L12-shape random-weight model directory
// (about 1 s, 133 MB) into Dir once and returns it.
func L12Model(tb testing.TB) string {
	tb.Helper()
	return l12.get(tb, "l12", testmodel.MiniLML12)
}

// Cleanup removes Dir, if it was created, unless keep; it returns the
// directory's path (empty when none was created). Call it from TestMain
// after m.Run.
func Cleanup(keep bool) string {
	if dir == "" {
		return ""
	}
	if !keep {
		os.RemoveAll(dir)
	}
	return dir
}

// StartWorker runs a worker for r on its own connection to the NATS server
// at url until the test ends; the test fails if Run returns an error.
func StartWorker(tb testing.TB, url string, r worker.Reranker, cfg worker.Config) {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	w, err := worker.New(nc, r, cfg, nil, nil)
	if err != nil {
		nc.Close()
		tb.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	tb.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			tb.Errorf("worker: %v", err)
		}
		nc.Close()
	})
}
