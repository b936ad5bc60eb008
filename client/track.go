package client

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/schemas"
)

// AcceptedBucket is the key-value bucket where SubmitAsync records the jobs
// of a client with Options.Track, so that a job accepted without a result
// yet can be told from an unknown one (Accepted).
const AcceptedBucket = "rerank-accepted"

// AcceptedMaxBytes bounds the accepted-jobs bucket: an entry costs about
// 200 bytes plus twice its id, so 256 MiB holds a day of at least ~400,000
// jobs with the longest ids (over a million with short ones). Past it the
// bucket refuses new entries (a KV bucket discards new), and so a tracked
// client refuses new jobs (not queued; retry later) until entries expire.
const AcceptedMaxBytes = 256 << 20

// ProvisionTracking creates or updates the accepted-jobs bucket (its
// entries live as long as results do; AcceptedMaxBytes in all).
func (c *Client) ProvisionTracking(ctx context.Context, replicas int, ttl time.Duration) error {
	_, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: AcceptedBucket, TTL: ttl, MaxBytes: AcceptedMaxBytes,
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage, Description: "jobs accepted by rerank gateways"})
	if err != nil {
		return fmt.Errorf("provisioning the %s bucket: %w", AcceptedBucket, err)
	}
	return nil
}

// acceptedKey maps the client's tenant's job id onto the bucket's key
// alphabet: the id itself for the shared namespace, "<tenant>.<id>" for a
// tenant's (ids hold no '.', so no key of one namespace is another's).
func (c *Client) acceptedKey(id string) string {
	if c.opts.Tenant != "" {
		id = c.opts.Tenant + "." + id
	}
	return base64.RawURLEncoding.EncodeToString([]byte(id))
}

// acceptedRecord is a tracked job's entry: the job message it is. Seq 0 is
// a reservation: written before the job is published, it says a submission
// of this id may have queued the job, whose message is not recorded yet.
type acceptedRecord struct {
	Stream string    `json:"stream,omitempty"`
	Seq    uint64    `json:"seq"`
	Digest string    `json:"digest,omitempty"` // jobDigest of what was published
	At     time.Time `json:"at"`               // when the id was first submitted
	// created is the server's time of the entry's revision (not stored).
	created time.Time
}

// reservationGrace is how long a reservation is taken for a submission
// still publishing (another request with the same id, in flight), whose
// record to wait for, before it is taken for one that died or failed.
const reservationGrace = 2 * time.Second

// clockSkew is the difference allowed between the clocks of the servers
// that stored a reservation and a result (in one cluster).
const clockSkew = time.Second

// tracking is what track decided for a submission, and what it read that
// recording the published job needs again (the bucket handle, the key and
// the job's digest: a JSON encoding of a job of up to 8 MiB).
type tracking struct {
	publish bool // the job is to be published (else p names its message)
	kv      jetstream.KeyValue
	key     string
	digest  string
	at      time.Time // the id's first submission
	// reservedRev is the revision of the reservation this submission wrote
	// (0: it wrote none); it is removed again if the queue refuses the job.
	reservedRev uint64
	// since is set when the reservation was another submission's that died
	// or failed before recording: results stored after it answer the job.
	since time.Time
}

// track decides whether a tracked job is to be published, by its record:
//   - none: reserve the id (a create, which one submission wins), publish;
//   - a recorded job message that can still be answered: publish nothing,
//     p waits for that message's result (other content: ErrIDConflict);
//   - a recorded job message whose result was dropped: publish again;
//   - a reservation: wait reservationGrace for its submission to record;
//     past it, that submission died or failed: a result stored since the
//     reservation answers the job (publish nothing), else publish again
//     under the same msg-id.
//
// A record that cannot be read is an error, with nothing published: the
// job is queued once, not as many times as the bucket is unreachable.
// JetStream's dedup window alone does not hold that promise: a work-queue
// stream forgets the msg-ids of answered jobs when its server restarts
// (nats-io/nats-server#3272).
func (c *Client) track(ctx context.Context, p *Pending, job *schemas.Job) (tracking, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	kv, err := c.js.KeyValue(ctx, AcceptedBucket)
	if err != nil {
		return tracking{}, fmt.Errorf("reading the %s bucket: %w", AcceptedBucket, err)
	}
	key, digest := c.acceptedKey(job.ID), jobDigest(job)
	t := tracking{publish: true, kv: kv, key: key, digest: digest}
	for {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			now := time.Now().UTC()
			b, _ := json.Marshal(acceptedRecord{Digest: digest, At: now})
			rev, err := kv.Create(ctx, key, b)
			if errors.Is(err, jetstream.ErrKeyExists) {
				// Another submission reserved it (or a replica's read
				// lagged): read it again.
				if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
					return tracking{}, fmt.Errorf("reading job %s's record: %w", job.ID, err)
				}
				continue
			}
			if err != nil {
				return tracking{}, fmt.Errorf("recording job %s: %w", job.ID, err)
			}
			t.at, t.reservedRev = now, rev
			return t, nil
		}
		if err != nil {
			return tracking{}, fmt.Errorf("reading job %s's record: %w", job.ID, err)
		}
		rec := decodeRecord(e)
		if rec.Seq != 0 {
			if !c.live(ctx, rec, p.subject) {
				t.at = rec.At
				return t, nil
			}
			if rec.Digest != "" && rec.Digest != digest {
				return tracking{}, fmt.Errorf("submitting job %s: %w", job.ID, ErrIDConflict)
			}
			p.dup, p.stream, p.seq = true, rec.Stream, rec.Seq
			return tracking{}, nil
		}
		if rec.Digest != "" && rec.Digest != digest {
			return tracking{}, fmt.Errorf("submitting job %s: %w", job.ID, ErrIDConflict)
		}
		if time.Since(rec.created) < reservationGrace {
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return tracking{}, fmt.Errorf("waiting for job %s's record: %w", job.ID, err)
			}
			continue
		}
		r, err := c.resultSince(ctx, p.subject, job, rec.created)
		switch {
		case err == nil:
			p.dup, p.stream, p.seq = true, r.JobStream, r.JobSeq
			c.record(ctx, kv, key, acceptedRecord{Stream: r.JobStream, Seq: r.JobSeq, Digest: digest, At: rec.At})
			return tracking{}, nil
		case !errors.Is(err, ErrNotFound):
			return tracking{}, fmt.Errorf("reading job %s's result: %w", job.ID, err)
		}
		t.at, t.since = rec.At, rec.created
		return t, nil
	}
}

