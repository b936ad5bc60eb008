// Package testenv locates the native library and files that tests need
// (ONNX Runtime, the BERT tokenizer.json) and fails the test, never skips it,
// when they are missing: `make test` installs them first. Allocated
// measures what the tests of hostile input bound.
//
// It may import only the standard library.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ORTVersion is the ONNX Runtime release the project is built and tested against.
const ORTVersion = "1.29.0"

// TokenizerModule is the Go module that ships the BERT-uncased tokenizer.json.
const TokenizerModule = "github.com/clems4ever/all-minilm-l6-v2-go"

// RepoRoot returns the directory holding go.mod, searching up from the
// working directory.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("getting working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatalf("finding go.mod above the working directory")
		}
		dir = parent
	}
}

// ORTLib returns the path of the ONNX Runtime shared library: $ONNXRUNTIME_LIB,
// else the project cache that `make ort` fills.
func ORTLib(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("ONNXRUNTIME_LIB"); p != "" {
		return p
	}
	p := filepath.Join(RepoRoot(tb), ".cache", "onnxruntime", ORTVersion, "libonnxruntime.so.1")
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("ONNX Runtime library not found at %s: run `make ort` (or set ONNXRUNTIME_LIB)", p)
	}
	return p
}

var (
	tokOnce sync.Once
	tokPath string
	tokErr  string
)

// TokenizerJSON returns the path of the BERT-uncased tokenizer.json:
// $RERANK_TOKENIZER_JSON, else the project cache, else the module cache.
func TokenizerJSON(tb testing.TB) string {
	tb.Helper()
	tokOnce.Do(func() {
		if p := os.Getenv("RERANK_TOKENIZER_JSON"); p != "" {
			tokPath = p
			return
		}
		root := RepoRoot(tb)
		p := filepath.Join(root, ".cache", "tokenizer", "tokenizer.json")
		if _, err := os.Stat(p); err == nil {
			tokPath = p
			return
		}
		cmd := exec.Command("go", "mod", "download", "-json", TokenizerModule)
		cmd.Dir = root
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", TokenizerModule).Output()
		if err != nil || strings.TrimSpace(string(out)) == "" {
			_ = cmd.Run()
			out, err = exec.Command("go", "list", "-m", "-f", "{{.Dir}}", TokenizerModule).Output()
		}
		if err != nil {
			tokErr = "locating " + TokenizerModule + ": " + err.Error() + " (run `make assets`)"
			return
		}
		p = filepath.Join(strings.TrimSpace(string(out)), "all_minilm_l6_v2", "tokenizer.json")
		if _, err := os.Stat(p); err != nil {
			tokErr = "tokenizer.json not found at " + p + " (run `make assets`)"
			return
		}
		tokPath = p
	})
	if tokErr != "" {
		tb.Fatal(tokErr)
	}
	return tokPath
}
