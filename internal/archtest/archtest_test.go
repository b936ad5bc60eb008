package archtest

import (
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
	"schemas":                  {},
	"inject":                   {"schemas"},
	"model":                    {"internal/onnxpb"},
	"model/quantize":           {"internal/onnxpb"},
	"model/quantize/calibrate": {"schemas", "inject", "model", "model/quantize", "pipeline", "pipeline/sched", "internal/onnxpb"},
	"model/testmodel":          {"internal/onnxpb"},
	"model/simulated":          {"model", "internal/onnxpb"},
	"internal/onnxpb":          {},
	"internal/proc":            {},
	"pipeline/sched":           {"schemas"},
	"pipeline":                 {"schemas", "inject", "model", "pipeline/sched", "internal/onnxpb"},
	"worker":                   {"schemas"},
	"gateway":                  {"schemas"},
	"client":                   {"schemas"},
	"eval":                     {"schemas"},
	"metrics":                  {},
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
