package schemas

import (
	"fmt"
	"strings"
)

// Tenants. A tenant is a client of a shared worker pool with a namespace
// of its own: its jobs, results and dead letters live under
// rerank.tenant.<tenant>. — the shared layout's subjects with "rerank."
// replaced by that prefix (TenantSubject) — and its jobs in job streams of
// its own (TenantJobsStream), so that its job ids are deduplicated, stored
// and answered apart from every other tenant's.
//
// The tenant of a job is where the NATS server put it, never what the job
// says: a tenant's client, in a NATS account of its own, publishes to the
// shared layout (rerank.jobs.<model>) and reads rerank.results.<id>, and
// its account's imports map those onto its namespace in the service
// account (deploy/nats/accounts.conf). The HTTP gateway publishes a bearer
// token's jobs to the token's tenant namespace, so that a tenant's HTTP
// and NATS jobs share one namespace.
const TenantPrefix = "rerank.tenant."

// MaxTenantName bounds a tenant's name.
const MaxTenantName = 64

// CheckTenant accepts a tenant name: 1 to 64 ASCII letters, digits, '_'
// or '-' (one subject token, and a part of stream names).
func CheckTenant(name string) error {
	if name == "" || len(name) > MaxTenantName {
		return fmt.Errorf("tenant name %q: 1 to %d letters, digits, '_' or '-'", name, MaxTenantName)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("tenant name %q: 1 to %d letters, digits, '_' or '-'", name, MaxTenantName)
		}
	}
	return nil
}

// TenantSubject is subject of the shared layout (under "rerank.") in
// tenant's namespace: rerank.jobs.m is rerank.tenant.<tenant>.jobs.m. The
// empty tenant is the shared namespace itself.
func TenantSubject(tenant, subject string) string {
	if tenant == "" {
		return subject
	}
	return TenantPrefix + tenant + "." + strings.TrimPrefix(subject, "rerank.")
}

// TenantOf is the tenant whose namespace subject is in ("" for the shared
// namespace), and the subject as the tenant sees it (the shared layout's).
func TenantOf(subject string) (tenant, view string) {
	rest, ok := strings.CutPrefix(subject, TenantPrefix)
	if !ok {
		return "", subject
	}
	tenant, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return "", subject
	}
	return tenant, "rerank." + rest
}

// TenantJobsStream is the job stream of tenant's partition p (-1: its
// unpartitioned stream): RERANK_JOBS_T_<tenant> or
// RERANK_JOBS_P<p>_T_<tenant>. The tenant goes last, so that no tenant
// name can spell another's partition.
func TenantJobsStream(tenant string, p int) string {
	name := JobsStream
	if p >= 0 {
		name = PartitionStream(p)
	}
	if tenant != "" {
		name += "_T_" + tenant
	}
	return name
}

// IsResultSubject reports whether subject is a result subject of the
// shared namespace or of a tenant's (stored in RERANK_RESULTS).
func IsResultSubject(subject string) bool {
	_, view := TenantOf(subject)
	return strings.HasPrefix(view, ResultsPrefix)
}
