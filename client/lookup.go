package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/schemas"
)

// ErrNotFound: the results stream holds no result for the job id.
var ErrNotFound = errors.New("no stored result")

// Lookup reads the stored result of job id from the results stream (jobs
// answered on the default subject, rerank.results.<id>). For a client with
// Options.Track and an id it recorded, only the result of the recorded job
// message counts: while that job waits, an older job's result under the
// same id is ErrNotFound, not its answer.
func (c *Client) Lookup(ctx context.Context, id string) (*schemas.Result, error) {
	if err := schemas.CheckID(id); err != nil {
		return nil, err
	}
	var rec acceptedRecord
	if c.opts.Track {
		var err error
		if rec, err = c.accepted(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("looking up job %s: %w", id, err)
		}
	}
	r, err := c.storedResult(ctx, schemas.ResultSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("looking up job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up job %s: %w", id, err)
	}
	if r.ID != id {
		c.ignored.Add(1)
		return nil, fmt.Errorf("looking up job %s: the stored message answers %q: %w", id, r.ID, ErrNotFound)
	}
	if rec.Seq != 0 && !r.Answers(rec.Stream, rec.Seq) {
		return nil, fmt.Errorf("looking up job %s: the stored result answers an earlier job with this id: %w", id, ErrNotFound)
	}
	return r, nil
}

// errUndecodable marks a stored message that is not a result.
var errUndecodable = errors.New("stored message is not a result")

// storedResult reads and decodes the last message of a result subject in
// the results stream.
func (c *Client) storedResult(ctx context.Context, subject string) (*schemas.Result, error) {
	s, err := c.js.Stream(ctx, ResultsStream)
	if err != nil {
		return nil, err
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return nil, err
	}
	f, _ := schemas.ParseContentType(m.Header.Get(schemas.HeaderContentType))
	r, err := schemas.DecodeResult(m.Data, f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUndecodable, err)
	}
	return r, nil
}

// Models lists the models whose jobs some worker pool consumes: the
// interactive-lane consumers of the jobs stream.
func (c *Client) Models(ctx context.Context) ([]string, error) {
	s, err := c.js.Stream(ctx, schemas.JobsStream)
	if err != nil {
		return nil, fmt.Errorf("listing models: %w", err)
	}
	var models []string
	infos := s.ListConsumers(ctx)
	for ci := range infos.Info() {
		subj := ci.Config.FilterSubject
		if m, ok := strings.CutPrefix(subj, JobsPrefix); ok && !strings.HasSuffix(subj, schemas.BulkSuffix) && !strings.ContainsAny(m, ".*>") {
			models = append(models, m)
		}
	}
	if err := infos.Err(); err != nil {
		return nil, fmt.Errorf("listing models: %w", err)
	}
	slices.Sort(models)
	return slices.Compact(models), nil
}

// AcceptedBucket is the key-value bucket where SubmitAsync records the jobs
// of a client with Options.Track, so that a job accepted without a result
// yet can be told from an unknown one (Accepted).
const AcceptedBucket = "rerank-accepted"

// AcceptedMaxBytes bounds the accepted-jobs bucket: an entry costs about
// 200 bytes plus twice its id, so 256 MiB holds a day of at least ~400,000
// jobs with the longest ids (over a million with short ones). Past it the
// bucket refuses new entries (a KV bucket discards new): those jobs are
// still queued and answered, but read as unknown (404) rather than pending
// until their result is stored, and are not deduplicated past JetStream's
// window.
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

// acceptedKey maps a job id onto the bucket's key alphabet.
func acceptedKey(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

// acceptedRecord is a tracked job's entry: the job message it is.
type acceptedRecord struct {
	Stream string    `json:"stream"`
	Seq    uint64    `json:"seq"`
	Digest string    `json:"digest,omitempty"` // jobDigest of what was published
	At     time.Time `json:"at"`
}

func (c *Client) markAccepted(ctx context.Context, id string, rec acceptedRecord) error {
	kv, err := c.js.KeyValue(ctx, AcceptedBucket)
	if err != nil {
		return err
	}
	rec.At = time.Now().UTC()
	b, _ := json.Marshal(rec)
	_, err = kv.Put(ctx, acceptedKey(id), b)
	return err
}

// accepted reads job id's record; jetstream.ErrKeyNotFound when there is
// none. A record of an older client (a bare timestamp) reads as a zero
// record: accepted, job message unknown.
func (c *Client) accepted(ctx context.Context, id string) (acceptedRecord, error) {
	var rec acceptedRecord
	kv, err := c.js.KeyValue(ctx, AcceptedBucket)
	if err != nil {
		return rec, fmt.Errorf("reading the %s bucket: %w", AcceptedBucket, err)
	}
	e, err := kv.Get(ctx, acceptedKey(id))
	if err != nil {
		return rec, err
	}
	_ = json.Unmarshal(e.Value(), &rec)
	return rec, nil
}

// Accepted reports whether a client with Options.Track submitted job id
// (within the bucket's TTL).
func (c *Client) Accepted(ctx context.Context, id string) (bool, error) {
	_, ok, err := c.AcceptedAt(ctx, id)
	return ok, err
}

// AcceptedAt reports when a client with Options.Track first submitted job
// id, if it did (within the bucket's TTL): the time its record was stored.
func (c *Client) AcceptedAt(ctx context.Context, id string) (time.Time, bool, error) {
	kv, err := c.js.KeyValue(ctx, AcceptedBucket)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("reading the %s bucket: %w", AcceptedBucket, err)
	}
	e, err := kv.Get(ctx, acceptedKey(id))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return time.Time{}, false, nil
	case err != nil:
		return time.Time{}, false, fmt.Errorf("reading job %s in the %s bucket: %w", id, AcceptedBucket, err)
	}
	return e.Created(), true, nil
}
