package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// TestFullJobStreamPushesBack: a job stream with a limit refuses new jobs
// once full (discard new) with the coded queue_full error, and every job it
// accepted is answered once a worker runs: none is dropped to make room.
func TestFullJobStreamPushesBack(t *testing.T) {
	for _, limit := range []string{"msgs", "bytes"} {
		t.Run(limit, func(t *testing.T) {
			cfg := worker.Config{Provision: true, FetchWait: 200 * time.Millisecond, WorkerID: "w"}
			if limit == "msgs" {
				cfg.JobsMaxMsgs = 5
			} else {
				cfg.JobsMaxBytes = 5 * 400 // five of the jobs below, with their headers
			}
			e := setupWith(t, cfg, true)
			nc, js := e.nc, e.js
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cl, err := client.New(nc, client.Options{Model: "m", Format: schemas.JSON})
			if err != nil {
				t.Fatal(err)
			}
			var accepted []*client.Pending
			var refused []*schemas.Job
			for i := range 12 {
				j := job(fmt.Sprintf("bp-%d", i), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bb")
				p, err := cl.SubmitAsync(ctx, j)
				switch {
				case err == nil:
					accepted = append(accepted, p)
				case errors.Is(err, client.ErrQueueFull) && errors.Is(err, schemas.Errorf(schemas.CodeQueueFull, "")):
					refused = append(refused, j)
				default:
					t.Fatalf("job %d: %v", i, err)
				}
			}
			if len(accepted) == 0 || len(refused) == 0 || len(accepted)+len(refused) != 12 {
				t.Fatalf("accepted %d, refused %d", len(accepted), len(refused))
			}
			if limit == "msgs" && len(accepted) != 5 {
				t.Fatalf("accepted %d with max_msgs 5", len(accepted))
			}
			s, _ := js.Stream(ctx, schemas.JobsStream)
			info, _ := s.Info(ctx)
			if int(info.State.Msgs) != len(accepted) {
				t.Fatalf("the stream holds %d jobs, %d were accepted", info.State.Msgs, len(accepted))
			}
			// A worker drains the queue: every accepted job is answered.
			testfixture.StartWorker(t, e.url, e.r, cfg)
			for _, p := range accepted {
				res, err := p.Result(ctx)
				if err != nil || res.Error != nil {
					t.Fatalf("an accepted job: %v %v", err, res)
				}
			}
			// With room again (the accepted jobs acknowledged and gone from
			// the work queue), the refused jobs go in.
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				info, err := s.Info(ctx)
				if err == nil && info.State.Msgs == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the queue did not empty: %v %+v", err, info)
				}
			}
			// As a producer does: on queue_full, wait and retry (acks reach
			// the server a moment after the results, so room comes back
			// gradually).
			for _, j := range refused {
				for {
					res, err := cl.Submit(ctx, j)
					if errors.Is(err, client.ErrQueueFull) && ctx.Err() == nil {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if err != nil || res.Error != nil {
						t.Fatalf("resubmitting %s: %v %v", j.ID, err, res)
					}
					break
				}
			}
		})
	}
}

// A full lane refuses only its own producers: with max 3 jobs a lane, a
// bulk backfill that fills model m's bulk lane leaves m's interactive lane
// and model m2's lanes open, in RERANK_JOBS and in a partition.
func TestFullBulkLaneRefusesOnlyItself(t *testing.T) {
	cfg := worker.Config{Provision: true, FetchWait: 200 * time.Millisecond, WorkerID: "w", JobsMaxMsgs: 3, Partitions: 2}
	_, nc, js := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := worker.Provision(ctx, js, []string{"m", "m2"}, cfg); err != nil {
		t.Fatal(err)
	}
	submit := func(o client.Options, id string) error {
		c, err := client.New(nc, o)
		if err != nil {
			t.Fatal(err)
		}
		p, err := c.SubmitAsync(ctx, job(id, "a", "b"))
		if err == nil {
			p.Cancel()
		}
		return err
	}
	for _, parts := range []int{0, 2} {
		bulk := client.Options{Model: "m", Lane: schemas.Bulk, Partitions: parts}
		// Fill the lane (with partitions: the one partition of these ids).
		filled := 0
		for i := 0; filled < 3; i++ {
			id := fmt.Sprintf("fill-%d-%d", parts, i)
			if parts > 0 && schemas.PartitionOf(id, parts) != 0 {
				continue
			}
			if err := submit(bulk, id); err != nil {
				t.Fatalf("filling: %v", err)
			}
			filled++
		}
		over := fmt.Sprintf("over-%d", parts)
		for i := 0; parts > 0 && schemas.PartitionOf(over, parts) != 0; i++ {
			over = fmt.Sprintf("over-%d-%d", parts, i)
		}
		if err := submit(bulk, over); !errors.Is(err, client.ErrQueueFull) {
			t.Fatalf("partitions %d: a fourth bulk job: %v, want ErrQueueFull", parts, err)
		}
		for _, o := range []client.Options{
			{Model: "m", Partitions: parts},
			{Model: "m2", Lane: schemas.Bulk, Partitions: parts},
			{Model: "m2", Partitions: parts},
		} {
			if err := submit(o, over); err != nil {
				t.Errorf("partitions %d: model %s %s lane refused while m's bulk lane is full: %v", parts, o.Model, o.Lane, err)
			}
		}
	}
}
