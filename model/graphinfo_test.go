package model

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rerank/rerank/internal/onnxpb"
	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/model/testmodel"
)

// onnxModel is a ModelProto (IR version 8) holding graph.
func onnxModel(graph []byte) []byte {
	m := onnxpb.AppendVarint(nil, onnxpb.ModelIRVersion, 8)
	return onnxpb.AppendBytes(m, onnxpb.ModelGraph, graph)
}

// writeModel writes data to a file of a test's own folder.
func writeModel(t testing.TB, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// repeatTo repeats b up to about n bytes.
func repeatTo(b []byte, n int) []byte { return bytes.Repeat(b, n/len(b)) }

// hostileGraphs are graphs built to make a reader of N bytes allocate
// far more than N: long lists of tiny fields.
func hostileGraphs() map[string][]byte {
	const n = 1 << 20
	// One initializer of ~N packed dims, each one byte.
	packed := onnxpb.AppendString(nil, onnxpb.TensorName, "position_embeddings.weight")
	packed = onnxpb.AppendBytes(packed, onnxpb.TensorDims, repeatTo([]byte{1}, n))
	// One initializer of ~N/2 unpacked dims.
	unpacked := repeatTo(onnxpb.AppendVarint(nil, onnxpb.TensorDims, 1), n)
	name := func(k int) string { return string([]byte{byte(k), byte(k >> 8), byte(k >> 16)}) }
	// ~N/7 initializers of 7 bytes, each with a name of its own.
	var names []byte
	for i := range n / 7 {
		names = onnxpb.AppendBytes(names, onnxpb.GraphInitializer, onnxpb.AppendString(nil, onnxpb.TensorName, name(i)))
	}
	// ~N/19 nodes of 19 bytes, each reading and writing values of their
	// own: within Fields' limit of a record per 16 bytes, each one to keep
	// in the maps that match nodes.
	var nodes []byte
	for i := range n / 19 {
		nodes = onnxpb.AppendBytes(nodes, onnxpb.GraphNode, onnxpb.EncodeNode("", "", "Add", []string{name(2 * i)}, []string{name(2*i + 1)}))
	}
	// One node of ~N/6 attributes, each of its own name.
	var attrs []byte
	for i := range n / 6 {
		attrs = onnxpb.AppendBytes(attrs, onnxpb.NodeAttribute, onnxpb.AppendString(nil, onnxpb.AttrName, string([]byte{byte(i), byte(i >> 8)})))
	}
	// Inputs and outputs of 64 KiB (the largest read) with ~16K dims each.
	shape := repeatTo(onnxpb.AppendBytes(nil, onnxpb.ShapeDim, onnxpb.AppendVarint(nil, onnxpb.DimValue, 1)), 1<<16-64)
	tt := onnxpb.AppendBytes(nil, onnxpb.TensorShape, shape)
	vi := onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.ValueInfoName, "x"), onnxpb.ValueInfoType, onnxpb.AppendBytes(nil, onnxpb.TypeTensorType, tt))
	return map[string][]byte{
		"packed dims":       onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, packed),
		"unpacked dims":     onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, unpacked),
		"initializer names": names,
		"empty inputs":      repeatTo(onnxpb.AppendBytes(nil, onnxpb.GraphInput, nil), n),
		"empty outputs":     repeatTo(onnxpb.AppendBytes(nil, onnxpb.GraphOutput, nil), n),
		"input dims":        repeatTo(onnxpb.AppendBytes(nil, onnxpb.GraphInput, vi), n),
		"small nodes":       nodes,
		"attributes":        onnxpb.AppendBytes(nil, onnxpb.GraphNode, attrs),
		"wide node":         onnxpb.AppendBytes(nil, onnxpb.GraphNode, repeatTo(onnxpb.AppendString(nil, onnxpb.NodeInput, ""), n)),
		"empty nodes":       repeatTo(onnxpb.AppendBytes(nil, onnxpb.GraphNode, nil), n),
		"op types":          repeatTo(onnxpb.AppendBytes(nil, onnxpb.GraphNode, onnxpb.AppendString(nil, onnxpb.NodeOpType, "Add")), n),
	}
}

