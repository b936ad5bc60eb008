package schemas_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/schemas"
)

func TestCheckReplyTo(t *testing.T) {
	allow := []string{"app.answers", "_INBOX"}
	tests := []struct {
		subject string
		allow   []string
		ok      bool
	}{
		{"app.answers.one", nil, true},
		{"_INBOX.abc.def", nil, true},
		{"rerank.results.job-1", nil, true},
		{"rerank.results.search.job-1", nil, true}, // a client's namespace, ending in the job's id
		{"$JS.API.STREAM.PURGE.RERANK_JOBS", nil, false},
		{"$JS.API.STREAM.DELETE.RERANK_JOBS", nil, false},
		{"$JS.ACK.RERANK_JOBS.rerank-m.1.2.3.4.5", nil, false},
		{"$KV.config.key", nil, false},
		{"$SYS.REQ.SERVER.PING", nil, false},
		{"$G", nil, false},
		{"a.*", nil, false},
		{"a.>", nil, false},
		{"a*b.c", nil, false},
		{"a>b", nil, false},
		{"a..b", nil, false},
		{".a", nil, false},
		{"a b", nil, false},
		{"a\tb", nil, false},
		{"a\x00b", nil, false},
		{"rerank.jobs.demo", nil, false},
		{"rerank.jobs", nil, false},
		{"rerank.dead.demo", nil, false},
		{"rerank.results.job-2", nil, false},            // another job's stored result
		{"rerank.results.search.job-2", nil, false},     // another client's job
		{"rerank.tenant.ads.results.job-1", nil, false}, // a tenant's namespace: only the worker addresses it
		{"rerank.tenant.ads.jobs.demo", nil, false},
		{"rerank.tenant", nil, false},
		{strings.Repeat("a", 300), nil, false},
		{"app.answers", allow, true},
		{"app.answers.x.y", allow, true},
		{"_INBOX.z", allow, true},
		{"app.answersx", allow, false},
		{"other.subject", allow, false},
		{"rerank.results.job-1", allow, false},   // the allow-list binds every subject
		{"$JS.API.INFO", []string{"$JS"}, false}, // '$' is refused whatever the operator allows
	}
	for _, tt := range tests {
		err := schemas.CheckReplyTo(tt.subject, "job-1", tt.allow)
		if (err == nil) != tt.ok {
			t.Errorf("CheckReplyTo(%q, allow %v) = %v, want ok=%v", tt.subject, tt.allow, err, tt.ok)
		}
		if err != nil && !errors.Is(err, schemas.ErrInvalidReplyTo) {
			t.Errorf("CheckReplyTo(%q): %v is not invalid_reply_to", tt.subject, err)
		}
	}
}

// emptyCandidates is a job of n empty candidate maps: about 1 byte each in
// msgpack, 3 in JSON, and 48 bytes each once decoded.
func emptyCandidates(n int, f schemas.Format) []byte {
	if f == schemas.JSON {
		return []byte(`{"id":"x","query":"q","candidates":[` + strings.Repeat("{},", n-1) + `{}]}`)
	}
	var b bytes.Buffer
	b.Write([]byte{0x83, 0xa2, 'i', 'd', 0xa1, 'x', 0xa5, 'q', 'u', 'e', 'r', 'y', 0xa1, 'q', 0xaa})
	b.WriteString("candidates")
	b.Write([]byte{0xdd, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	b.Write(bytes.Repeat([]byte{0x80}, n))
	return b.Bytes()
}

// A hostile job costs little beyond its own bytes: the candidate count is
// checked before the candidates are allocated, in msgpack and in JSON.
func TestHostileJobIsRefusedBeforeAllocation(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		f    schemas.Format
		want error
	}{
		{"msgpack 8 MiB of empty candidates", emptyCandidates(8<<20-64, schemas.Msgpack), schemas.Msgpack, schemas.ErrTooManyCandidates},
		{"json 8 MiB of empty candidates", emptyCandidates((8<<20-64)/3, schemas.JSON), schemas.JSON, schemas.ErrTooManyCandidates},
		{"msgpack candidates split over repeated keys", append(append([]byte{0x82, 0xaa}, "candidates"...),
			append(append([]byte{0xdc, 0x0c, 0x00}, bytes.Repeat([]byte{0x80}, 3072)...),
				append(append([]byte{0xaa}, "candidates"...), append([]byte{0xdc, 0x0c, 0x00}, bytes.Repeat([]byte{0x80}, 3072)...)...)...)...),
			schemas.Msgpack, schemas.ErrTooManyCandidates},
		{"json candidates under a case-folded key", []byte(`{"id":"x","CANDIDATES":[` + strings.Repeat("{},", 5000) + `{}]}`), schemas.JSON, schemas.ErrTooManyCandidates},
		{"json meta of 100k entries", []byte(`{"id":"x","meta":{` + strings.TrimSuffix(strings.Repeat(`"k":"v",`, 100000), ",") + `}}`), schemas.JSON, schemas.ErrMetaTooLarge},
		{"msgpack top-level array", []byte{0x92, 0xa1, 'x', 0xa1, 'q'}, schemas.Msgpack, schemas.ErrBadEncoding},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := testenv.Allocated(func() { _, err = schemas.DecodeJob(tc.data, tc.f, schemas.Limits{}) })
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			// The decoders' own buffers hold at most a copy of the payload.
			if limit := uint64(len(tc.data)) + 32<<20; n > limit {
				t.Errorf("decoding %d bytes allocated %d MiB", len(tc.data), n>>20)
			}
		})
	}
}

func TestCheckResult(t *testing.T) {
	j := validJob()
	ok := &schemas.Result{ID: j.ID, Results: []schemas.Ranked{{Index: 1, ID: "d2"}, {Index: 0, ID: "d1"}}}
	if err := schemas.CheckResult(j, ok); err != nil {
		t.Fatalf("a real result: %v", err)
	}
	for name, r := range map[string]*schemas.Result{
		"another job":     {ID: "job-2"},
		"index too large": {ID: j.ID, Results: []schemas.Ranked{{Index: 2, ID: "d3"}}},
		"negative index":  {ID: j.ID, Results: []schemas.Ranked{{Index: -1, ID: "d1"}}},
		"id mismatch":     {ID: j.ID, Results: []schemas.Ranked{{Index: 0, ID: "d2"}}},
		"repeated index":  {ID: j.ID, Results: []schemas.Ranked{{Index: 0, ID: "d1"}, {Index: 0, ID: "d1"}}},
	} {
		if err := schemas.CheckResult(j, r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
