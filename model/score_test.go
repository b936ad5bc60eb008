package model_test

import (
	"slices"
	"testing"

	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/wordpiece"
)

// Pack lays the chosen encodings out row by row in the given order, padded
// to the longest with the pad id, mask 0 and type 0; a reused batch keeps
// nothing of its previous contents. No ONNX Runtime is involved.
func TestBatchPack(t *testing.T) {
	encs := []wordpiece.Encoding{
		{IDs: []int64{101, 7, 102}, TypeIDs: []int64{0, 0, 0}},
		{IDs: []int64{101, 8, 9, 102, 10, 102}, TypeIDs: []int64{0, 0, 0, 0, 1, 1}},
		{IDs: []int64{101, 11, 102, 12, 102}, TypeIDs: []int64{0, 0, 0, 1, 1}},
	}
	var b model.Batch
	for _, tc := range []struct {
		idx              []int
		rows, seq, real  int
		ids, mask, types []int64
	}{
		{[]int{2, 0}, 2, 5, 8,
			[]int64{101, 11, 102, 12, 102, 101, 7, 102, 0, 0},
			[]int64{1, 1, 1, 1, 1, 1, 1, 1, 0, 0},
			[]int64{0, 0, 0, 1, 1, 0, 0, 0, 0, 0}},
		{[]int{1}, 1, 6, 6, // longer: grows
			[]int64{101, 8, 9, 102, 10, 102}, []int64{1, 1, 1, 1, 1, 1}, []int64{0, 0, 0, 0, 1, 1}},
		{[]int{0, 2}, 2, 5, 8, // reused: the previous contents are gone
			[]int64{101, 7, 102, 0, 0, 101, 11, 102, 12, 102},
			[]int64{1, 1, 1, 0, 0, 1, 1, 1, 1, 1},
			[]int64{0, 0, 0, 0, 0, 0, 0, 0, 1, 1}},
	} {
		real := b.Pack(encs, tc.idx, 0)
		if real != tc.real || b.Rows != tc.rows || b.Seq != tc.seq || !slices.Equal(b.IDs, tc.ids) ||
			!slices.Equal(b.Mask, tc.mask) || !slices.Equal(b.Types, tc.types) {
			t.Errorf("Pack(%v): real %d, %d×%d\nids   %v\nmask  %v\ntypes %v\nwant real %d, %d×%d\nids   %v\nmask  %v\ntypes %v",
				tc.idx, real, b.Rows, b.Seq, b.IDs, b.Mask, b.Types, tc.real, tc.rows, tc.seq, tc.ids, tc.mask, tc.types)
		}
	}
	for name, want := range map[string][]int64{"input_ids": b.IDs, "attention_mask": b.Mask, "token_type_ids": b.Types} {
		if got := b.Input(name); &got[0] != &want[0] {
			t.Errorf("Input(%q) is not its tensor's data", name)
		}
	}
}
