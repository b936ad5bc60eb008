package faults

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	iproc "github.com/rerank/rerank/internal/proc"
)

var (
	natsOnce sync.Once
	natsBin  string
	natsErr  error
)

// natsServer builds the nats-server command from the module in go.mod
// (github.com/nats-io/nats-server/v2, package main at its root) once.
func natsServer(t testing.TB) string {
	t.Helper()
	assets(t)
	natsOnce.Do(func() {
		natsBin = filepath.Join(buildDir, "nats-server")
		out, err := exec.Command("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsErr = fmt.Errorf("building nats-server: %v\n%s", err, out)
		}
	})
	if natsErr != nil {
		t.Fatal(natsErr)
	}
	return natsBin
}

// processCluster runs the nodes as nats-server processes, so that one can
// be killed with SIGKILL like a crashed machine.
type processCluster struct {
	t     testing.TB
	dir   string
	ports []int
	procs []*iproc.Proc
	runs  []int // starts per node, to name each incarnation's log
}

func newProcessCluster(t testing.TB) *processCluster {
	t.Helper()
	natsServer(t)
	c := &processCluster{t: t, dir: t.TempDir(), procs: make([]*iproc.Proc, 3), runs: make([]int, 3)}
	var routes []string
	cports := make([]int, 3)
	for i := range 3 {
		c.ports = append(c.ports, freePort(t))
		cports[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", cports[i]))
	}
	for i := range 3 {
		conf := fmt.Sprintf(`server_name: n%d
host: 127.0.0.1
port: %d
max_payload: 8MB
jetstream { store_dir: %q, max_memory_store: 256MB, max_file_store: 8GB }
cluster { name: rerank-faults-crash, host: 127.0.0.1, port: %d, routes: [%s] }
`, i+1, c.ports[i], filepath.Join(c.dir, fmt.Sprintf("n%d", i+1)), cports[i], strings.Join(routes, ", "))
		if err := os.WriteFile(filepath.Join(c.dir, fmt.Sprintf("n%d.conf", i+1)), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); c.up(i) }()
	}
	wg.Wait()
	t.Cleanup(func() {
		for i, p := range c.procs {
			if p != nil && !c.exited(i) {
				p.Stop(30 * time.Second)
			}
		}
	})
	return c
}

func (c *processCluster) names() []string { return []string{"n1", "n2", "n3"} }

func (c *processCluster) url() string {
	var u []string
	for _, p := range c.ports {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return strings.Join(u, ",")
}

func (c *processCluster) exited(i int) bool { return c.procs[i].Exited() }

// down kills node i with SIGKILL: no shutdown, no leadership hand-over.
func (c *processCluster) down(i int) { c.procs[i].Kill() }

// up starts node i and waits until it accepts connections. It may run on a
// goroutine of its own, so it reports trouble with Error, not Fatal.
func (c *processCluster) up(i int) {
	name := fmt.Sprintf("n%d", i+1)
	c.runs[i]++
	p, err := iproc.Start(iproc.Spec{Name: "nats-server " + name, Path: natsBin, Args: []string{"-c", filepath.Join(c.dir, name+".conf")},
		Log: filepath.Join(buildDir, "logs", sanitize(c.t.Name()), fmt.Sprintf("nats-%s.%d.log", name, c.runs[i]))})
	if err != nil {
		c.t.Error(err)
		return
	}
	c.procs[i] = p
	ok := waitFor(30*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.ports[i]), time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil || c.exited(i)
	})
	if !ok || c.exited(i) {
		c.t.Errorf("nats-server %s did not start", name)
	}
}
