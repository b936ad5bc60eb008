package gateway

import (
	"context"
	"sync"
	"time"
)

// modelsRefreshTimeout bounds one read of the model list. The read runs
// apart from the request that started it, so that the request's client
// going away does not fail it for the others waiting.
const modelsRefreshTimeout = 5 * time.Second

// modelCache is the model list shared by all requests. It is read from the
// queue by one refresh at a time (single flight) and no lock is held across
// that call: requests are served the cached list while it is at most
// ttl+maxStale old, wait for the refresh only when there is no list to
// serve, and are answered the refresh's failure at once for errTTL after
// it, and while the next refresh after a failure runs.
type modelCache struct {
	q                     Queue
	ttl, maxStale, errTTL time.Duration

	mu      sync.Mutex
	models  []string // nil until the first successful read
	readAt  time.Time
	err     error // the last read's failure; nil after a success
	errAt   time.Time
	running chan struct{} // closed when the running refresh ends; nil when none runs
}

// list returns the model list, reading it when it is older than ttl.
func (c *modelCache) list(ctx context.Context) ([]string, error) {
	c.mu.Lock()
	now := time.Now()
	if c.models != nil && now.Sub(c.readAt) < c.ttl {
		defer c.mu.Unlock()
		return c.models, nil
	}
	var done chan struct{}
	if c.err == nil || now.Sub(c.errAt) >= c.errTTL {
		done = c.refreshLocked(ctx)
	}
	switch {
	case c.models != nil && now.Sub(c.readAt) < c.ttl+c.maxStale:
		defer c.mu.Unlock()
		return c.models, nil // stale, while the refresh runs
	case c.err != nil:
		defer c.mu.Unlock()
		return nil, c.err // the last read failed: answer at once, not behind the next
	}
	c.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	return c.models, nil
}

// refreshLocked starts a refresh unless one runs, and returns the channel
// closed when it ends. c.mu is held.
func (c *modelCache) refreshLocked(ctx context.Context) chan struct{} {
	if c.running != nil {
		return c.running
	}
	done := make(chan struct{})
	c.running = done
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), modelsRefreshTimeout)
	go func() { // owned by the cache; it ends when Models returns, within modelsRefreshTimeout for a Queue that honours ctx
		defer cancel()
		ms, err := c.q.Models(rctx)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.err, c.errAt = err, time.Now()
		} else {
			if ms == nil {
				ms = []string{}
			}
			c.models, c.readAt, c.err = ms, time.Now(), nil
		}
		c.running = nil
		close(done)
	}()
	return done
}

// Digests seen in results: GET /v1/models shows, for each model, the
// provenance digests of the results this gateway received for it lately.
const (
	digestWindow    = time.Hour // a digest not seen for this long is dropped
	digestsPerModel = 8         // at most; the least recently seen go first
	digestModels    = 1024      // models tracked at most
)

type seenDigest struct {
	digest string
	at     time.Time
}

// digestLog records the model digests of the results received. It is
// safe for concurrent use.
type digestLog struct {
	mu   sync.Mutex
	seen map[string][]seenDigest // by model, most recently seen first
}

// record notes that a result of model was scored by the model of digest.
func (d *digestLog) record(model, digest string, now time.Time) {
	if model == "" || digest == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[string][]seenDigest{}
	}
	list, ok := d.seen[model]
	if !ok && len(d.seen) >= digestModels {
		return
	}
	for i, s := range list {
		if s.digest == digest {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	list = append([]seenDigest{{digest, now}}, list...)
	d.seen[model] = list[:min(len(list), digestsPerModel)]
}

// recent returns model's digests seen within digestWindow, most recently
// seen first.
func (d *digestLog) recent(model string, now time.Time) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, s := range d.seen[model] {
		if now.Sub(s.at) < digestWindow {
			out = append(out, s.digest)
		}
	}
	return out
}
