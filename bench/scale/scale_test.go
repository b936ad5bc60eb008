package scale_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rerank/rerank/bench/scale"
)

// The benchmark itself, small: a real 3-node cluster and two worker
// processes with the simulated model, so that `make bench-scale` cannot rot
// between runs. It checks the table's accounting, not speed.
func TestScaleBenchmarkRuns(t *testing.T) {
	dir := t.TempDir()
	bins := map[string]string{"rerank": "github.com/rerank/rerank/cmd/rerank", "nats-server": "github.com/nats-io/nats-server/v2"}
	for name, pkg := range bins {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", name, err, out)
		}
	}
	var out, progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rows, err := scale.Run(ctx, scale.Config{
		Rerank: filepath.Join(dir, "rerank"), NATSServer: filepath.Join(dir, "nats-server"), Dir: filepath.Join(dir, "run"),
		Sizes: []int{1, 2}, Kinds: []string{"small"}, Model: "sim:1ms:2ms", Partitions: 2,
		Warmup: time.Second, Window: 2 * time.Second, Log: &progress,
	}, &out)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, progress.String(), out.String())
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2:\n%s", len(rows), out.String())
	}
	// Pairs are counted when scored and jobs when their results arrive: in
	// a 2 s window the two may differ by a few jobs' worth.
	for _, r := range rows {
		if r.Jobs == 0 || r.JobsPerSec <= 0 || r.PairsPerSec < 7*r.JobsPerSec || r.P50 <= 0 || r.P99 < r.P50 ||
			r.MsgsPerJob <= 0 || r.BytesPerJob <= 0 || r.BrokerCPUPer1000 <= 0 || r.Unanswered != 0 {
			t.Errorf("implausible row %+v", r)
		}
	}
	// The simulated worker does ~880 pairs/s (16 pairs per 18 ms call): 10
	// candidates a job, at most ~90 jobs/s each.
	if r := rows[0]; r.JobsPerSec > 100 {
		t.Errorf("one worker answered %.0f jobs/s, faster than its simulated model allows", r.JobsPerSec)
	}
	if rows[0].Efficiency != 1 {
		t.Errorf("efficiency of the first size %v, want 1 by definition", rows[0].Efficiency)
	}
	for _, want := range []string{"scale_efficiency_1: 1.000", "scale_efficiency_2:", "partitions 2", "idle, 2 workers"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
