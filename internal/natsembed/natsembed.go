// Package natsembed runs a NATS server with JetStream inside the process:
// the zero-setup default of `rerank serve`, and the real server of the
// tests (single node or a 3-node cluster on loopback).
//
// It may import only the standard library and nats-server.
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// MaxPayload is the largest message the embedded server accepts (8 MiB).
const MaxPayload = 8 << 20

// Options configure an embedded server.
type Options struct {
	Host     string // default 127.0.0.1
	Port     int    // default 4222; -1 picks a free port
	StoreDir string // JetStream file storage
	Name     string
	// Cluster, when set, joins a JetStream cluster.
	ClusterName   string
	ClusterPort   int      // -1 picks a free port
	Routes        []string // nats-route://host:port of the peers
	MaxPayload    int32    // default MaxPayload
	Logging       bool     // server logs to stderr
	ConfigureHook func(*server.Options)
}

// Server is a running embedded server.
type Server struct {
	*server.Server
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = 4222
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = MaxPayload
	}
	if o.StoreDir == "" {
		return nil, errors.New("starting embedded NATS: a store directory is required")
	}
	opts := &server.Options{
		ServerName:         o.Name,
		Host:               o.Host,
		Port:               o.Port,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		MaxPayload:         o.MaxPayload,
		NoSigs:             true,
		NoLog:              !o.Logging,
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  8 << 30,
	}
	if o.ClusterName != "" {
		opts.Cluster.Name = o.ClusterName
		opts.Cluster.Host = o.Host
		opts.Cluster.Port = o.ClusterPort
		opts.Routes = server.RoutesFromStr(joinRoutes(o.Routes))
	}
	if o.ConfigureHook != nil {
		o.ConfigureHook(opts)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("starting embedded NATS: %w", err)
	}
	if o.Logging {
		ns.ConfigureLogger()
	}
	go ns.Start() // the server owns this goroutine until Shutdown
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("starting embedded NATS on %s:%d: not ready after 15s (port in use?)", o.Host, o.Port)
	}
	return &Server{ns}, nil
}

// Stop shuts the server down and waits for it.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

func joinRoutes(r []string) string {
	out := ""
	for i, s := range r {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

// handedOut are the ports FreePort returned in this process.
var (
	handedMu  sync.Mutex
	handedOut = map[int]bool{}
)

// FreePort returns a free TCP port on 127.0.0.1, never one it returned
// before in this process: the kernel may hand a port just released to the
// next bind(0), so two ports asked for one after the other (a server's
// client and route ports) could otherwise be the same, and the second
// listener would fail.
func FreePort() (int, error) {
	handedMu.Lock()
	defer handedMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut[port] {
			handedOut[port] = true
			return port, nil
		}
	}
	return 0, errors.New("finding a free port: every port offered was handed out before")
}
