package client

import (
	"context"

	"github.com/rerank/rerank/schemas"
)

// SubmitAndDie is what a tracked submitter killed between publishing job
// and recording its job message leaves behind: the id reserved, the job
// queued, no message recorded.
func (c *Client) SubmitAndDie(ctx context.Context, job *schemas.Job) error {
	data, err := schemas.EncodeJob(job, c.opts.Format)
	if err != nil {
		return err
	}
	t, err := c.track(ctx, &Pending{subject: schemas.ResultsPrefix + job.ID}, job)
	if err != nil || !t.publish {
		return err
	}
	_, err = c.publish(ctx, job, c.opts.Model, data)
	return err
}
