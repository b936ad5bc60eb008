package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/rerank/rerank/schemas"
)

// A tenant is who a bearer token stands for. Job ids and Idempotency-Keys
// are per tenant: the job a tenant names "k" is queued as "<tenant>~k", so
// one tenant can neither read another's job (GET /v1/jobs/{id} looks only
// in its own namespace) nor pre-empt it (a key another tenant sends first
// is another job). The stored result records its tenant in that id. An
// open gateway (no tokens) has the one empty tenant, whose ids are the
// keys themselves.
type tenant string

// tenantSep joins a tenant's name and its key into a job id: a character
// tenant names never hold, so that no key of one tenant is another's id.
const tenantSep = "~"

// maxTenantName bounds a tenant's name, leaving its keys most of the 256
// bytes a job id may have.
const maxTenantName = 64

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
	if !validTenantName(name) {
		return token{}, fmt.Errorf("gateway: tenant name %q: 1 to %d letters, digits, '_' or '-'", name, maxTenantName)
	}
	if secret == "" {
		return token{}, fmt.Errorf("gateway: tenant %s has an empty token", name)
	}
	return token{tenant: tenant(name), secret: []byte(secret)}, nil
}

func validTenantName(s string) bool {
	if s == "" || len(s) > maxTenantName {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
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

// jobID is the id of the tenant's job named key: the key itself on an open
// gateway, else "<tenant>~<key>", which must still be a valid job id. A
// key holding the separator is refused at every gateway, open ones
// included: through a gateway without tokens on the same NATS server it
// would name (read, or plant) a tenant's job.
func (t tenant) jobID(key string) (string, error) {
	if strings.Contains(key, tenantSep) {
		return "", schemas.Errorf(schemas.CodeInvalidID, "job ids and %s values may not hold %q (it separates a tenant's name from its keys)", HeaderIdempotencyKey, tenantSep)
	}
	if t == "" {
		return key, nil
	}
	id := string(t) + tenantSep + key
	if err := schemas.CheckID(id); err != nil {
		return "", schemas.Errorf(schemas.CodeInvalidID, "the job id %q is too long for this tenant: at most %d bytes", truncateKey(key), schemas.MaxIDBytes-len(t)-len(tenantSep))
	}
	return id, nil
}

// key is the tenant's name for its job id.
func (t tenant) key(id string) string {
	if t == "" {
		return id
	}
	return strings.TrimPrefix(id, string(t)+tenantSep)
}

func truncateKey(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
