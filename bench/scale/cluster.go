package scale

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/internal/proc"
)

// cluster is three nats-server processes with JetStream on loopback, each
// with its monitoring endpoint.
type cluster struct {
	nodes      []*proc.Proc
	ports, mon []int
}

func startCluster(natsServer, dir string) (*cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &cluster{}
	var routes []string
	cports := make([]int, 3)
	for i := range 3 {
		var err error
		p, err1 := natsembed.FreePort()
		m, err2 := natsembed.FreePort()
		cports[i], err = natsembed.FreePort()
		if err := errors.Join(err, err1, err2); err != nil {
			return nil, err
		}
		c.ports, c.mon = append(c.ports, p), append(c.mon, m)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", cports[i]))
	}
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		conf := fmt.Sprintf(`server_name: %s
host: 127.0.0.1
port: %d
http: "127.0.0.1:%d"
max_payload: 8MB
jetstream { store_dir: %q, max_memory_store: 256MB, max_file_store: 16GB }
cluster { name: rerank-scale, host: 127.0.0.1, port: %d, routes: [%s] }
`, name, c.ports[i], c.mon[i], filepath.Join(dir, name), cports[i], strings.Join(routes, ", "))
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			c.stop()
			return nil, err
		}
		n, err := proc.Start(proc.Spec{Name: "nats-server " + name, Path: natsServer, Args: []string{"-c", path},
			Log: filepath.Join(dir, "logs", name+".log")})
		if err != nil {
			c.stop()
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	deadline := time.Now().Add(time.Minute)
	for i := range c.nodes {
		for {
			var v struct {
				Meta *struct {
					Leader string `json:"leader"`
				} `json:"meta_cluster"`
			}
			err := c.get(i, "/jsz", &v)
			if err == nil && v.Meta != nil && v.Meta.Leader != "" {
				break
			}
			if time.Now().After(deadline) {
				c.stop()
				return nil, fmt.Errorf("starting the cluster: node %d has no JetStream meta leader after 1m (%v):\n%s", i+1, err, c.nodes[i].Tail(20))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return c, nil
}

func (c *cluster) urls() string {
	var u []string
	for _, p := range c.ports {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return strings.Join(u, ",")
}

func (c *cluster) get(i int, path string, v any) error {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d%s", c.mon[i], path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// traffic is what the servers counted so far, summed over the nodes, and
// each node's CPU seconds.
type traffic struct {
	msgs, bytes float64 // in + out, clients and routes
	cpu         []float64
}

func (c *cluster) traffic() (traffic, error) {
	var t traffic
	for i, n := range c.nodes {
		var v struct {
			InMsgs   float64 `json:"in_msgs"`
			OutMsgs  float64 `json:"out_msgs"`
			InBytes  float64 `json:"in_bytes"`
			OutBytes float64 `json:"out_bytes"`
		}
		if err := c.get(i, "/varz", &v); err != nil {
			return t, fmt.Errorf("reading /varz of node %d: %w", i+1, err)
		}
		t.msgs += v.InMsgs + v.OutMsgs
		t.bytes += v.InBytes + v.OutBytes
		s, err := n.CPUSeconds()
		if err != nil {
			return t, err
		}
		t.cpu = append(t.cpu, s)
	}
	return t, nil
}

func (c *cluster) stop() {
	for _, n := range c.nodes {
		n.Stop(30 * time.Second)
	}
}
