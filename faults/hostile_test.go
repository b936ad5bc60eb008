package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/schemas"
)

// hostile is one kind of poison message: its bytes, content type and the
// error code the worker must answer with ("" when the server must refuse
// the publish).
type hostile struct {
	kind        string
	contentType string
	code        schemas.Code
	make        func(rng *rand.Rand, id string) []byte
}

func mustMsgpack(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func validJobBytes(rng *rand.Rand, id string) []byte {
	b, err := schemas.EncodeJob(healthyJob(rng, id), schemas.Msgpack)
	if err != nil {
		panic(err)
	}
	return b
}

// hostileKinds are the poison messages, in the order they are cycled.
var hostileKinds = []hostile{
	{"random-bytes", "", schemas.CodeBadEncoding, func(rng *rand.Rand, _ string) []byte {
		b := make([]byte, 64+rng.IntN(512))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		b[0] = 0xc1 // never used in msgpack: the rest is random, the verdict certain
		return b
	}},
	{"truncated-msgpack", schemas.ContentTypeMsgpack, schemas.CodeBadEncoding, func(rng *rand.Rand, id string) []byte {
		b := validJobBytes(rng, id)
		return b[:len(b)/2]
	}},
	{"100k-candidates", schemas.ContentTypeMsgpack, schemas.CodeTooManyCandidates, func(_ *rand.Rand, id string) []byte {
		j := &schemas.Job{ID: id, Query: "q", Candidates: make([]schemas.Candidate, 100_000)}
		for i := range j.Candidates {
			j.Candidates[i] = schemas.Candidate{ID: fmt.Sprint(i), Text: "x"}
		}
		return mustMsgpack(j)
	}},
	{"10MB-text", schemas.ContentTypeMsgpack, "", func(_ *rand.Rand, id string) []byte { // over the 8 MiB max payload
		return mustMsgpack(&schemas.Job{ID: id, Query: "q", Candidates: []schemas.Candidate{{ID: "a", Text: strings.Repeat("a", 10<<20)}}})
	}},
	{"7MB-text", schemas.ContentTypeMsgpack, schemas.CodeTextTooLong, func(_ *rand.Rand, id string) []byte { // under it
		return mustMsgpack(&schemas.Job{ID: id, Query: "q", Candidates: []schemas.Candidate{{ID: "a", Text: strings.Repeat("a ", 7<<19)}}})
	}},
	{"nan-score", schemas.ContentTypeMsgpack, schemas.CodeNonFiniteScore, func(rng *rand.Rand, id string) []byte {
		j := healthyJob(rng, id)
		nan := math.NaN()
		j.Candidates[len(j.Candidates)-1].BM25 = &nan
		return mustMsgpack(j)
	}},
	{"inf-score", schemas.ContentTypeMsgpack, schemas.CodeNonFiniteScore, func(rng *rand.Rand, id string) []byte {
		j := healthyJob(rng, id)
		inf := math.Inf(-1)
		j.Candidates[0].DPR = &inf
		return mustMsgpack(j)
	}},
	{"wrong-types", schemas.ContentTypeMsgpack, schemas.CodeBadEncoding, func(_ *rand.Rand, id string) []byte {
		return mustMsgpack(map[string]any{"id": id, "query": 42, "candidates": "all of them", "top_n": "three"})
	}},
	{"deep-nesting", schemas.ContentTypeMsgpack, schemas.CodeBadEncoding, func(_ *rand.Rand, id string) []byte {
		var nested any = "bottom"
		for range 10_000 {
			nested = []any{nested}
		}
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		if err := enc.Encode(map[string]any{"id": id, "query": "q", "meta": nested}); err != nil {
			panic(err)
		}
		return buf.Bytes()
	}},
	{"invalid-utf8", schemas.ContentTypeMsgpack, schemas.CodeBadEncoding, func(rng *rand.Rand, id string) []byte {
		j := healthyJob(rng, id)
		j.Candidates[1].Text = "caf\xc3\x28 \xff\xfe"
		return mustMsgpack(j)
	}},
	{"json-garbage", schemas.ContentTypeJSON, schemas.CodeBadEncoding, func(_ *rand.Rand, id string) []byte {
		return []byte(`{"id":"` + id + `","query":"q","candidates":[{"id":"a","text":"x"},` + strings.Repeat("[", 5000))
	}},
	{"unknown-content-type", "text/x-poison", schemas.CodeBadEncoding, validJobBytes},
	{"empty", schemas.ContentTypeMsgpack, schemas.CodeBadEncoding, func(*rand.Rand, string) []byte { return nil }},
	{"bad-reply-to", schemas.ContentTypeMsgpack, schemas.CodeInvalidReplyTo, func(rng *rand.Rand, id string) []byte {
		j := healthyJob(rng, id)
		j.ReplyTo = "rerank.jobs.demo" // would feed the result back in as a job
		return mustMsgpack(j)
	}},
}

// 5. Poison: every tenth message is hostile. Each hostile job that reaches
// the worker gets an error result and a dead-letter copy of its bytes; the
// 10 MB one is refused by the server at the door (max payload 8 MiB); the
// healthy jobs around them are answered on their first delivery, and the
// worker never crashes.
func TestPoison(t *testing.T) {
	defer dumpLogs(t)
	_, tiny, _ := assets(t)
	rng := rand.New(rand.NewPCG(seed(t), 1))
	ns := startNATS(t, natsembed.Options{})
	_, js := connect(t, ns.ClientURL())
	w := startWorker(t, "w1", ns.ClientURL(), tiny, "--concurrency", "4")

	n := size(280, 1400) // two rounds of every hostile kind in CI, ten in full
	l := newLoad()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kinds := map[string]int{}
	for i := range n {
		if i%10 != 9 {
			if err := l.submitHealthy(ctx, t, js, healthyJob(rng, fmt.Sprintf("poison-%d", i))); err != nil {
				t.Fatal(err)
			}
			continue
		}
		h := hostileKinds[(i/10)%len(hostileKinds)]
		id := fmt.Sprintf("poison-%d-%s", i, h.kind)
		data := h.make(rng, id)
		err := l.publish(ctx, js, id, h.contentType, data)
		switch {
		case h.code == "" && errors.Is(err, nats.ErrMaxPayload):
			l.rejected[id] = err.Error()
		case h.code == "":
			t.Fatalf("%s: the server accepted %d bytes over its max payload (err %v)", id, len(data), err)
		case err != nil:
			t.Fatal(err)
		default:
			l.hostile[id], l.raw[id] = h.code, data
		}
		kinds[h.kind]++
	}
	if !waitDone(js, l.submitted(), 3*time.Minute) {
		t.Errorf("not every job was answered within 3 minutes")
	}
	r := verify(t, js, "poison", l)
	if r.redelivered > 0 {
		t.Errorf("%d jobs were answered on a redelivery: the poison disturbed their neighbours", r.redelivered)
	}
	alive := !w.exited() && w.healthy()
	if !alive {
		t.Errorf("the worker is gone or unhealthy after the poison")
	}
	if log := w.log(); strings.Contains(log, "panic") || strings.Contains(log, "fatal error") {
		t.Errorf("the worker log shows a panic:\n%s", tail(log, 40))
	}
	var firstReject string
	for _, why := range l.rejected {
		firstReject = why
		break
	}
	r.add("hostile=%d rejected_at_door=%d (10MB text: %q) redelivered=%d worker_alive=%v restarts=0 peak_rss_mib=%d",
		len(l.hostile), len(l.rejected), firstReject, r.redelivered, alive, w.procStatus("VmHWM")/1024)
	finish(t, r)
	if r.dead != len(l.hostile) {
		t.Errorf("%d dead letters for %d hostile jobs", r.dead, len(l.hostile))
	}
	t.Logf("hostile kinds sent: %v", kinds)
}
