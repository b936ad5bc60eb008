// Package gateway is the HTTP edge of the worker pool: it turns each HTTP
// request into a job on the queue and answers with the job's result, in the
// dialects re-ranking callers already speak.
//
//	POST /v1/rerank, /v2/rerank   Cohere (and Jina) compatible (cohere.go)
//	POST /rerank                  Hugging Face TEI compatible (tei.go)
//	POST /v1/jobs                 a native job, answered 202 {id} (jobs.go)
//	GET  /v1/jobs/{id}            its stored result, 202 while pending, 410, 404
//	GET  /v1/models               the models the workers serve
//	GET  /healthz, /readyz, /metrics
//
// A gateway is stateless: the job id is the request's Idempotency-Key (or a
// generated one), published as Nats-Msg-Id, so a retried request is the same
// job, and a result outlives the request that asked for it. Each bearer
// token stands for a tenant, and ids are per tenant (tenant.go): a
// tenant's job k is queued as k in its tenant's namespace (Job.Tenant,
// schemas.TenantPrefix), the one its NATS clients use too. Errors use the
// codes of schemas (errors.go maps them onto HTTP statuses).
//
// It owns the HTTP server, the wire types of each dialect and their
// translation to and from schemas.Job and schemas.Result. It declares the
// Queue it needs; cmd/rerank plugs in package client over NATS. It may
// import schemas and the standard library only.
package gateway