// TestReadGraphInfoAllocationIsBounded: reading the graph info of a
// crafted file of N bytes allocates at most 4 bytes per byte of the file
// (plus the reader's buffer), whatever it answers.
func TestReadGraphInfoAllocationIsBounded(t *testing.T) {
	for name, graph := range hostileGraphs() {
		t.Run(name, func(t *testing.T) {
			data := onnxModel(graph)
			path := writeModel(t, data)
			var err error
			got := testenv.Allocated(func() { _, err = readGraphInfo(path) })
			if err != nil && !errors.Is(err, onnxpb.ErrLimit) {
				t.Errorf("err = %v, want nil or %v", err, onnxpb.ErrLimit)
			}
			t.Logf("%d bytes allocated for %d (err %v)", got, len(data), err)
			if limit := uint64(4*len(data) + 256<<10); got > limit {
				t.Fatalf("reading %d bytes allocated %d bytes (err %v), want at most %d", len(data), got, err, limit)
			}
		})
	}
}

// TestReadGraphInfoBoundsRank: an initializer, input or output of more
// dimensions than onnxpb.MaxRank is an error.
func TestReadGraphInfoBoundsRank(t *testing.T) {
	const rank = onnxpb.MaxRank + 1
	packed := onnxpb.AppendString(nil, onnxpb.TensorName, "w")
	packed = onnxpb.AppendBytes(packed, onnxpb.TensorDims, bytes.Repeat([]byte{1}, rank))
	dims := make([]int64, rank)
	for name, graph := range map[string][]byte{
		"initializer": onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, packed),
		"unpacked":    onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, initializer("w", nil, dims...)),
		"input":       onnxpb.AppendBytes(nil, onnxpb.GraphInput, valueInfo("x", onnxpb.DataTypeFloat, dims...)),
		"output":      onnxpb.AppendBytes(nil, onnxpb.GraphOutput, valueInfo("y", onnxpb.DataTypeFloat, dims...)),
	} {
		t.Run(name, func(t *testing.T) {
			info, err := readGraphInfo(writeModel(t, onnxModel(graph)))
			if !errors.Is(err, onnxpb.ErrLimit) {
				t.Fatalf("readGraphInfo = %+v, %v; want %v", info, err, onnxpb.ErrLimit)
			}
		})
	}
}

// valueInfo encodes a ValueInfoProto of a tensor.
func valueInfo(name string, elem uint64, dims ...int64) []byte {
	var shape []byte
	for _, d := range dims {
		dim := onnxpb.AppendString(nil, onnxpb.DimParam, "n")
		if d >= 0 {
			dim = onnxpb.AppendVarint(nil, onnxpb.DimValue, uint64(d))
		}
		shape = onnxpb.AppendBytes(shape, onnxpb.ShapeDim, dim)
	}
	tt := onnxpb.AppendVarint(nil, onnxpb.TensorElemType, elem)
	tt = onnxpb.AppendBytes(tt, onnxpb.TensorShape, shape)
	return onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.ValueInfoName, name), onnxpb.ValueInfoType, onnxpb.AppendBytes(nil, onnxpb.TypeTensorType, tt))
}

// initializer encodes a TensorProto of raw data.
func initializer(name string, raw []byte, dims ...int64) []byte {
	var b []byte
	for _, d := range dims {
		b = onnxpb.AppendVarint(b, onnxpb.TensorDims, uint64(d))
	}
	b = onnxpb.AppendVarint(b, onnxpb.TensorDataType, onnxpb.DataTypeFloat)
	b = onnxpb.AppendString(b, onnxpb.TensorName, name)
	return onnxpb.AppendBytes(b, onnxpb.TensorRawData, raw)
}

