package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/schemas"
)

// 3. Anyone who may publish on a job's result subject (another job's
// reply_to, another client) could answer in the worker's place: the client
// takes only a result with its job's id and in-range indices, counts the
// rest, and keeps waiting.
func TestForgedResultsAreIgnored(t *testing.T) {
	e := setup(t, true)
	c, err := client.New(e.nc, client.Options{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	j := job("victim", "a", "bb")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.SubmitAsync(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *schemas.Result) {
		b, _ := schemas.EncodeResult(r, schemas.Msgpack)
		m := nats.NewMsg(schemas.ResultSubject(j.ID))
		m.Data = b
		if err := e.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	send(&schemas.Result{ID: "attacker", Results: []schemas.Ranked{{Index: 0, ID: "c0"}}})
	send(&schemas.Result{ID: j.ID, Results: []schemas.Ranked{{Index: 7, ID: "c7"}}}) // would panic `rerank submit`
	send(&schemas.Result{ID: j.ID, Results: []schemas.Ranked{{Index: 1, ID: "c1", RelevanceScore: 2}, {Index: 0, ID: "c0", RelevanceScore: 1}}})
	res, err := p.Result(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 2 || res.Results[0].Index != 1 {
		t.Fatalf("got %+v, want the real result", res)
	}
	if c.Ignored() != 2 {
		t.Fatalf("ignored %d messages, want 2", c.Ignored())
	}
}
