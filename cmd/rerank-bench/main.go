// Command rerank-bench runs the benchmarks that need a fleet of processes.
// `rerank-bench scale` (make bench-scale) measures how a worker fleet scales
// on one 3-node JetStream cluster with a simulated model (bench/scale,
// docs/scaling.md). It wires flags only.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rerank/rerank/bench/scale"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "scale" {
		fmt.Fprintln(os.Stderr, "usage: rerank-bench scale [flags]   (-h for the flags)")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("scale", flag.ExitOnError)
	var c scale.Config
	fs.StringVar(&c.Rerank, "rerank", "bin/rerank", "rerank binary the workers run")
	fs.StringVar(&c.NATSServer, "nats-server", "bin/nats-server", "nats-server binary of the cluster")
	fs.StringVar(&c.Dir, "dir", "", "where the cluster's stores and all logs go (default: a temporary directory, removed after)")
	sizes := fs.String("sizes", "1,2,4,8,16,32", "fleet sizes, ascending")
	fs.StringVar(&c.Model, "model", "sim:1ms:2ms", "the workers' simulated model NAME:PER_PAIR:PER_CALL")
	fs.IntVar(&c.Concurrency, "concurrency", 8, "jobs per worker at once (rerank serve --concurrency)")
	kinds := fs.String("kinds", "small,big", "job kinds to measure: small, big")
	fs.IntVar(&c.Small, "small", 10, "candidates of a small job")
	fs.IntVar(&c.Big, "big", 1000, "candidates of a big job")
	fs.IntVar(&c.Depth, "depth", 2, "jobs the producer keeps outstanding per worker slot")
	fs.DurationVar(&c.Warmup, "warmup", 3*time.Second, "warm-up of each measurement")
	fs.DurationVar(&c.Window, "window", 8*time.Second, "measurement window (big jobs: twice this)")
	fs.IntVar(&c.Partitions, "partitions", 0, "job streams per model (rerank serve --partitions)")
	workerArgs := fs.String("worker-args", "", "more rerank serve flags, space-separated")
	fs.Parse(os.Args[2:])
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || len(c.Sizes) > 0 && n <= c.Sizes[len(c.Sizes)-1] {
			fmt.Fprintf(os.Stderr, "rerank-bench: --sizes %q: want ascending positive numbers\n", *sizes)
			os.Exit(2)
		}
		c.Sizes = append(c.Sizes, n)
	}
	c.Kinds = strings.Split(*kinds, ",")
	c.WorkerArgs = strings.Fields(*workerArgs)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if _, err := scale.Run(ctx, c, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rerank-bench:", err)
		os.Exit(1)
	}
	fmt.Printf("# scale benchmark took %s\n", time.Since(start).Round(time.Second))
}
