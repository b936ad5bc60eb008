// Package scale measures how a worker fleet scales on one JetStream
// cluster: a 3-node nats-server cluster and 1…N `rerank serve` processes
// serving a simulated model (model/simulated: it waits instead of
// computing, so a small machine hosts many workers), a closed-loop producer
// keeping a deep backlog of small or big jobs, and per fleet size the
// throughput, latency, broker CPU and traffic per job from the servers'
// monitoring endpoints. cmd/rerank-bench runs it (`make bench-scale`).
//
// It may import schemas, client-side NATS, eval (synthetic jobs) and
// internal/proc; it never imports worker or pipeline: the workers are
// processes, as in production.
package scale
