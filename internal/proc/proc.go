package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Spec says how to start a process.
type Spec struct {
	Name string // for messages
	Path string
	Args []string
	Env  []string // added to this process's environment
	// Log is the file its stdout and stderr go to (created; parent
	// directories too).
	Log string
	// Ready, if set, is a string Start waits to see in the log, for at most
	// ReadyTimeout (default 90 s).
	Ready        string
	ReadyTimeout time.Duration
}

// Proc is a started process.
type Proc struct {
	Spec
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool
}

// ErrExited reports a process that ended before it was ready.
var ErrExited = errors.New("process exited")

// Start starts the process and, with Spec.Ready, waits until it is ready.
// A process that is not ready in time is killed.
func Start(s Spec) (*Proc, error) {
	if err := os.MkdirAll(filepath.Dir(s.Log), 0o755); err != nil {
		return nil, fmt.Errorf("starting %s: %w", s.Name, err)
	}
	lf, err := os.Create(s.Log)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", s.Name, err)
	}
	p := &Proc{Spec: s, done: make(chan struct{})}
	p.cmd = exec.Command(s.Path, s.Args...)
	p.cmd.Env = append(os.Environ(), s.Env...)
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	if err := p.cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", s.Name, s.Path, err)
	}
	go func() { p.cmd.Wait(); lf.Close(); close(p.done) }() // owned: ends with the process, awaited by Stop/Kill
	if s.Ready == "" {
		return p, nil
	}
	timeout := s.ReadyTimeout
	if timeout <= 0 {
		timeout = 90 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Log(), s.Ready) {
		if p.Exited() {
			return nil, fmt.Errorf("%w: %s at start (%v):\n%s", ErrExited, s.Name, p.cmd.ProcessState, p.Tail(40))
		}
		if time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("starting %s: not ready after %s:\n%s", s.Name, timeout, p.Tail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Log is what the process wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.Spec.Log)
	return string(b)
}

// Tail is the last lines of the log.
func (p *Proc) Tail(lines int) string {
	l := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Proc) Kill() {
	p.stopped = true
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It returns an error when the process had already exited on its
// own, did not stop in time, or exited with a non-zero status.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		if p.stopped {
			return nil
		}
		p.stopped = true
		return fmt.Errorf("%w: %s on its own (%v)", ErrExited, p.Name, p.cmd.ProcessState)
	}
	p.stopped = true
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			return fmt.Errorf("stopping %s: exit status %d after SIGTERM", p.Name, code)
		}
		return nil
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("stopping %s: still running %s after SIGTERM; killed", p.Name, grace)
	}
}

// Status reads a field of /proc/<pid>/status in kB (VmRSS, VmHWM), or -1
// when the process is gone.
func (p *Proc) Status(field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// PeakRSSMB is the process's peak resident set (VmHWM) in MB.
func (p *Proc) PeakRSSMB() (float64, error) {
	kb := p.Status("VmHWM")
	if kb < 0 {
		return 0, fmt.Errorf("reading VmHWM of %s: process gone", p.Name)
	}
	return float64(kb) / 1024, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// CPUSeconds is the user + system CPU time the process has used so far.
func (p *Proc) CPUSeconds() (float64, error) { return CPUSeconds(p.Pid()) }

// CPUSeconds is the user + system CPU time process pid has used so far.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces: fields count from its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("reading CPU time of %d: malformed /proc/%d/stat", pid, pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state is field 3, so utime (14) and stime (15) are f[11], f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("reading CPU time of %d: short /proc/%d/stat", pid, pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("reading CPU time of %d: %w", pid, err)
	}
	return (ut + st) / clockTicks, nil
}

// MachineCPU is the machine's busy and total CPU seconds so far (all CPUs,
// from /proc/stat): the busy share of a period is the ratio of their deltas.
func MachineCPU() (busy, total float64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("reading machine CPU time: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("reading machine CPU time: unexpected /proc/stat line %q", line)
	}
	// user nice system idle iowait irq softirq steal guest guest_nice: guest
	// time is already in user and nice; steal is time the hypervisor gave
	// others, neither ours nor idle, so it counts in the total only.
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("reading machine CPU time: %w", err)
		}
		total += n
		switch i {
		case 0, 1, 2, 5, 6: // user, nice, system, irq, softirq
			busy += n
		}
	}
	return busy / clockTicks, total / clockTicks, nil
}
