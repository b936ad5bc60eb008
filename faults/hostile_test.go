package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
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

// hostileModel is the tiny model with only_second truncation at 128 tokens,
// so that a long query leaves no room for the passage (input_too_long).
func hostileModel(t *testing.T, tiny string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"model.onnx", "tokenizer.json"} {
		if err := os.Symlink(filepath.Join(tiny, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := `{"name":"demo","preset":"ms-marco-MiniLM","max_length":128,"truncation":"only_second"}`
	if err := os.WriteFile(filepath.Join(dir, "rerank.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// emptyCandidatesJob is about size bytes of a job whose candidates are
// empty maps: cheap to send, about 48 bytes each once decoded.
func emptyCandidatesJob(id string, size int, f schemas.Format) []byte {
	if f == schemas.JSON {
		n := (size - 64) / 3
		return []byte(`{"id":"` + id + `","query":"q","candidates":[` + strings.Repeat("{},", n-1) + `{}]}`)
	}
	var b bytes.Buffer
	head := mustMsgpack(map[string]any{"id": id, "query": "q"})
	b.WriteByte(0x83)
	b.Write(head[1:])
	n := size - 64 - len(id)
	b.Write(append([]byte{0xaa}, "candidates"...))
	b.Write([]byte{0xdd, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	b.Write(bytes.Repeat([]byte{0x80}, n))
	return b.Bytes()
}

// bigResultJob is a job just under the payload limit that asks for its
// documents back: its result is over the limit (result_too_large).
func bigResultJob(id string) []byte {
	j := &schemas.Job{ID: id, Query: "q", ReturnDocuments: true}
	for i := range schemas.DefaultMaxCandidates {
		bm := 1.0
		j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprintf("c%04d", i), Text: strings.Repeat("w ", 1002), BM25: &bm})
	}
	return mustMsgpack(j)
}

// 9. Hostile: every kind of job that once hurt the queue, the worker or
// other jobs, each between healthy jobs. Every job is answered once, the
// hostile ones with their error code and a dead letter, the worker never
// restarts, and the 8 MiB jobs of empty candidates cost its peak RSS at most
// 64 MiB over its peak on everything else.
func TestHostile(t *testing.T) {
	defer dumpLogs(t)
	_, tiny, _ := assets(t)
	rng := rand.New(rand.NewPCG(seed(t), 9))
	ns := startNATS(t, natsembed.Options{})
	_, js := connect(t, ns.ClientURL())
	const panicQuery = "hostile: panic here"
	w := startWorker(t, "w1", ns.ClientURL(), hostileModel(t, tiny), "--concurrency", "4", "--test-panic-query", panicQuery)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := newLoad()
	healthy := 0
	submitHealthy := func(n int) {
		for range n {
			if err := l.submitHealthy(ctx, t, js, healthyJob(rng, fmt.Sprintf("hostile-healthy-%d", healthy))); err != nil {
				t.Fatal(err)
			}
			healthy++
		}
	}
	sendHostile := func(id, contentType string, code schemas.Code, data []byte) {
		if err := l.publish(ctx, js, id, contentType, data); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		l.mu.Lock()
		l.hostile[id], l.raw[id] = code, data
		l.mu.Unlock()
		submitHealthy(3)
	}
	rounds := size(1, 5)
	// Phase 1: everything but the 8 MiB jobs, for the RSS baseline.
	submitHealthy(10)
	for r := range rounds {
		j := healthyJob(rng, fmt.Sprintf("hostile-api-reply-%d", r))
		j.ReplyTo = "$JS.API.STREAM.PURGE." + schemas.JobsStream
		sendHostile(j.ID, schemas.ContentTypeMsgpack, schemas.CodeInvalidReplyTo, encode(t, j))
		big := bigResultJob(fmt.Sprintf("hostile-big-result-%d", r))
		if len(big) > natsembed.MaxPayload-1024 {
			t.Fatalf("the big-result job is %d bytes: over the payload limit", len(big))
		}
		sendHostile(fmt.Sprintf("hostile-big-result-%d", r), schemas.ContentTypeMsgpack, schemas.CodeResultTooLarge, big)
		long := healthyJob(rng, fmt.Sprintf("hostile-long-input-%d", r))
		long.Query = sentence(rng, 180)[:1000]
		sendHostile(long.ID, schemas.ContentTypeMsgpack, schemas.CodeInputTooLong, encode(t, long))
		boom := healthyJob(rng, fmt.Sprintf("hostile-panic-%d", r))
		boom.Query = panicQuery
		sendHostile(boom.ID, schemas.ContentTypeMsgpack, schemas.CodeInternal, encode(t, boom))
	}
	if !waitDone(js, l.submitted(), 3*time.Minute) {
		t.Fatalf("phase 1: not every job was answered within 3 minutes")
	}
	baseline := w.procStatus("VmHWM") / 1024
	// Phase 2: 8 MiB of empty candidates, in msgpack and in JSON.
	for r := range rounds {
		for _, f := range []schemas.Format{schemas.Msgpack, schemas.JSON} {
			id := fmt.Sprintf("hostile-8mib-%s-%d", f, r)
			sendHostile(id, f.ContentType(), schemas.CodeTooManyCandidates, emptyCandidatesJob(id, natsembed.MaxPayload-1024, f))
		}
	}
	if !waitDone(js, l.submitted(), 3*time.Minute) {
		t.Errorf("not every job was answered within 3 minutes")
	}
	peak := w.procStatus("VmHWM") / 1024
	res := verify(t, js, "hostile", l)
	restarts := 0
	if w.exited() || !w.healthy() {
		restarts = 1
	}
	if log := w.log(); strings.Contains(log, "fatal error") || strings.Contains(log, "goroutine 1 [") {
		restarts = 1
		t.Errorf("the worker log shows a crash:\n%s", tail(log, 40))
	}
	res.add("peak_rss_mib=%d worker_restarts=%d (baseline_rss_mib=%d, 8MiB_jobs=%d)", peak, restarts, baseline, 2*rounds)
	finish(t, res)
	if restarts != 0 {
		t.Errorf("the worker restarted or became unhealthy")
	}
	if res.dead != len(l.hostile) {
		t.Errorf("%d dead letters for %d hostile jobs", res.dead, len(l.hostile))
	}
	if peak-baseline > 64 {
		t.Errorf("the 8 MiB jobs raised the peak RSS by %d MiB (from %d to %d), over 64", peak-baseline, baseline, peak)
	}
	if n := w.metric("rerank_job_panics_total"); n != float64(rounds) {
		t.Errorf("rerank_job_panics_total = %v, want %d", n, rounds)
	}
}
