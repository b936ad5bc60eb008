package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/rerank/rerank/schemas"
	"github.com/vmihailenco/msgpack/v5"
)

func f64(v float64) *float64 { return &v }

func validJob() *schemas.Job {
	return &schemas.Job{
		ID:    "job-1",
		Query: "what is bm25",
		Candidates: []schemas.Candidate{
			{ID: "d1", Text: "BM25 is a ranking function.", BM25: f64(12.5)},
			{ID: "d2", Text: "Paris is in France.", BM25: f64(3)},
		},
	}
}

func TestValidateCodes(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(j *schemas.Job)
		subject   string
		limits    schemas.Limits
		want      error
		candidate *schemas.CandidateRef
	}{
		{name: "valid", mutate: func(j *schemas.Job) {}},
		{name: "valid v1 with matching model", mutate: func(j *schemas.Job) { j.V = 1; j.Model = "m" }, subject: "m"},
		{name: "newer version", mutate: func(j *schemas.Job) { j.V = 2 }, want: schemas.ErrUnsupportedVersion},
		{name: "negative version", mutate: func(j *schemas.Job) { j.V = -1 }, want: schemas.ErrUnsupportedVersion},
		{name: "missing id", mutate: func(j *schemas.Job) { j.ID = "" }, want: schemas.ErrMissingID},
		{name: "id too long", mutate: func(j *schemas.Job) { j.ID = strings.Repeat("x", 257) }, want: schemas.ErrInvalidID},
		{name: "id 256 bytes", mutate: func(j *schemas.Job) { j.ID = strings.Repeat("x", 256) }},
		{name: "id with space", mutate: func(j *schemas.Job) { j.ID = "a b" }, want: schemas.ErrInvalidID},
		{name: "id with wildcard", mutate: func(j *schemas.Job) { j.ID = "a>" }, want: schemas.ErrInvalidID},
		{name: "model mismatch", mutate: func(j *schemas.Job) { j.Model = "other" }, subject: "m", want: schemas.ErrModelMismatch},
		{name: "valid reply_to", mutate: func(j *schemas.Job) { j.ReplyTo = "_INBOX.abc.def" }},
		{name: "wildcard reply_to", mutate: func(j *schemas.Job) { j.ReplyTo = "a.*" }, want: schemas.ErrInvalidReplyTo},
		{name: "empty token reply_to", mutate: func(j *schemas.Job) { j.ReplyTo = "a..b" }, want: schemas.ErrInvalidReplyTo},
		{name: "reply_to into jobs", mutate: func(j *schemas.Job) { j.ReplyTo = "rerank.jobs.demo" }, want: schemas.ErrInvalidReplyTo},
		{name: "missing query", mutate: func(j *schemas.Job) { j.Query = "" }, want: schemas.ErrMissingQuery},
		{name: "blank query", mutate: func(j *schemas.Job) { j.Query = " \t\n" }, want: schemas.ErrMissingQuery},
		{name: "query too long", mutate: func(j *schemas.Job) { j.Query = strings.Repeat("q", 1025) }, want: schemas.ErrTextTooLong},
		{name: "invalid utf8 query", mutate: func(j *schemas.Job) { j.Query = "a\xffb" }, want: schemas.ErrBadEncoding},
		{name: "no candidates", mutate: func(j *schemas.Job) { j.Candidates = nil }, want: schemas.ErrNoCandidates},
		{name: "too many candidates", mutate: func(j *schemas.Job) {
			j.Candidates = make([]schemas.Candidate, 5)
			for i := range j.Candidates {
				j.Candidates[i] = schemas.Candidate{ID: string(rune('a' + i)), Text: "t"}
			}
		}, limits: schemas.Limits{MaxCandidates: 4}, want: schemas.ErrTooManyCandidates},
		{name: "negative top_n", mutate: func(j *schemas.Job) { j.TopN = -1 }, want: schemas.ErrBadEncoding},
		{name: "duplicate candidate id", mutate: func(j *schemas.Job) { j.Candidates[1].ID = "d1" },
			want: schemas.ErrDuplicateCandidateID, candidate: &schemas.CandidateRef{Index: 1, ID: "d1"}},
		{name: "empty candidate id", mutate: func(j *schemas.Job) { j.Candidates[1].ID = "" },
			want: schemas.ErrEmptyCandidateID, candidate: &schemas.CandidateRef{Index: 1}},
		{name: "text too long", mutate: func(j *schemas.Job) { j.Candidates[0].Text = strings.Repeat("x", 65537) },
			want: schemas.ErrTextTooLong, candidate: &schemas.CandidateRef{Index: 0, ID: "d1"}},
		{name: "text at limit", mutate: func(j *schemas.Job) { j.Candidates[0].Text = strings.Repeat("x", 65536) }},
		{name: "invalid utf8 text", mutate: func(j *schemas.Job) { j.Candidates[1].Text = "\xc3\x28" },
			want: schemas.ErrBadEncoding, candidate: &schemas.CandidateRef{Index: 1, ID: "d2"}},
		{name: "NaN bm25", mutate: func(j *schemas.Job) { j.Candidates[1].BM25 = f64(math.NaN()) },
			want: schemas.ErrNonFiniteScore, candidate: &schemas.CandidateRef{Index: 1, ID: "d2"}},
		{name: "Inf dpr", mutate: func(j *schemas.Job) { j.Candidates[0].DPR = f64(math.Inf(-1)) },
			want: schemas.ErrNonFiniteScore, candidate: &schemas.CandidateRef{Index: 0, ID: "d1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := validJob()
			tt.mutate(j)
			err := schemas.Validate(j, tt.subject, tt.limits)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: unexpected error %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Validate: got %v, want code %s", err, tt.want.(*schemas.Error).Code)
			}
			var ce *schemas.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Validate: %v is not a *schemas.Error", err)
			}
			if ce.Message == "" {
				t.Errorf("error %s has no message", ce.Code)
			}
			if tt.candidate != nil {
				if ce.Candidate == nil || *ce.Candidate != *tt.candidate {
					t.Errorf("candidate = %+v, want %+v", ce.Candidate, tt.candidate)
				}
			}
		})
	}
}

