package client

import (
	"context"
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
// message counts (or, while its message is not recorded, a result stored
// after its reservation): while that job waits, an older job's result under
// the same id is ErrNotFound, not its answer.
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
	r, at, err := c.storedResultAt(ctx, schemas.TenantSubject(c.opts.Tenant, schemas.ResultSubject(id)))
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
	if rec.Seq != 0 && !r.Answers(rec.Stream, rec.Seq) || rec.Seq == 0 && at.Before(rec.created.Add(-clockSkew)) {
		return nil, fmt.Errorf("looking up job %s: the stored result answers an earlier job with this id: %w", id, ErrNotFound)
	}
	return r, nil
}

// errUndecodable marks a stored message that is not a result.
var errUndecodable = errors.New("stored message is not a result")

// storedResult reads and decodes the last message of a result subject in
// the results stream.
func (c *Client) storedResult(ctx context.Context, subject string) (*schemas.Result, error) {
	r, _, err := c.storedResultAt(ctx, subject)
	return r, err
}

// storedResultAt is storedResult with the time the message was stored.
func (c *Client) storedResultAt(ctx context.Context, subject string) (*schemas.Result, time.Time, error) {
	s, err := c.js.Stream(ctx, schemas.ResultsStream)
	if err != nil {
		return nil, time.Time{}, err
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return nil, time.Time{}, err
	}
	f, _ := schemas.ParseContentType(m.Header.Get(schemas.HeaderContentType))
	r, err := schemas.DecodeResult(m.Data, f)
	if err != nil {
		return nil, m.Time, fmt.Errorf("%w: %w", errUndecodable, err)
	}
	return r, m.Time, nil
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
		if m, ok := strings.CutPrefix(subj, schemas.JobsPrefix); ok && !strings.HasSuffix(subj, schemas.BulkSuffix) && !strings.ContainsAny(m, ".*>") {
			models = append(models, m)
		}
	}
	if err := infos.Err(); err != nil {
		return nil, fmt.Errorf("listing models: %w", err)
	}
	slices.Sort(models)
	return slices.Compact(models), nil
}