// TestGraphInfoFrom: what graphInfoFrom reads, and what it refuses.
func TestGraphInfoFrom(t *testing.T) {
	ids, mask := valueInfo("input_ids", onnxpb.DataTypeInt64, -1, -1), valueInfo("attention_mask", onnxpb.DataTypeInt64, -1, -1)
	logits := valueInfo("logits", onnxpb.DataTypeFloat, -1, 1)
	pos := initializer("bert.embeddings.position_embeddings.weight", make([]byte, 4*512*8), 512, 8)
	w := initializer("w", make([]byte, 16), 4)
	node := onnxpb.AppendBytes(nil, onnxpb.GraphNode, onnxpb.EncodeNode("com.microsoft", "q", "DynamicQuantizeMatMul", []string{"x", "w"}, []string{"y"}))
	graph := func(parts ...[]byte) []byte { return onnxModel(bytes.Join(parts, nil)) }
	in := func(v []byte) []byte { return onnxpb.AppendBytes(nil, onnxpb.GraphInput, v) }
	out := func(v []byte) []byte { return onnxpb.AppendBytes(nil, onnxpb.GraphOutput, v) }
	init := func(v []byte) []byte { return onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, v) }
	long := onnxpb.AppendVarint(nil, onnxpb.ModelIRVersion, 8)
	long = protowire.AppendTag(long, onnxpb.ModelGraph, protowire.BytesType)
	long = protowire.AppendVarint(long, math.MaxUint64-3) // a length that wraps the offset
	long = append(long, init(w)...)
	var manyInputs [][]byte
	for range maxGraphIO + 1 {
		manyInputs = append(manyInputs, in(nil))
	}
	for _, tc := range []struct {
		name          string
		in            []byte
		positions     int
		dynamicQuant  bool
		inputs, outps []string
		want          error
	}{
		{"cross-encoder", graph(node, init(pos), init(w), in(ids), in(mask), out(logits)), 512, true, []string{"input_ids", "attention_mask"}, []string{"logits"}, nil},
		// IR < 4 lists the initializers among the inputs, before or after.
		{"initializer inputs", graph(in(valueInfo("w", 1, 4)), init(pos), init(w), in(ids), in(valueInfo(
			"bert.embeddings.position_embeddings.weight", 1, 512, 8)), out(logits)), 512, false, []string{"input_ids"}, []string{"logits"}, nil},
		{"negative positions", graph(init(initializer("position_embeddings.weight", nil, -512, 8))), 0, false, nil, nil, nil},
		{"no graph", onnxpb.AppendVarint(nil, onnxpb.ModelIRVersion, 8), 0, false, nil, nil, nil},
		{"empty", nil, 0, false, nil, nil, nil},
		{"garbage", []byte{0xff}, 0, false, nil, nil, io.ErrUnexpectedEOF},
		{"cut short", graph(in(ids), out(logits))[:20], 0, false, nil, nil, errBadProto},
		{"wrapping length", long, 0, false, nil, nil, errBadProto},
		{"group", []byte{0x0b}, 0, false, nil, nil, errBadProto},
		{"too many inputs", graph(manyInputs...), 0, false, nil, nil, onnxpb.ErrLimit},
		{"malformed input", graph(in([]byte{0xff})), 0, false, nil, nil, onnxpb.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := graphInfoFrom(bytes.NewReader(tc.in), int64(len(tc.in)))
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			names := func(vs []onnxpb.ValueInfo) []string {
				var out []string
				for _, v := range vs {
					out = append(out, v.Name)
				}
				return out
			}
			if info.positions != tc.positions || info.dynamicQuant != tc.dynamicQuant || !slices.Equal(names(info.inputs), tc.inputs) || !slices.Equal(names(info.outputs), tc.outps) {
				t.Fatalf("info = %+v", info)
			}
		})
	}
}

// FuzzGraphInfo: no file panics graphInfoFrom or makes it loop, and what
// it returns stays within its limits.
func FuzzGraphInfo(f *testing.F) {
	var b bytes.Buffer
	if err := testmodel.WriteONNX(&b, testmodel.Spec{Name: "fuzz", Layers: 1, Hidden: 16, Heads: 2, FFN: 16, MaxPositions: 8, TypeVocab: 2, Vocab: 8, Seed: 1, InitStd: 0.3}); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	ids := valueInfo("input_ids", onnxpb.DataTypeInt64, -1, -1)
	f.Add(onnxModel(bytes.Join([][]byte{
		onnxpb.AppendBytes(nil, onnxpb.GraphInput, valueInfo("w", 1, 4)),
		onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, initializer("position_embeddings.weight", make([]byte, 32), 4, 2)),
		onnxpb.AppendBytes(nil, onnxpb.GraphNode, onnxpb.EncodeNode("", "n", "DynamicQuantizeLinear", []string{"x"}, []string{"y"})),
		onnxpb.AppendBytes(nil, onnxpb.GraphInput, ids),
	}, nil)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		info, err := graphInfoFrom(bytes.NewReader(in), int64(len(in)))
		if err != nil {
			return
		}
		if info.positions < 0 || len(info.inputs) > maxGraphIO || len(info.outputs) > maxGraphIO {
			t.Fatalf("info: %d positions, %d inputs, %d outputs", info.positions, len(info.inputs), len(info.outputs))
		}
		for _, v := range append(info.inputs, info.outputs...) {
			if len(v.Dims) > onnxpb.MaxRank {
				t.Fatalf("%s: %d dims", v.Name, len(v.Dims))
			}
		}
	})
}
