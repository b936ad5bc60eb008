package schemas_test

import (
	"errors"
	"testing"

	"github.com/rerank/rerank/schemas"
)

// FuzzDecodeJob feeds arbitrary bytes to both decoders: nothing may panic,
// every failure carries a code, and a valid job survives re-encoding.
func FuzzDecodeJob(f *testing.F) {
	j := validJob()
	j.Meta = map[string]string{"a": "b"}
	for _, format := range []schemas.Format{schemas.Msgpack, schemas.JSON} {
		good, _ := schemas.EncodeJob(j, format)
		isJSON := format == schemas.JSON
		f.Add(good, isJSON)
		f.Add(good[:len(good)/2], isJSON)
		f.Add([]byte{}, isJSON)
	}
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff}, false)
	f.Add([]byte(`{"id":"x","query":"q","candidates":[{"id":"a","text":"t","bm25":1e308}]}`), true)
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		format := schemas.Msgpack
		if isJSON {
			format = schemas.JSON
		}
		job, err := schemas.DecodeJob(data, format, schemas.Limits{})
		if err != nil {
			if schemas.AsError(err) == nil {
				t.Fatalf("decode error without a code: %v", err)
			}
			return
		}
		if err := schemas.Validate(job, "", schemas.Limits{}); err != nil {
			var ce *schemas.Error
			if !errors.As(err, &ce) || ce.Code == "" {
				t.Fatalf("validation error without a code: %v", err)
			}
			return
		}
		// A valid job re-encodes and decodes to the same shape.
		b, err := schemas.EncodeJob(job, format)
		if err != nil {
			t.Fatalf("re-encoding a valid job: %v", err)
		}
		again, err := schemas.DecodeJob(b, format, schemas.Limits{})
		if err != nil || again.ID != job.ID || len(again.Candidates) != len(job.Candidates) {
			t.Fatalf("re-decoding a valid job: %v", err)
		}
	})
}
