package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rerank/rerank/schemas"
)

// Config configures a Server. The zero value of a field means its default.
type Config struct {
	// DefaultModel serves requests that name no model (and every TEI
	// request); empty: the only model the workers serve, if there is one.
	DefaultModel string
	// Tokens are the accepted bearer tokens, each "TENANT:SECRET" or a
	// bare SECRET (its own tenant); none leaves the gateway open. Job ids
	// and Idempotency-Keys are per tenant (tenant.go).
	Tokens []string
	// Limits are the job limits; zero fields take schemas' defaults. A
	// request body may be twice MaxPayloadBytes; its documents are counted
	// against MaxCandidates while it is scanned, before any is decoded.
	Limits schemas.Limits
	// Timeout is the default wait for a result; default 60 s.
	Timeout time.Duration
	// MaxTimeout caps the wait a request may ask for; default 10 min.
	MaxTimeout time.Duration
	// Metrics, when set, is served at /metrics.
	Metrics http.Handler
	// ModelsTTL is how long the model list is served without asking the
	// queue again; default 5 s.
	ModelsTTL time.Duration
	// ModelsMaxStale is how long past ModelsTTL the list is still served
	// while a refresh runs or after one failed, so that a slow or
	// unreachable queue holds no request up behind the list; default 1 min.
	ModelsMaxStale time.Duration
	// ModelsErrorTTL is how long a failed read of the model list is
	// answered (503) without asking the queue again, when there is no list
	// to serve; default 1 s.
	ModelsErrorTTL time.Duration
	// ReadTimeout bounds reading a whole request, headers and body: a
	// client that stalls is answered 408 and disconnected. It does not
	// bound the wait for the result. Default 60 s (a 16 MiB body at
	// 2.2 Mbit/s).
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long; default
	// 2 min.
	IdleTimeout time.Duration
	// LoopbackOnly refuses (421) every request whose Host is not a
	// loopback name or address (localhost, *.localhost, 127.0.0.0/8,
	// ::1): a web page that rebinds its own name to 127.0.0.1 cannot
	// reach a gateway on loopback through the browser. cmd/rerank sets it
	// for a gateway without tokens listening on loopback.
	LoopbackOnly bool
}

// Defaults. DefaultAddr is where `rerank serve` on its embedded NATS
// server listens for HTTP.
const (
	DefaultAddr           = "127.0.0.1:8080"
	DefaultTimeout        = 60 * time.Second
	DefaultMaxTimeout     = 10 * time.Minute
	DefaultModelsTTL      = 5 * time.Second
	DefaultModelsMaxStale = time.Minute
	DefaultModelsErrorTTL = time.Second
	DefaultReadTimeout    = 60 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
)

// Fixed limits of the HTTP server.
const (
	// readHeaderTimeout bounds the request line and headers, which arrive
	// before any token is checked.
	readHeaderTimeout = 10 * time.Second
	// shutdownGrace is how long Serve waits for requests in flight once
	// its context ends.
	shutdownGrace = 30 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxTimeout <= 0 {
		c.MaxTimeout = DefaultMaxTimeout
	}
	if c.ModelsTTL <= 0 {
		c.ModelsTTL = DefaultModelsTTL
	}
	if c.ModelsMaxStale <= 0 {
		c.ModelsMaxStale = DefaultModelsMaxStale
	}
	if c.ModelsErrorTTL <= 0 {
		c.ModelsErrorTTL = DefaultModelsErrorTTL
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.Limits.MaxPayloadBytes <= 0 {
		c.Limits.MaxPayloadBytes = schemas.DefaultMaxPayloadBytes
	}
	if c.Limits.MaxCandidates <= 0 {
		c.Limits.MaxCandidates = schemas.DefaultMaxCandidates
	}
	return c
}

// Validate reports every problem of a configuration the server cannot run
// with, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Timeout > 0 && c.MaxTimeout > 0 && c.Timeout > c.MaxTimeout {
		errs = append(errs, fmt.Errorf("gateway: timeout %s is over the max timeout %s", c.Timeout, c.MaxTimeout))
	}
	for name, d := range map[string]time.Duration{"timeout": c.Timeout, "max timeout": c.MaxTimeout,
		"models TTL": c.ModelsTTL, "models max stale": c.ModelsMaxStale, "models error TTL": c.ModelsErrorTTL,
		"read timeout": c.ReadTimeout, "idle timeout": c.IdleTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("gateway: %s %s is negative", name, d))
		}
	}
	if _, err := parseTokens(c.Tokens); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
