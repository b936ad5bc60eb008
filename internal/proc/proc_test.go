package proc_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rerank/rerank/internal/proc"
)

func sh(t *testing.T, script, ready string) (*proc.Proc, error) {
	return proc.Start(proc.Spec{Name: "sh", Path: "/bin/sh", Args: []string{"-c", script},
		Log: filepath.Join(t.TempDir(), "logs", "sh.log"), Ready: ready, ReadyTimeout: 10 * time.Second})
}

func TestStartWaitsForReadyAndStops(t *testing.T) {
	p, err := sh(t, `trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.01; done`, "ready")
	if err != nil {
		t.Fatal(err)
	}
	if p.Exited() || p.Pid() <= 0 {
		t.Fatal("not running after ready")
	}
	// The busy loop costs CPU; the kernel's count of it only grows.
	c1, err := p.CPUSeconds()
	if err != nil || c1 < 0 {
		t.Fatalf("CPUSeconds = %v, %v", c1, err)
	}
	if rss, err := p.PeakRSSMB(); err != nil || rss <= 0 {
		t.Fatalf("PeakRSSMB = %v, %v", rss, err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Log(), "bye") {
		t.Errorf("SIGTERM not delivered; log %q", p.Log())
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestExitBeforeReadyAndOnItsOwn(t *testing.T) {
	if _, err := sh(t, `echo failing; exit 3`, "ready"); !errors.Is(err, proc.ErrExited) || !strings.Contains(err.Error(), "failing") {
		t.Errorf("err = %v, want ErrExited with the log's tail", err)
	}
	p, err := sh(t, `exit 0`, "")
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if err := p.Stop(time.Second); !errors.Is(err, proc.ErrExited) {
		t.Errorf("Stop of a process that ended by itself: %v, want ErrExited", err)
	}
}

func TestStopKillsWhatIgnoresSIGTERM(t *testing.T) {
	p, err := sh(t, `trap '' TERM; echo ready; while :; do sleep 0.05; done`, "ready")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop = %v, want killed after the grace", err)
	}
	if !p.Exited() {
		t.Error("still running after Stop")
	}
}

// CPUSeconds reads utime and stime: this process's count grows by the CPU
// time it burns.
func TestCPUSecondsCountsWork(t *testing.T) {
	before, err := proc.CPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 1.0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		for range 1_000_000 {
			x = x*1.0000001 + 1e-9
		}
		if now, _ := proc.CPUSeconds(os.Getpid()); now-before >= 0.2 {
			return
		}
	}
	t.Errorf("200 ms of CPU not counted in 10 s of spinning (x=%v)", x)
}

func TestMachineCPU(t *testing.T) {
	b1, t1, err := proc.MachineCPU()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		b2, t2, err := proc.MachineCPU()
		if err != nil {
			t.Fatal(err)
		}
		if b2 < b1 || t2 < t1 || b2 > t2 {
			t.Fatalf("busy %v→%v, total %v→%v", b1, b2, t1, t2)
		}
		if t2 > t1 {
			return
		}
	}
	t.Error("the machine's CPU time did not advance in 5s")
}