func TestErrorsIsDistinguishesCodes(t *testing.T) {
	err := schemas.Errorf(schemas.CodeMissingQuery, "x")
	if errors.Is(err, schemas.ErrMissingID) {
		t.Fatal("missing_query matched missing_id")
	}
	wrapped := errors.Join(errors.New("other"), err)
	if !errors.Is(wrapped, schemas.ErrMissingQuery) {
		t.Fatal("wrapped error lost its code")
	}
	if schemas.AsError(wrapped).Code != schemas.CodeMissingQuery {
		t.Fatal("AsError lost the code")
	}
}

func TestParseContentType(t *testing.T) {
	tests := []struct {
		in   string
		want schemas.Format
		err  bool
	}{
		{"", schemas.Msgpack, false},
		{"application/msgpack", schemas.Msgpack, false},
		{"application/x-msgpack", schemas.Msgpack, false},
		{"application/json", schemas.JSON, false},
		{"application/json; charset=utf-8", schemas.JSON, false},
		{"text/plain", 0, true},
		{";;;", 0, true},
	}
	for _, tt := range tests {
		got, err := schemas.ParseContentType(tt.in)
		if tt.err {
			if !errors.Is(err, schemas.ErrBadEncoding) {
				t.Errorf("ParseContentType(%q): err = %v, want bad_encoding", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseContentType(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestRoundTripBothFormats(t *testing.T) {
	j := validJob()
	j.Meta = map[string]string{"tenant": "a"}
	j.TopN = 1
	j.ReturnDocuments = true
	for _, f := range []schemas.Format{schemas.Msgpack, schemas.JSON} {
		b, err := schemas.EncodeJob(j, f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := schemas.DecodeJob(b, f, schemas.Limits{})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if got.ID != j.ID || got.Query != j.Query || len(got.Candidates) != 2 || *got.Candidates[0].BM25 != 12.5 ||
			got.Candidates[0].DPR != nil || got.Meta["tenant"] != "a" || got.TopN != 1 || !got.ReturnDocuments {
			t.Fatalf("%s: round trip mismatch: %+v", f, got)
		}
	}
}

// Field names are the same snake_case in both encodings.
func TestFieldNamesMatchAcrossFormats(t *testing.T) {
	doc := "text"
	r := &schemas.Result{V: 1, ID: "j", Model: "m", Results: []schemas.Ranked{{Index: 2, ID: "c", RelevanceScore: 0.5, Document: &doc}},
		Error: &schemas.Error{Code: schemas.CodeMissingScore, Message: "m", Candidate: &schemas.CandidateRef{Index: 1, ID: "x"}},
		Meta:  map[string]string{"k": "v"}, Attempt: 2, Worker: "w", Timing: schemas.Timing{TotalMS: 1}}
	jb, _ := schemas.EncodeResult(r, schemas.JSON)
	mb, _ := schemas.EncodeResult(r, schemas.Msgpack)
	var fromJSON, fromMsgpack map[string]any
	if err := json.Unmarshal(jb, &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := msgpack.Unmarshal(mb, &fromMsgpack); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]any) string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		return strings.Join(sortStrings(ks), ",")
	}
	if keys(fromJSON) != keys(fromMsgpack) {
		t.Fatalf("JSON keys %s != msgpack keys %s", keys(fromJSON), keys(fromMsgpack))
	}
	for _, k := range []string{"v", "id", "model", "results", "error", "meta", "attempt", "worker", "timing"} {
		if _, ok := fromJSON[k]; !ok {
			t.Errorf("result lacks field %q", k)
		}
	}
	res := fromJSON["results"].([]any)[0].(map[string]any)
	for _, k := range []string{"index", "id", "relevance_score", "document"} {
		if _, ok := res[k]; !ok {
			t.Errorf("ranked entry lacks field %q", k)
		}
	}
	back, err := schemas.DecodeResult(mb, schemas.Msgpack)
	if err != nil || back.Results[0].RelevanceScore != 0.5 || back.Error.Candidate.ID != "x" {
		t.Fatalf("DecodeResult: %+v, %v", back, err)
	}
}

func TestDecodeIgnoresUnknownFieldsAndAcceptsIntScores(t *testing.T) {
	js := `{"id":"j","query":"q","future_field":{"x":[1,2]},"candidates":[{"id":"a","text":"t","bm25":12,"extra":true}]}`
	j, err := schemas.DecodeJob([]byte(js), schemas.JSON, schemas.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if *j.Candidates[0].BM25 != 12 {
		t.Fatalf("bm25 = %v", *j.Candidates[0].BM25)
	}
	mp, _ := msgpack.Marshal(map[string]any{"id": "j", "query": "q", "zzz": []any{1, "x"},
		"candidates": []any{map[string]any{"id": "a", "text": "t", "bm25": int8(7), "dpr": float32(0.5)}}})
	j, err = schemas.DecodeJob(mp, schemas.Msgpack, schemas.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if *j.Candidates[0].BM25 != 7 || *j.Candidates[0].DPR != 0.5 {
		t.Fatalf("scores = %v %v", *j.Candidates[0].BM25, *j.Candidates[0].DPR)
	}
}

func TestDecodeRejectsHostileInput(t *testing.T) {
	good, _ := schemas.EncodeJob(validJob(), schemas.Msgpack)
	deep := bytes.Repeat([]byte{0x91}, 100000)
	deep = append(deep, 0xc0)
	deepJSON := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	tests := []struct {
		name string
		data []byte
		f    schemas.Format
		want error
	}{
		{"random bytes", []byte{0xc1, 0x00, 0xff}, schemas.Msgpack, schemas.ErrBadEncoding},
		{"truncated msgpack", good[:len(good)/2], schemas.Msgpack, schemas.ErrBadEncoding},
		{"trailing bytes", append(append([]byte{}, good...), 0x01), schemas.Msgpack, schemas.ErrBadEncoding},
		{"deep msgpack", deep, schemas.Msgpack, schemas.ErrBadEncoding},
		{"huge array promise", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, schemas.Msgpack, schemas.ErrBadEncoding},
		{"wrong type", mustMsgpack(t, map[string]any{"id": 5, "query": []int{1}}), schemas.Msgpack, schemas.ErrBadEncoding},
		{"empty", nil, schemas.Msgpack, schemas.ErrBadEncoding},
		{"bad json", []byte(`{"id":`), schemas.JSON, schemas.ErrBadEncoding},
		{"json trailing", []byte(`{"id":"a"} {}`), schemas.JSON, schemas.ErrBadEncoding},
		{"deep json", []byte(deepJSON), schemas.JSON, schemas.ErrBadEncoding},
		{"json wrong type", []byte(`{"id":"a","candidates":{"x":1}}`), schemas.JSON, schemas.ErrBadEncoding},
		{"too large", make([]byte, 100), schemas.Msgpack, schemas.ErrPayloadTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := schemas.Limits{}
			if tt.want == schemas.ErrPayloadTooLarge {
				limits.MaxPayloadBytes = 99
			}
			_, err := schemas.DecodeJob(tt.data, tt.f, limits)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func mustMsgpack(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sortStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for k := i; k > 0 && s[k] < s[k-1]; k-- {
			s[k], s[k-1] = s[k-1], s[k]
		}
	}
	return s
}
