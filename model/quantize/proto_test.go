package quantize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rerank/rerank/internal/onnxpb"
	"github.com/rerank/rerank/model/testmodel"
)

// TestHostileElementCounts: dims whose product is negative or overflows,
// or that claim more elements than the tensor's data holds, are malformed:
// no value is read from such a tensor, and nothing panics.
func TestHostileElementCounts(t *testing.T) {
	i64 := func(v int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(v)) }
	for _, tc := range []struct {
		name     string
		dataType int
		raw      []byte
		dims     []int64
	}{
		// 8 × (−2⁶¹+1) wraps to 8: the one int64 raw_data holds "matches".
		{"negative dim, int64", onnxpb.DataTypeInt64, i64(7), []int64{-1<<61 + 1}},
		// 4 × (2⁶²+1) wraps to 4.
		{"wrapping count, float", onnxpb.DataTypeFloat, float32Bytes([]float32{1}), []int64{1<<62 + 1}},
		// 2³² × 2³² wraps to 0 elements.
		{"product wraps to zero", onnxpb.DataTypeFloat, nil, []int64{1 << 32, 1 << 32}},
		// Two negative dims multiply to one element.
		{"negative dims, one element", onnxpb.DataTypeFloat, float32Bytes([]float32{1}), []int64{-1, -1}},
		{"negative dims, one int64", onnxpb.DataTypeInt64, i64(7), []int64{-1, -1}},
		{"more elements than the data", onnxpb.DataTypeFloat, float32Bytes([]float32{1}), []int64{math.MaxInt64}},
		{"overflow past int64", onnxpb.DataTypeInt64, i64(7), []int64{math.MaxInt64, math.MaxInt64, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn, err := parseTensor(encodeTensor("c", tc.dataType, tc.raw, tc.dims...))
			if err != nil {
				t.Fatal(err)
			}
			if v, err := tn.float32s(); !errors.Is(err, ErrMalformed) {
				t.Errorf("float32s = %v, %v; want %v", v, err, ErrMalformed)
			}
			if v := tn.int64s(); v != nil {
				t.Errorf("int64s = %v, want nil", v)
			}
			if v, ok := tn.scalar(); ok {
				t.Errorf("scalar = %v, want none", v)
			}
		})
	}
}

// TestGraphSurvivesHostileShapeConstant: a Reshape's shape constant whose
// dim is −2⁶¹+1 (8 bytes of raw_data "match" its wrapped size) makes Graph
// leave the attention alone, not panic.
func TestGraphSurvivesHostileShapeConstant(t *testing.T) {
	var b bytes.Buffer
	if err := testmodel.WriteONNX(&b, testmodel.Spec{Name: "hostile", Layers: 1, Hidden: 16, Heads: 2, FFN: 16, MaxPositions: 8, TypeVocab: 2, Vocab: 8, Seed: 1, InitStd: 0.3}); err != nil {
		t.Fatal(err)
	}
	_, nodes, _ := graphOps(t, b.Bytes())
	shape := ""
	for _, n := range nodes {
		if n.opType == "Reshape" {
			shape = n.inputs[1]
			break
		}
	}
	if shape == "" {
		t.Fatal("no Reshape in the model")
	}
	// A second initializer of the same name replaces the first.
	hostile := encodeTensor(shape, onnxpb.DataTypeInt64, binary.LittleEndian.AppendUint64(nil, 2), -1<<61+1)
	in := editGraph(t, b.Bytes(), func(n *node) [][]byte { return [][]byte{n.raw} }, nil, hostile)
	for _, keep := range []bool{false, true} {
		opts := DefaultOptions()
		opts.Activations = PerBatch
		opts.KeepAttention = keep
		out, _, err := Graph(in, opts)
		if err != nil {
			continue
		}
		if _, err := fields(out); err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
	}
}