// published records the job message a tracked submission published. When
// the submission took over a dead one's reservation and JetStream stored
// its message as new (the first message's msg-id forgotten), a result
// stored meanwhile answers the first message: the new one is deleted
// again if no worker took it yet, and p waits for the first.
func (c *Client) published(ctx context.Context, p *Pending, job *schemas.Job, t tracking, dup bool) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	if !t.since.IsZero() && !dup {
		if r, err := c.resultSince(ctx, p.subject, job, t.since); err == nil && !r.Answers(p.stream, p.seq) {
			if s, err := c.js.Stream(ctx, p.stream); err == nil && s.DeleteMsg(ctx, p.seq) == nil {
				p.dup, p.stream, p.seq = true, r.JobStream, r.JobSeq
			}
		}
	}
	c.record(ctx, t.kv, t.key, acceptedRecord{Stream: p.stream, Seq: p.seq, Digest: t.digest, At: t.at})
}

// unreserve removes this submission's reservation of an id whose job the
// queue refused (nothing was queued).
func (c *Client) unreserve(ctx context.Context, t tracking) {
	if t.reservedRev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	_ = t.kv.Delete(ctx, t.key, jetstream.LastRevision(t.reservedRev))
}

// record stores rec as id's record. A failure is counted, not returned:
// the job is queued and will be answered; a later submission of the id
// finds the reservation and the result.
func (c *Client) record(ctx context.Context, kv jetstream.KeyValue, key string, rec acceptedRecord) {
	b, _ := json.Marshal(rec)
	if _, err := kv.Put(ctx, key, b); err != nil {
		c.trackErrors.Add(1)
	}
}

// resultSince reads the result stored on subject for job if it was stored
// after since (less clockSkew) and names its job message: under Track an
// id is one job, so that result answers the job reserved at since.
// ErrNotFound when there is none.
func (c *Client) resultSince(ctx context.Context, subject string, job *schemas.Job, since time.Time) (*schemas.Result, error) {
	r, at, err := c.storedResultAt(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, errUndecodable):
		return nil, ErrNotFound
	case err != nil:
		return nil, err
	case at.Before(since.Add(-clockSkew)) || r.JobSeq == 0 || schemas.CheckResult(job, r) != nil:
		return nil, ErrNotFound
	}
	return r, nil
}

func decodeRecord(e jetstream.KeyValueEntry) acceptedRecord {
	var rec acceptedRecord
	_ = json.Unmarshal(e.Value(), &rec)
	rec.created = e.Created()
	return rec
}

// accepted reads job id's record; jetstream.ErrKeyNotFound when there is
// none. A record of an older client (a bare timestamp) reads as a
// reservation.
func (c *Client) accepted(ctx context.Context, id string) (acceptedRecord, error) {
	kv, err := c.js.KeyValue(ctx, AcceptedBucket)
	if err != nil {
		return acceptedRecord{}, fmt.Errorf("reading the %s bucket: %w", AcceptedBucket, err)
	}
	e, err := kv.Get(ctx, c.acceptedKey(id))
	if err != nil {
		return acceptedRecord{}, err
	}
	return decodeRecord(e), nil
}

// Accepted reports whether a client with Options.Track submitted job id
// (within the bucket's TTL).
func (c *Client) Accepted(ctx context.Context, id string) (bool, error) {
	_, ok, err := c.AcceptedAt(ctx, id)
	return ok, err
}

// AcceptedAt reports when a client with Options.Track first submitted job
// id, if it did (within the bucket's TTL).
func (c *Client) AcceptedAt(ctx context.Context, id string) (time.Time, bool, error) {
	rec, err := c.accepted(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return time.Time{}, false, nil
	case err != nil:
		return time.Time{}, false, fmt.Errorf("reading job %s in the %s bucket: %w", id, AcceptedBucket, err)
	case rec.At.IsZero():
		return rec.created, true, nil
	}
	return rec.At, true, nil
}

// jobDigest identifies a job's content (its JSON form, whose map keys are
// sorted): a tracked id resubmitted with another digest is a conflict.
func jobDigest(job *schemas.Job) string {
	b, err := json.Marshal(job)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// live reports whether the job message rec can still be answered or has
// been: it waits in its stream, or its result is stored on subject. When
// that cannot be read it reports true (waiting for the recorded job never
// runs it twice).
func (c *Client) live(ctx context.Context, rec acceptedRecord, subject string) bool {
	s, err := c.js.Stream(ctx, rec.Stream)
	if err != nil {
		return !errors.Is(err, jetstream.ErrStreamNotFound)
	}
	if _, err := s.GetMsg(ctx, rec.Seq); err == nil || !errors.Is(err, jetstream.ErrMsgNotFound) {
		return true
	}
	r, err := c.storedResult(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false
	case err != nil:
		return true
	}
	return r.Answers(rec.Stream, rec.Seq)
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
