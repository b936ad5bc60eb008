package faults

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/schemas"
)

var vocabulary = strings.Fields(`the quick brown fox jumps over a lazy dog while search engines rank
passages by relevance to queries about cities rivers mountains history science music food travel
weather sport health finance law art language computers networks storage queues streams workers`)

// healthyJob is a small valid job: 5 to 20 short candidates with BM25 scores.
func healthyJob(rng *rand.Rand, id string) *schemas.Job {
	j := &schemas.Job{V: 1, ID: id, Query: sentence(rng, 4), Meta: map[string]string{"job": id}}
	n := 5 + rng.IntN(16)
	for i := range n {
		bm25 := rng.Float64() * 40
		j.Candidates = append(j.Candidates, schemas.Candidate{ID: fmt.Sprintf("d%d", i), Text: sentence(rng, 8+rng.IntN(13)), BM25: &bm25})
	}
	return j
}

func sentence(rng *rand.Rand, words int) string {
	w := make([]string, words)
	for i := range w {
		w[i] = vocabulary[rng.IntN(len(vocabulary))]
	}
	return strings.Join(w, " ")
}

func encode(t testing.TB, j *schemas.Job) []byte {
	t.Helper()
	b, err := schemas.EncodeJob(j, schemas.Msgpack)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// --- submitting --------------------------------------------------------------

// load is what a scenario submitted and what it expects back.
type load struct {
	mu       sync.Mutex
	healthy  map[string]int          // job id → candidates
	hostile  map[string]schemas.Code // job id → expected error code
	raw      map[string][]byte       // hostile job id → the bytes published
	rejected map[string]string       // refused at publish (never stored) → why
	maybe    map[string]bool         // published without an acknowledgement: stored or not, either is right
	retries  atomic.Int64            // publish attempts repeated after an error
}

func newLoad() *load {
	return &load{healthy: map[string]int{}, hostile: map[string]schemas.Code{}, raw: map[string][]byte{}, rejected: map[string]string{}, maybe: map[string]bool{}}
}

func (l *load) submitted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.healthy) + len(l.hostile)
}

// publish sends a job to rerank.jobs.demo with Nats-Msg-Id = id, retrying
// with the same id until JetStream acknowledges it: a retry after a lost
// acknowledgement is dropped as a duplicate by the stream.
func (l *load) publish(ctx context.Context, js jetstream.JetStream, id, contentType string, data []byte) error {
	return l.publishTo(ctx, js, schemas.JobSubject("demo"), id, contentType, data)
}

