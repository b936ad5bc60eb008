package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/rerank/rerank/schemas"
)

// A tenant is who a bearer token stands for: a namespace of its own on
// NATS (schemas.TenantPrefix), shared with the tenant's NATS clients. Its
// jobs are queued in its namespace under the keys it names them by, so one
// tenant can neither read another's job (GET /v1/jobs/{id} looks only in
// its own namespace) nor pre-empt it (a key another tenant sends first is
// another job). An open gateway (no tokens) has the one empty tenant: the
// shared namespace.
type tenant string

// token is a bearer token and its tenant.
type token struct {
	tenant tenant
	secret []byte
}

// parseToken reads a token as configured: "NAME:SECRET", the tenant NAME
// (letters, digits, '_' and '-', at most 64) with its secret, or a bare
// SECRET, which is its own tenant, named after a digest of it ("t" and 16
// hex digits: stable across gateways, and it does not reveal the secret).
func parseToken(s string) (token, error) {
	if strings.TrimSpace(s) == "" || strings.ContainsAny(s, " \t\r\n") {
		return token{}, fmt.Errorf("gateway: a bearer token is empty or contains whitespace")
	}
	name, secret, named := strings.Cut(s, ":")
	if !named {
		sum := sha256.Sum256([]byte(s))
		return token{tenant: tenant("t" + hex.EncodeToString(sum[:8])), secret: []byte(s)}, nil
	}
	if err := schemas.CheckTenant(name); err != nil {
		return token{}, fmt.Errorf("gateway: %w", err)
	}
	if secret == "" {
		return token{}, fmt.Errorf("gateway: tenant %s has an empty token", name)
	}
	return token{tenant: tenant(name), secret: []byte(secret)}, nil
}

// parseTokens reads every configured token. Two tokens may name the same
// tenant (a rotation); one secret may not stand for two tenants.
func parseTokens(raw []string) ([]token, error) {
	out := make([]token, 0, len(raw))
	for _, s := range raw {
		t, err := parseToken(s)
		if err != nil {
			return nil, err
		}
		for _, o := range out {
			if subtle.ConstantTimeCompare(o.secret, t.secret) == 1 && o.tenant != t.tenant {
				return nil, fmt.Errorf("gateway: one token is given for tenants %s and %s", o.tenant, t.tenant)
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// Tenants lists the tenants the configured tokens stand for, each once,
// sorted: the tenants whose job streams the workers must serve
// (worker.Config.Tenants) for this gateway's jobs to be answered.
func Tenants(tokens []string) ([]string, error) {
	ts, err := parseTokens(tokens)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range ts {
		if !slices.Contains(out, string(t.tenant)) {
			out = append(out, string(t.tenant))
		}
	}
	slices.Sort(out)
	return out, nil
}
