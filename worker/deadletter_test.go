package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

// Every partition's stream numbers its messages from 1, and all of them
// dead-letter into the one RERANK_DEAD: a rejected job in each partition
// still leaves one dead letter each (the dead letter's msg-id names the
// job's stream, not only its sequence).
func TestDeadLettersOfPartitionsDoNotCollide(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.Partitions = 3
	w := startWorker(t, ns, &slowScorer{}, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subjects := []string{schemas.LaneSubject("m", schemas.Interactive)}
	for p := range 3 {
		subjects = append(subjects, schemas.PartitionSubject("m", schemas.Interactive, p))
	}
	for i, subj := range subjects {
		bad := makeJob(fmt.Sprintf("dead-%d", i), 2)
		bad.Query = "" // missing_query: permanent
		b, _ := schemas.EncodeJob(bad, schemas.JSON)
		m := nats.NewMsg(subj)
		m.Data = b
		m.Header.Set(schemas.HeaderContentType, schemas.ContentTypeJSON)
		ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(bad.ID))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Sequence != 1 {
			t.Fatalf("job %d is message %d of %s; the test wants each stream's first", i, ack.Sequence, ack.Stream)
		}
	}
	w.settled(t, len(subjects))
	waitFor(t, 10*time.Second, "error results", func() bool { return len(storedResults(t, js)) == len(subjects) })
	waitFor(t, 10*time.Second, "one dead letter per rejected job", func() bool {
		return streamMsgs(t, js, schemas.DeadStream) == uint64(len(subjects))
	})
	if n := w.obs.get(func(c *counter) int { return c.dead[string(schemas.CodeMissingQuery)] }); n != len(subjects) {
		t.Fatalf("%d dead letters counted, want %d", n, len(subjects))
	}
}

// A rejected job's dead letter is stored before its error result: while
// the dead-letter stream cannot take it, no error result is published (a
// worker that died between the two would otherwise leave the error result,
// and the redelivery would find it and ack the job with no dead letter).
func TestNoErrorResultWithoutItsDeadLetter(t *testing.T) {
	ns := startServer(t)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	cfg := testConfig()
	cfg.PublishRetry = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := worker.Provision(ctx, js, []string{"m"}, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Provision = false // keep the dead-letter stream gone
	if err := js.DeleteStream(ctx, schemas.DeadStream); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, ns, &slowScorer{}, cfg)
	bad := makeJob("dead-first", 2)
	bad.Query = ""
	publishJob(t, js, bad)
	waitFor(t, 10*time.Second, "a failed dead-letter attempt", func() bool {
		return w.obs.get(func(c *counter) int { return c.outcomes[worker.OutcomeRetry] }) >= 1
	})
	if n := storedResults(t, js)["dead-first"]; n != 0 {
		t.Fatalf("%d error results stored while the job has no dead letter", n)
	}
	// Once the stream is back, the job gets both.
	for _, sc := range worker.StreamConfigs(1) {
		if sc.Name == schemas.DeadStream {
			if _, err := js.CreateStream(ctx, sc); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, 20*time.Second, "error result and dead letter", func() bool {
		return storedResults(t, js)["dead-first"] == 1 && streamMsgs(t, js, schemas.DeadStream) == 1
	})
}
