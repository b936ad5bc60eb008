package client

import (
	"context"
	"encoding/base64"
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
// answered on the default subject, rerank.results.<id>).
func (c *Client) Lookup(ctx context.Context, id string) (*schemas.Result, error) {
	if err := schemas.CheckID(id); err != nil {
		return nil, err
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

// ProvisionTracking creates or updates the accepted-jobs bucket (its
// entries live as long as results do).
func (c *Client) ProvisionTracking(ctx context.Context, replicas int, ttl time.Duration) error {
	_, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: AcceptedBucket, TTL: ttl,
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage, Description: "jobs accepted by rerank gateways"})
	if err != nil {
		return fmt.Errorf("provisioning the %s bucket: %w", AcceptedBucket, err)
	}
	return nil
}

// acceptedKey maps a job id onto the bucket's key alphabet.
func acceptedKey(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

func (c *Client) markAccepted(ctx context.Context, id string) error {
	kv, err := c.js.KeyValue(ctx, AcceptedBucket)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, acceptedKey(id), []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	return err
}

// Accepted reports whether a client with Options.Track submitted job id
// (within the bucket's TTL).
func (c *Client) Accepted(ctx context.Context, id string) (bool, error) {
	kv, err := c.js.KeyValue(ctx, AcceptedBucket)
	if err != nil {
		return false, fmt.Errorf("reading the %s bucket: %w", AcceptedBucket, err)
	}
	_, err = kv.Get(ctx, acceptedKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}