// publishTo is publish to subject; a full lane's refusal (queue_full) is
// returned at once.
func (l *load) publishTo(ctx context.Context, js jetstream.JetStream, subject, id, contentType string, data []byte) error {
	for {
		m := nats.NewMsg(subject)
		m.Data = data
		if contentType != "" {
			m.Header.Set(schemas.HeaderContentType, contentType)
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := js.PublishMsg(pctx, m, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return nil
		}
		var apiErr *jetstream.APIError
		if errors.Is(err, nats.ErrMaxPayload) || errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum messages") {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publishing %s: %w (last error: %v)", id, ctx.Err(), err)
		}
		l.retries.Add(1)
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// submitHealthy publishes a healthy job and records it.
func (l *load) submitHealthy(ctx context.Context, t testing.TB, js jetstream.JetStream, j *schemas.Job) error {
	if err := l.publish(ctx, js, j.ID, schemas.ContentTypeMsgpack, encode(t, j)); err != nil {
		return err
	}
	l.mu.Lock()
	l.healthy[j.ID] = len(j.Candidates)
	l.mu.Unlock()
	return nil
}

// paced calls fn(i) for i in [0, n) at about rate calls per second, and
// stops at the first error.
func paced(ctx context.Context, n int, rate float64, fn func(i int) error) error {
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

// submitting is a paced submission of healthy jobs running in the
// background: done yields its result once, progress counts the jobs
// published so far.
type submitting struct {
	done      chan error
	published atomic.Int64
}

func (s *submitting) progress() int { return int(s.published.Load()) }

// submitPaced publishes n healthy jobs named prefix-<i> at about rate per
// second, in the background, until ctx ends.
func (l *load) submitPaced(ctx context.Context, t testing.TB, js jetstream.JetStream, rng *rand.Rand, n int, rate float64, prefix string) *submitting {
	s := &submitting{done: make(chan error, 1)}
	go func() {
		s.done <- paced(ctx, n, rate, func(i int) error {
			s.published.Store(int64(i + 1))
			return l.submitHealthy(ctx, t, js, healthyJob(rng, fmt.Sprintf("%s-%d", prefix, i)))
		})
	}()
	return s
}

// --- waiting and checking ----------------------------------------------------

// waitDone waits until the results stream holds a result for every job
// and the jobs stream is empty (every job acked or terminated).
func waitDone(js jetstream.JetStream, want int, d time.Duration) bool {
	return waitFor(d, func() bool {
		return streamMsgs(js, schemas.ResultsStream) >= int64(want) && streamMsgs(js, schemas.JobsStream) == 0
	})
}

// report is a scenario's outcome, printed as one line.
type report struct {
	name                                          string
	submitted, results, duplicates, lost, dead    int
	healthyErrors, hostileWrong, hostileMissing   int
	deadMissing, strays, redelivered, maxAttempts int
	extra                                         []string
	problems                                      []string
}

func (r *report) add(format string, a ...any) { r.extra = append(r.extra, fmt.Sprintf(format, a...)) }

func (r *report) line() string {
	s := fmt.Sprintf("%s: submitted=%d results=%d duplicates_visible=%d lost=%d dead_lettered=%d",
		r.name, r.submitted, r.results, r.duplicates, r.lost, r.dead)
	if len(r.extra) > 0 {
		s += " " + strings.Join(r.extra, " ")
	}
	return s
}

// verify reads every stored result and dead letter and checks them against
// the load: one result per job id, healthy jobs ranked in full, hostile jobs
// answered with their error code and dead-lettered with their bytes.
func verify(t testing.TB, js jetstream.JetStream, name string, l *load) *report {
	t.Helper()
	r := &report{name: name, submitted: l.submitted()}
	counts := map[string]int{}
	last := map[string]*schemas.Result{}
	err := readAll(js, schemas.ResultsStream, func(m storedMsg) {
		id := strings.TrimPrefix(m.subject, schemas.ResultsPrefix)
		counts[id]++
		f, _ := schemas.ParseContentType(m.header.Get(schemas.HeaderContentType))
		res, err := schemas.DecodeResult(m.data, f)
		if err != nil {
			r.problems = append(r.problems, fmt.Sprintf("result %s undecodable: %v", id, err))
			return
		}
		last[id] = res
	})
	if err != nil {
		t.Fatalf("reading %s: %v", schemas.ResultsStream, err)
	}
	deadByID := map[string][]byte{}
	trimmed := map[string]nats.Header{}
	err = readAll(js, schemas.DeadStream, func(m storedMsg) {
		r.dead++
		id := m.header.Get("Rerank-Job-Msg-Id")
		deadByID[id] = append([]byte(nil), m.data...)
		if m.header.Get(schemas.HeaderTrimmed) == "true" {
			trimmed[id] = m.header
		}
	})
	if err != nil {
		t.Fatalf("reading %s: %v", schemas.DeadStream, err)
	}
	for id, n := range counts {
		_, h := l.healthy[id]
		_, b := l.hostile[id]
		if !h && !b {
			if l.maybe[id] {
				continue // its publish was cut short, and it was stored after all
			}
			r.strays++
			r.problems = append(r.problems, fmt.Sprintf("result for unknown job id %q", id))
			continue
		}
		r.results++
		if n > 1 {
			r.duplicates++
			r.problems = append(r.problems, fmt.Sprintf("job %s has %d stored results", id, n))
		}
		if a := last[id]; a != nil {
			if a.Attempt > 1 {
				r.redelivered++
			}
			r.maxAttempts = max(r.maxAttempts, a.Attempt)
		}
	}
	for id, n := range l.healthy {
		res := last[id]
		switch {
		case counts[id] == 0:
			r.lost++
			r.problems = append(r.problems, "lost: "+id)
		case res == nil:
		case res.Error != nil:
			r.healthyErrors++
			r.problems = append(r.problems, fmt.Sprintf("healthy job %s failed: %v (attempt %d)", id, res.Error, res.Attempt))
		case len(res.Results) != n || res.ID != id:
			r.healthyErrors++
			r.problems = append(r.problems, fmt.Sprintf("healthy job %s: %d of %d candidates ranked, id %q", id, len(res.Results), n, res.ID))
		}
	}
	for id, code := range l.hostile {
		res := last[id]
		switch {
		case counts[id] == 0:
			r.hostileMissing++
			r.problems = append(r.problems, "hostile job without an error result: "+id)
		case res == nil:
		case res.Error == nil || res.Error.Code != code:
			r.hostileWrong++
			r.problems = append(r.problems, fmt.Sprintf("hostile job %s: error %v, want code %s", id, res.Error, code))
		}
		if d, ok := deadByID[id]; !ok {
			r.deadMissing++
			why := ""
			if res != nil {
				why = fmt.Sprintf(" (answered by %s, attempt %d, message %s #%d)", res.Worker, res.Attempt, res.JobStream, res.JobSeq)
			}
			r.problems = append(r.problems, "hostile job not dead-lettered: "+id+why)
		} else if h, ok := trimmed[id]; ok {
			// Too large to store beside its reason headers: a prefix, with
			// the whole's size and digest.
			sum := sha256.Sum256(l.raw[id])
			if h.Get(schemas.HeaderOriginalSize) != strconv.Itoa(len(l.raw[id])) || h.Get(schemas.HeaderOriginalSHA256) != hex.EncodeToString(sum[:]) ||
				!bytes.HasPrefix(l.raw[id], d) {
				r.deadMissing++
				r.problems = append(r.problems, fmt.Sprintf("trimmed dead letter of %s does not describe the original bytes", id))
			}
		} else if string(d) != string(l.raw[id]) {
			r.deadMissing++
			r.problems = append(r.problems, fmt.Sprintf("dead letter of %s does not hold the original bytes (%d vs %d bytes)", id, len(d), len(l.raw[id])))
		}
	}
	return r
}

// finish prints the report line and fails the test on any broken promise.
func finish(t testing.TB, r *report) {
	t.Helper()
	fmt.Println(r.line()) // stdout: shown by go test -v, and on failure
	sort.Strings(r.problems)
	for i, p := range r.problems {
		if i == 20 {
			t.Errorf("... and %d more problems", len(r.problems)-20)
			break
		}
		t.Error(p)
	}
	if r.lost > 0 || r.duplicates > 0 || r.healthyErrors > 0 || r.hostileWrong > 0 || r.hostileMissing > 0 || r.deadMissing > 0 || r.strays > 0 {
		t.Errorf("%s: broken promise (lost %d, duplicates %d, healthy errors %d, hostile wrong %d, hostile unanswered %d, dead letters missing %d, strays %d)",
			r.name, r.lost, r.duplicates, r.healthyErrors, r.hostileWrong, r.hostileMissing, r.deadMissing, r.strays)
	}
}
