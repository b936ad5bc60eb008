package worker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// With Partitions, a model's jobs spread over RERANK_JOBS_P0… (each its own
// stream, so its own leader): a worker serves every partition of both
// lanes, and still the unpartitioned subjects of producers that do not
// know the count. Partitions stay out of each other's subjects.
func TestPartitionedWorkerServesEveryStream(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.Partitions = 3
	cfg.BacklogInterval = 100 * time.Millisecond
	w := startWorker(t, ns, &slowScorer{}, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var pending []*client.Pending
	for _, o := range []client.Options{
		{Model: "m", Partitions: 3}, {Model: "m", Partitions: 3, Lane: schemas.Bulk}, {Model: "m"}, {Model: "m", Lane: schemas.Bulk},
	} {
		cl, err := client.New(nc, o)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 12 {
			p, err := cl.SubmitAsync(ctx, makeJob(fmt.Sprintf("part-%d-%d-%d", o.Partitions, o.Lane, i), 3))
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, p)
		}
	}
	for _, p := range pending {
		res, err := p.Result(ctx)
		if err != nil || res.Error != nil || len(res.Results) != 3 {
			t.Fatalf("result %+v, %v", res, err)
		}
	}
	for p := range 3 {
		s, err := js.Stream(ctx, schemas.PartitionStream(p))
		if err != nil {
			t.Fatalf("partition %d: %v", p, err)
		}
		for _, lane := range schemas.Lanes {
			c, err := s.Consumer(ctx, worker.LaneConsumerName("m", lane))
			if err != nil {
				t.Fatalf("partition %d, %s lane: %v", p, lane, err)
			}
			ci, _ := c.Info(ctx)
			if ci.Config.FilterSubject != schemas.PartitionSubject("m", lane, p) || ci.Delivered.Stream == 0 {
				t.Errorf("partition %d, %s lane: filter %q, delivered %d; want %q and some jobs", p, lane,
					ci.Config.FilterSubject, ci.Delivered.Stream, schemas.PartitionSubject("m", lane, p))
			}
		}
	}
	// The unpartitioned subjects stay in RERANK_JOBS, served.
	s, _ := js.Stream(ctx, schemas.JobsStream)
	info, _ := s.Info(ctx)
	if want := []string{"rerank.jobs.*", "rerank.jobs.*.bulk"}; !slices.Equal(info.Config.Subjects, want) {
		t.Errorf("RERANK_JOBS subjects %q, want %q", info.Config.Subjects, want)
	}
	// A subject no stream holds is refused at publish time, not stored unread.
	if _, err := js.Publish(ctx, "rerank.jobs.m.x.y", []byte("{}")); err == nil {
		t.Error("a job on rerank.jobs.m.x.y was accepted; no consumer reads that subject")
	}
	// The backlog is one figure per lane: its consumers added up.
	waitFor(t, 5*time.Second, "backlog reported", func() bool {
		return w.obs.get(func(c *counter) int { return len(c.backlog) }) == 2
	})
}

// A job that ran out of deliveries in a partition while no worker listened
// is found by the sweep there and answered.
func TestPartitionJobOutOfDeliveriesIsSwept(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.MaxDeliver = 2
	cfg.Partitions = 2
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := worker.Provision(ctx, js, []string{"m"}, cfg); err != nil {
		t.Fatal(err)
	}
	job := makeJob("orphan-p", 3)
	b, _ := schemas.EncodeJob(job, schemas.Msgpack)
	m := nats.NewMsg(schemas.PartitionSubject("m", schemas.Interactive, 1))
	m.Data = b
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(job.ID)); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, schemas.PartitionStream(1), worker.ConsumerName("m"))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // two deliveries nobody settles, then the server gives up
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for range batch.Messages() {
		}
	}
	waitFor(t, 10*time.Second, "the consumer to give up on the job", func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.Delivered.Stream >= 1 && ci.NumAckPending == 0
	})
	startWorker(t, ns, &slowScorer{}, cfg)
	waitFor(t, 20*time.Second, "error result", func() bool { return storedResults(t, js)["orphan-p"] == 1 })
	if res := lastResult(t, js, "orphan-p"); res.Error == nil || res.Error.Code != schemas.CodeInternal {
		t.Fatalf("result %+v, want an internal error", res)
	}
	waitFor(t, 5*time.Second, "dead letter, partition empty", func() bool {
		return streamMsgs(t, js, schemas.DeadStream) == 1 && streamMsgs(t, js, schemas.PartitionStream(1)) == 0
	})
}

func TestPartitionOf(t *testing.T) {
	counts := make([]int, 4)
	for i := range 4000 {
		p := schemas.PartitionOf(fmt.Sprintf("job-%d", i), 4)
		if p != schemas.PartitionOf(fmt.Sprintf("job-%d", i), 4) {
			t.Fatal("not deterministic")
		}
		counts[p]++
	}
	for p, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("partition %d got %d of 4000 ids: %v", p, n, counts)
		}
	}
	// FNV-1a 32 of "a" is 0xe40c292c: fixed across producers and languages.
	if got := schemas.PartitionOf("a", 7); got != int(uint32(0xe40c292c)%7) {
		t.Errorf("PartitionOf(a, 7) = %d", got)
	}
	if schemas.PartitionOf("x", 0) != 0 || schemas.PartitionOf("x", 1) != 0 {
		t.Error("one partition or none is partition 0")
	}
	if _, err := client.New(nil, client.Options{Partitions: schemas.MaxPartitions + 1}); err == nil {
		t.Error("client accepted too many partitions")
	}
	if err := (worker.Config{Partitions: -1}).Validate(); err == nil {
		t.Error("worker accepted -1 partitions")
	}
}

// Partitions do not multiply the jobs a worker holds: the pullers of one
// lane's streams each ask for their share of the free slots (with 3
// partitions and 4 slots, not 4 jobs each). And the backlog of a lane is
// its consumers' sum over the streams.
func TestPartitionsShareTheWorkersSlots(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.Partitions = 3
	cfg.Concurrency = 4
	cfg.BacklogInterval = 100 * time.Millisecond
	hung := &slowScorer{}
	hung.Hang.Store(true)
	w := startWorker(t, ns, hung, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.New(nc, client.Options{Model: "m", Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	const jobs = 24
	for i := range jobs {
		p, err := cl.SubmitAsync(ctx, makeJob(fmt.Sprintf("share-%d", i), 2))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Cancel()
	}
	waitFor(t, 10*time.Second, "the slots taken", func() bool { return hung.Calls.Load() > 0 })
	// The backlog counts every job once: delivered or not, in any partition.
	waitFor(t, 10*time.Second, "the lane's backlog summed over its streams", func() bool {
		return w.obs.get(func(c *counter) int { return int(c.backlog[schemas.Interactive.String()]) }) == jobs
	})
	// The pullers fetched when the slots were free, before the backlog
	// report above: what they took is held now.
	var held int
	for p := range 3 {
		c, err := js.Consumer(ctx, schemas.PartitionStream(p), worker.ConsumerName("m"))
		if err != nil {
			t.Fatal(err)
		}
		ci, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held += ci.NumAckPending
	}
	if held == 0 || held > 2*cfg.Concurrency {
		t.Errorf("the worker holds %d jobs for %d slots; want at most %d (each partition's puller asks for its share)", held, cfg.Concurrency, 2*cfg.Concurrency)
	}
}
