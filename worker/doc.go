// Package worker owns the JetStream side of re-ranking: provisioning the
// streams and per-model durable consumers, pulling only as many jobs as it
// can start, heartbeating long jobs, and deciding each message's fate in one
// place (Worker.settle): success → publish result, then Ack; invalid job →
// error result, dead-letter copy, Term; transient failure → NakWithDelay
// with exponential backoff; last delivery failed → dead-letter copy, Term.
// With Config.Partitions a model's jobs also come from the partition
// streams RERANK_JOBS_P<k>: every stream has its consumers, and the
// worker's slots are shared by all of them (docs/scaling.md). With
// Config.Tenants each tenant has job streams of its own
// (RERANK_JOBS_T_<tenant>), and its jobs are answered in its namespace
// (schemas.TenantPrefix), which the worker reads from the subject the
// server stored the job on, never from the job.
//
// It declares the Reranker interface it needs (package pipeline satisfies
// it) and may import schemas; it never imports pipeline, model or cmd.
package worker
