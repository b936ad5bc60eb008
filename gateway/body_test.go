package gateway_test

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/rerank/rerank/gateway"
	"github.com/rerank/rerank/schemas"
)

// hostileArray is a body just under the default body limit (twice the 8 MiB
// job payload limit) whose field is an array of millions of tiny elements.
func hostileArray(prefix, elem, suffix string) string {
	n := (2*schemas.DefaultMaxPayloadBytes - len(prefix) - len(suffix) - 64) / (len(elem) + 1)
	var b strings.Builder
	b.Grow(2 * schemas.DefaultMaxPayloadBytes)
	b.WriteString(prefix)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(elem)
	}
	b.WriteString(suffix)
	return b.String()
}

// TestHostileBodyIsRefusedBeforeDecoding: a body of millions of empty
// documents (or rank_fields, TEI texts, native candidates) is refused as
// too_many_candidates while it is scanned, before anything is allocated per
// element: serving it allocates little more than the body itself.
func TestHostileBodyIsRefusedBeforeDecoding(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
	}{
		{"cohere documents", "/v1/rerank", hostileArray(`{"query":"q","documents":[`, `""`, `]}`)},
		{"cohere document objects", "/v2/rerank", hostileArray(`{"query":"q","documents":[`, `{}`, `]}`)},
		{"rank_fields", "/v1/rerank", hostileArray(`{"query":"q","documents":["a"],"rank_fields":[`, `""`, `]}`)},
		{"tei texts", "/rerank", hostileArray(`{"query":"q","texts":[`, `""`, `]}`)},
		{"native candidates", "/v1/jobs", hostileArray(`{"query":"q","candidates":[`, `{}`, `]}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := gateway.New(gateway.Config{}, &fakeQueue{models: []string{"m"}}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			s.Handler().ServeHTTP(rec, req)
			runtime.ReadMemStats(&after)
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), string(schemas.CodeTooManyCandidates)) {
				t.Fatalf("%d %.300s, want 400 too_many_candidates", rec.Code, rec.Body.String())
			}
			if alloc, budget := after.TotalAlloc-before.TotalAlloc, uint64(len(tc.body))+32<<20; alloc > budget {
				t.Fatalf("serving a %d MiB body allocated %d MiB, budget %d MiB", len(tc.body)>>20, alloc>>20, budget>>20)
			} else {
				t.Logf("allocated %d MiB for a %d MiB body", alloc>>20, len(tc.body)>>20)
			}
		})
	}
}

// TestOversizedJobIsPayloadTooLarge: a body under the body limit (twice the
// job payload limit) whose texts alone are over the job payload limit is
// refused with 413 before anything is published: the job could not be.
func TestOversizedJobIsPayloadTooLarge(t *testing.T) {
	const limit = 1 << 20
	docs := make([]string, 24) // 24 × 60 KiB: 1.4 MiB of texts, each under the 64 KiB text limit
	for i := range docs {
		docs[i] = `"` + strings.Repeat("x", 60<<10) + `"`
	}
	q := &fakeQueue{models: []string{"m"}}
	ts, _ := newServer(t, q, gateway.Config{Limits: schemas.Limits{MaxPayloadBytes: limit}})
	for path, body := range map[string]string{
		"/v1/rerank": `{"query":"q","documents":[` + strings.Join(docs, ",") + `]}`,
		"/rerank":    `{"query":"q","texts":[` + strings.Join(docs, ",") + `]}`,
	} {
		code, _, resp := post(t, ts.URL+path, body)
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(resp, string(schemas.CodePayloadTooLarge)) {
			t.Fatalf("%s: %d %.300s, want 413 payload_too_large", path, code, resp)
		}
	}
	if len(q.jobs) != 0 {
		t.Fatalf("%d jobs published", len(q.jobs))
	}
}
