package archtest

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/rerank/rerank/"

// allowed lists, for each library package, the packages of this module it
// may depend on, directly or through another (pipeline reaches
// internal/onnxpb through model), as its doc.go says.
var allowed = map[string][]string{
	"schemas":               {},
	"inject":                {"schemas", "model/wordpiece"},
	"model/wordpiece":       {},
	"model":                 {"model/wordpiece", "internal/onnxpb"},
	"model/quantize":        {"internal/onnxpb"},
	"pipeline/calibrate":    {"schemas", "inject", "model", "model/wordpiece", "model/quantize", "pipeline", "pipeline/sched", "pipeline/paircache", "internal/onnxpb"},
	"model/testmodel":       {"internal/onnxpb"},
	"model/simulated":       {"model", "model/wordpiece", "internal/onnxpb"},
	"internal/onnxpb":       {},
	"internal/proc":         {},
	"pipeline/sched":        {"schemas"},
	"pipeline/paircache":    {"model/wordpiece"},
	"pipeline/pipelinetest": {"model", "model/wordpiece", "internal/onnxpb"},
	"sharedcache":           {"pipeline/paircache", "model/wordpiece"},
	"pipeline":              {"schemas", "inject", "model", "model/wordpiece", "pipeline/sched", "pipeline/paircache", "internal/onnxpb"},
	"worker":                {"schemas"},
	"gateway":               {"schemas"},
	"client":                {"schemas"},
	"eval":                  {"schemas"},
	"metrics":               {},
	"version":               {},
}

func TestImportRules(t *testing.T) {
	for pkg, ok := range allowed {
		out, err := exec.Command("go", "list", "-deps", "../../"+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			d, mine := strings.CutPrefix(dep, module)
			if !mine || d == pkg {
				continue
			}
			if !slices.Contains(ok, d) {
				t.Errorf("%s imports %s (allowed: %v)", pkg, d, ok)
			}
		}
	}
}

// TestWordpieceIsPureGo holds model/wordpiece to its doc.go: the standard
// library and golang.org/x/text only, so no cgo and no onnxruntime_go, and
// its tests and fuzzing run with CGO_ENABLED=0. go list runs with cgo on, so
// that a cgo file anywhere below it would show as a runtime/cgo dependency.
func TestWordpieceIsPureGo(t *testing.T) {
	const pkg = module + "model/wordpiece"
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", "../../model/wordpiece")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps model/wordpiece: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		dep, std, _ := strings.Cut(line, " ")
		switch {
		case dep == "runtime/cgo" || strings.Contains(dep, "onnxruntime_go"):
			t.Errorf("model/wordpiece depends on %s: it must build without cgo", dep)
		case std == "true", dep == pkg, strings.HasPrefix(dep, "golang.org/x/text/"):
		default:
			t.Errorf("model/wordpiece depends on %s (allowed: the standard library and golang.org/x/text)", dep)
		}
	}
}