// TestTensorValues: what float32s, int64s and scalar read from a
// well-formed tensor, whichever field holds its data.
func TestTensorValues(t *testing.T) {
	ints := func(packed bool, vs ...int64) []byte {
		b := onnxpb.AppendVarint(nil, onnxpb.TensorDataType, onnxpb.DataTypeInt64)
		b = onnxpb.AppendVarint(b, onnxpb.TensorDims, uint64(len(vs)))
		if !packed {
			for _, v := range vs {
				b = onnxpb.AppendVarint(b, onnxpb.TensorInt64Data, uint64(v))
			}
			return b
		}
		var p []byte
		for _, v := range vs {
			p = protowire.AppendVarint(p, uint64(v))
		}
		return onnxpb.AppendBytes(b, onnxpb.TensorInt64Data, p)
	}
	var raw []byte
	for _, v := range []int64{0, 0, 2, 8} {
		raw = binary.LittleEndian.AppendUint64(raw, uint64(v))
	}
	seventeen := make([]int64, 17)
	for _, tc := range []struct {
		name   string
		in     []byte
		floats []float32
		ints   []int64
		scalar bool
	}{
		{"float raw", encodeTensor("f", onnxpb.DataTypeFloat, float32Bytes([]float32{1, 2, 3, 4, 5, 6}), 2, 3), []float32{1, 2, 3, 4, 5, 6}, nil, false},
		{"float scalar", encodeTensor("f", onnxpb.DataTypeFloat, float32Bytes([]float32{2.5})), []float32{2.5}, nil, true},
		{"float [1, 1]", encodeTensor("f", onnxpb.DataTypeFloat, float32Bytes([]float32{2.5}), 1, 1), []float32{2.5}, nil, true},
		{"empty", encodeTensor("f", onnxpb.DataTypeFloat, nil, 0, 1<<40), []float32{}, nil, false},
		{"int64 raw", encodeTensor("s", onnxpb.DataTypeInt64, raw, 4), nil, []int64{0, 0, 2, 8}, false},
		{"int64_data", ints(false, 0, -1, 4), nil, []int64{0, -1, 4}, false},
		{"int64_data packed", ints(true, 0, -1, 4), nil, []int64{0, -1, 4}, false},
		{"17 int64s", ints(true, seventeen...), nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn, err := parseTensor(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if f, err := tn.float32s(); tc.floats != nil && (err != nil || !slices.Equal(f, tc.floats)) {
				t.Errorf("float32s = %v, %v; want %v", f, err, tc.floats)
			}
			if v := tn.int64s(); !slices.Equal(v, tc.ints) || (v == nil) != (tc.ints == nil) {
				t.Errorf("int64s = %v, want %v", v, tc.ints)
			}
			if v, ok := tn.scalar(); ok != tc.scalar || ok && v != tc.floats[0] {
				t.Errorf("scalar = %v, %v", v, ok)
			}
		})
	}
}

// TestParseTensorBounds: a tensor of more than onnxpb.MaxRank dims is
// malformed, and a long int64_data costs no more than the values int64s
// reads.
func TestParseTensorBounds(t *testing.T) {
	dims := make([]int64, onnxpb.MaxRank+1)
	if _, err := parseTensor(encodeTensor("t", onnxpb.DataTypeFloat, nil, dims...)); !errors.Is(err, ErrMalformed) || !errors.Is(err, onnxpb.ErrLimit) {
		t.Fatalf("err = %v, want %v and %v", err, ErrMalformed, onnxpb.ErrLimit)
	}
	if _, err := parseTensor(encodeTensor("t", onnxpb.DataTypeFloat, nil, dims[1:]...)); err != nil {
		t.Fatal(err)
	}
	long := onnxpb.AppendBytes(nil, onnxpb.TensorInt64Data, bytes.Repeat([]byte{1}, 1<<20))
	allocs := testing.AllocsPerRun(5, func() {
		if tn, err := parseTensor(long); err != nil || tn.nInts != 1<<20 || len(tn.ints) != maxConstInts {
			t.Fatal(tn, err)
		}
	})
	if allocs > 10 {
		t.Fatalf("%v allocations for a long int64_data", allocs)
	}
}

// TestAttentionHeadsDoNotWrap: a head split whose heads × head size wraps
// around to the hidden size (17 × 1085102592571150096 ≡ 16 mod 2⁶⁴), with
// a scale to match, is no attention to fuse.
func TestAttentionHeadsDoNotWrap(t *testing.T) {
	var b bytes.Buffer
	if err := testmodel.WriteONNX(&b, testmodel.Spec{Name: "wrap", Layers: 1, Hidden: 16, Heads: 2, FFN: 16, MaxPositions: 8, TypeVocab: 2, Vocab: 8, Seed: 1, InitStd: 0.3}); err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.Activations = PerBatch
	attentions := func(in []byte) int {
		out, _, err := Graph(in, opts)
		if err != nil {
			t.Fatal(err)
		}
		ops, _, _ := graphOps(t, out)
		return ops["com.microsoft:QAttention"]
	}
	if n := attentions(b.Bytes()); n != 1 {
		t.Fatalf("%d attentions fused in the model as it is, want 1", n)
	}
	const heads, size = 17, 1085102592571150096
	_, nodes, _ := graphOps(t, b.Bytes())
	var split, scale string
	for _, n := range nodes {
		switch {
		case n.opType == "Reshape" && split == "":
			split = n.inputs[1]
		case n.opType == "Div" && scale == "":
			scale = n.inputs[1]
		}
	}
	var shape []byte
	for _, v := range []int64{0, 0, heads, size} {
		shape = binary.LittleEndian.AppendUint64(shape, uint64(v))
	}
	in := editGraph(t, b.Bytes(), func(n *node) [][]byte { return [][]byte{n.raw} }, nil,
		encodeTensor(split, onnxpb.DataTypeInt64, shape, 4),
		encodeTensor(scale, onnxpb.DataTypeFloat, float32Bytes([]float32{float32(math.Sqrt(size))})))
	if n := attentions(in); n != 0 {
		t.Fatalf("%d attentions of %d heads of %d fused", n, heads, size)
	}
}
