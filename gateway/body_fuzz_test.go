package gateway_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/rerank/rerank/gateway"
)

// arrayLengths lists, in order, the length of each array that is the value
// of a member of the JSON object data, as encoding/json reads it.
func arrayLengths(data []byte) ([]int, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out []int
	for dec.More() {
		if _, err := dec.Token(); err != nil { // the key
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		var elems []json.RawMessage
		if json.Unmarshal(v, &elems) == nil && elems != nil {
			out = append(out, len(elems))
		}
	}
	return out, true
}

// FuzzLongestArray: on every valid JSON object, the scan finds an array
// over the limit exactly when encoding/json does, with its length.
func FuzzLongestArray(f *testing.F) {
	for _, s := range []string{
		`{"query":"q","documents":["a","b",{"text":"c,d]"}]}`,
		`{"documents":[],"rank_fields":["x","y"],"texts":[1,2.5e3,true,null,[1,2],{"a":[1,2,3]}]}`,
		`{"a\"[":["\\",",\"]"],"b":{"c":[1,2,3]}}`,
		` { "x" : [ "" , "" ] , "x" : [ ] } `,
		`[1,2,3]`,
	} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, limit uint8) {
		if !json.Valid(data) {
			return
		}
		lens, ok := arrayLengths(data)
		if !ok {
			return // not an object: no array is counted, json refuses the body
		}
		max := int(limit % 8)
		want := 0
		for _, n := range lens {
			if n > max {
				want = n
				break
			}
		}
		if _, got := gateway.LongestArray(data, max); got != want {
			t.Fatalf("LongestArray(%q, %d) = %d, encoding/json reads %v", data, max, got, lens)
		}
	})
}
