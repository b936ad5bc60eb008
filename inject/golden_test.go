package inject_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGolden renders every case in testdata/cases.json and compares the
// `rerank inject` lines with testdata/<name>.golden. Run with -update to
// rewrite them, then read the diff: each value was checked against Python's
// int()/f-string formatting of the same float64 expression.
func TestGolden(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name      string          `json:"name"`
		Preset    string          `json:"preset"`
		Overrides json.RawMessage `json:"overrides"`
		Job       schemas.Job     `json:"job"`
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			cfg, err := inject.Resolve(c.Preset, c.Overrides)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			pairs, err := cfg.Render(&c.Job)
			if err != nil {
				ce := schemas.AsError(err)
				if ce == nil {
					t.Fatalf("uncoded error %v", err)
				}
				b, _ := json.Marshal(ce)
				buf.Write(append(b, '\n'))
			} else {
				enc := json.NewEncoder(&buf)
				enc.SetEscapeHTML(false)
				for _, l := range inject.Lines(&c.Job, pairs) {
					if err := enc.Encode(l); err != nil {
						t.Fatal(err)
					}
				}
			}
			path := filepath.Join("testdata", c.Name+".golden")
			if *update {
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (run go test ./inject -update): %v", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("output differs from %s:\n got:\n%s\nwant:\n%s", path, buf.Bytes(), want)
			}
		})
	}
}
