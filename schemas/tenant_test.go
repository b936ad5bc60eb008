package schemas

import "testing"

func TestTenantSubjects(t *testing.T) {
	for _, c := range []struct {
		tenant, view, subject string
	}{
		{"", "rerank.jobs.demo", "rerank.jobs.demo"},
		{"search", "rerank.jobs.demo", "rerank.tenant.search.jobs.demo"},
		{"search", "rerank.jobs.demo.bulk.p3", "rerank.tenant.search.jobs.demo.bulk.p3"},
		{"ads", "rerank.results.k1", "rerank.tenant.ads.results.k1"},
		{"a_b-C9", "rerank.dead.demo", "rerank.tenant.a_b-C9.dead.demo"},
	} {
		if got := TenantSubject(c.tenant, c.view); got != c.subject {
			t.Errorf("TenantSubject(%q, %q) = %q, want %q", c.tenant, c.view, got, c.subject)
		}
		if tn, view := TenantOf(c.subject); tn != c.tenant || view != c.view {
			t.Errorf("TenantOf(%q) = %q, %q; want %q, %q", c.subject, tn, view, c.tenant, c.view)
		}
	}
	// Not a tenant's namespace: the subject is its own view.
	for _, s := range []string{"rerank.tenant", "rerank.tenant.", "rerank.tenantx.a.results.k", "_INBOX.x"} {
		if tn, view := TenantOf(s); tn != "" || view != s {
			t.Errorf("TenantOf(%q) = %q, %q", s, tn, view)
		}
	}
}

func TestIsResultSubject(t *testing.T) {
	for s, want := range map[string]bool{
		"rerank.results.k":              true,
		"rerank.results.app.k":          true,
		"rerank.tenant.ads.results.k":   true,
		"rerank.tenant.ads.jobs.demo":   false,
		"rerank.tenant.results.results": false, // tenant "results", subject rerank.results (no id)
		"rerank.jobs.demo":              false,
		"_INBOX.abc":                    false,
	} {
		if got := IsResultSubject(s); got != want {
			t.Errorf("IsResultSubject(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestTenantJobsStream(t *testing.T) {
	for _, c := range []struct {
		tenant string
		p      int
		want   string
	}{
		{"", -1, "RERANK_JOBS"},
		{"", 3, "RERANK_JOBS_P3"},
		{"search", -1, "RERANK_JOBS_T_search"},
		{"search", 3, "RERANK_JOBS_P3_T_search"},
		{"P3", -1, "RERANK_JOBS_T_P3"}, // not partition 3's stream
	} {
		if got := TenantJobsStream(c.tenant, c.p); got != c.want {
			t.Errorf("TenantJobsStream(%q, %d) = %q, want %q", c.tenant, c.p, got, c.want)
		}
	}
}

func TestCheckTenant(t *testing.T) {
	for name, ok := range map[string]bool{
		"search": true, "a_b-C9": true, "": false, "a.b": false, "a b": false, "a*": false, "a>": false, "ü": false,
		string(make([]byte, 65)): false,
	} {
		if err := CheckTenant(name); (err == nil) != ok {
			t.Errorf("CheckTenant(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}
