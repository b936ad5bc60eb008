package onnxpb_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rerank/rerank/internal/onnxpb"
	"github.com/rerank/rerank/internal/testenv"
)

// TestFieldsAllocationIsBoundedByInputSize: a crafted message of 2-byte
// fields costs Fields at most 4 bytes per input byte (plus a few KiB),
// whatever it answers; it no longer allocates a 64-byte record per field.
func TestFieldsAllocationIsBoundedByInputSize(t *testing.T) {
	const n = 1 << 20
	crafted := bytes.Repeat(onnxpb.AppendVarint(nil, 1, 0), n/2)
	var err error
	got := testenv.Allocated(func() { _, err = onnxpb.Fields(crafted) })
	if limit := uint64(4*n + 16<<10); got > limit {
		t.Fatalf("Fields of %d bytes allocated %d bytes, want at most %d", n, got, limit)
	}
	if !errors.Is(err, onnxpb.ErrLimit) {
		t.Fatalf("err = %v, want %v", err, onnxpb.ErrLimit)
	}
}

// TestFieldsLimit: Fields records up to 64 + len(b)/16 fields, in 4 bytes
// of records per byte of b at most (plus 4 KiB); a message it refuses costs
// no record.
func TestFieldsLimit(t *testing.T) {
	field16 := onnxpb.AppendString(nil, 2, "0123456789abcd") // 16 bytes
	tiny := onnxpb.AppendVarint(nil, 1, 0)                   // 2 bytes
	for _, tc := range []struct {
		name   string
		in     []byte
		fields int
		want   error
	}{
		{"empty", nil, 0, nil},
		{"64 tiny fields", bytes.Repeat(tiny, 64), 64, nil},
		{"16-byte fields", bytes.Repeat(field16, 10000), 10000, nil},
		// 1000 + k fields in 16000 + 2k bytes: k = 73 is the most.
		{"16-byte fields and 73 tiny", append(bytes.Repeat(field16, 1000), bytes.Repeat(tiny, 73)...), 1073, nil},
		{"16-byte fields and 74 tiny", append(bytes.Repeat(field16, 1000), bytes.Repeat(tiny, 74)...), 0, onnxpb.ErrLimit},
		{"tiny fields", bytes.Repeat(tiny, 1000), 0, onnxpb.ErrLimit},
		{"truncated", field16[:10], 0, onnxpb.ErrMalformed},
		{"bad wire type", []byte{0x0f}, 0, onnxpb.ErrMalformed},
		{"tiny fields, then garbage", append(bytes.Repeat(tiny, 1000), 0xff), 0, onnxpb.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fs []onnxpb.Field
			var err error
			got := testenv.Allocated(func() { fs, err = onnxpb.Fields(tc.in) })
			if !errors.Is(err, tc.want) || tc.want != nil && err == nil || len(fs) != tc.fields {
				t.Fatalf("Fields = %d fields, %v; want %d, %v", len(fs), err, tc.fields, tc.want)
			}
			if err != nil && got > 16<<10 || uint64(len(fs))*uint64(unsafe.Sizeof(onnxpb.Field{})) > uint64(4*len(tc.in)+4096) {
				t.Fatalf("Fields allocated %d bytes for %d fields of %d bytes (err %v)", got, len(fs), len(tc.in), err)
			}
		})
	}
}

// TestAllAllocatesNothing: All walks a message of any number of fields
// without allocating.
func TestAllAllocatesNothing(t *testing.T) {
	in := bytes.Repeat(onnxpb.AppendVarint(nil, 1, 0), 1000)
	n := 0
	allocs := testing.AllocsPerRun(10, func() {
		n = 0
		for _, err := range onnxpb.All(in) {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
	})
	if allocs != 0 || n != 1000 {
		t.Fatalf("All: %d fields in %v allocations", n, allocs)
	}
}

// TestParseNode: what ParseNode reads, and the nodes it refuses:
// malformed, or of more inputs and outputs than the node's bytes can hold
// at 4 bytes of list per byte.
func TestParseNode(t *testing.T) {
	ints := func(name string, vs ...int64) []byte {
		b := onnxpb.AppendString(nil, onnxpb.AttrName, name)
		for _, v := range vs {
			b = onnxpb.AppendVarint(b, onnxpb.AttrInts, uint64(v))
		}
		return b
	}
	packed := func(name string, vs ...byte) []byte {
		return onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.AttrName, name), onnxpb.AttrInts, vs)
	}
	graph := onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.AttrName, "then_branch"), onnxpb.AttrG, nil)
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"16 empty inputs", onnxpb.EncodeNode("", "", "Concat", append(make([]string, 16), "x"), []string{"y"}), nil},
		{"wide", bytes.Repeat(onnxpb.AppendString(nil, onnxpb.NodeInput, ""), 1000), onnxpb.ErrLimit},
		{"many attributes", bytes.Repeat(onnxpb.AppendBytes(nil, onnxpb.NodeAttribute, onnxpb.AppendString(nil, onnxpb.AttrName, "a")), 1000), nil},
		{"long ints", onnxpb.AppendBytes(nil, onnxpb.NodeAttribute, packed("pads", bytes.Repeat([]byte{1}, 1<<16)...)), nil},
		{"malformed attribute", onnxpb.AppendBytes(nil, onnxpb.NodeAttribute, []byte{0xff}), onnxpb.ErrMalformed},
		{"malformed ints", onnxpb.AppendBytes(nil, onnxpb.NodeAttribute, packed("pads", 0x80)), onnxpb.ErrMalformed},
		{"malformed", []byte{0x0a, 0x05}, onnxpb.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := onnxpb.ParseNode(tc.in)
			if !errors.Is(err, tc.want) || tc.want != nil && err == nil || err == nil && !bytes.Equal(n.Raw, tc.in) {
				t.Fatalf("ParseNode = %+v, %v; want %v", n, err, tc.want)
			}
		})
	}
	n, err := onnxpb.ParseNode(onnxpb.EncodeNode("com.microsoft", "n", "Op", []string{"x", "", "z"}, []string{"y"},
		onnxpb.IntAttr("axis", -1), onnxpb.FloatAttr("epsilon", 0.5), ints("perm", 0, 2, 1, 3), packed("axes", 1, 0x7f),
		onnxpb.IntAttr("axis", 2), graph))
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "n" || n.OpType != "Op" || n.Domain != "com.microsoft" || n.DefaultDomain() || !slices.Equal(n.Inputs, []string{"x", "", "z"}) ||
		!slices.Equal(n.Outputs, []string{"y"}) || n.NumAttrs != 6 || !n.Subgraph {
		t.Fatalf("node %+v", n)
	}
	// The last attribute of a name counts; one of another kind is none.
	if n.AttrInt("axis", 0) != 2 || n.AttrFloat("epsilon", 0) != 0.5 || n.AttrInt("epsilon", 7) != 7 || n.AttrFloat("axis", 3) != 3 ||
		n.AttrInt("missing", 7) != 7 || n.AttrTensor("axis") != nil || n.AttrInts("axis") != nil ||
		!slices.Equal(n.AttrInts("perm"), []int64{0, 2, 1, 3}) || !slices.Equal(n.AttrInts("axes"), []int64{1, 127}) {
		t.Fatalf("attributes of %+v", n)
	}
	value := encodeTensor(t)
	c, err := onnxpb.ParseNode(onnxpb.EncodeNode("", "c", "Constant", nil, []string{"k"},
		onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.AttrName, "value"), onnxpb.AttrT, value)))
	if err != nil || !bytes.Equal(c.AttrTensor("value"), value) || c.Inputs != nil || c.Subgraph || !c.DefaultDomain() {
		t.Fatalf("node %+v, %v", c, err)
	}
}

// encodeTensor is a small TensorProto.
func encodeTensor(t *testing.T) []byte {
	t.Helper()
	b := onnxpb.AppendVarint(nil, onnxpb.TensorDims, 1)
	b = onnxpb.AppendVarint(b, onnxpb.TensorDataType, onnxpb.DataTypeInt64)
	return onnxpb.AppendBytes(b, onnxpb.TensorRawData, make([]byte, 8))
}

// TestParseNodeAllocationIsBounded: what ParseNode keeps of a crafted node
// of N bytes takes at most 5N bytes (4N of string headers, N of names),
// whatever its fields: it keeps no record per attribute, nor the integers
// of integer lists.
func TestParseNodeAllocationIsBounded(t *testing.T) {
	const n = 1 << 20
	var attrs []byte
	for i := range n / 6 {
		attrs = onnxpb.AppendBytes(attrs, onnxpb.NodeAttribute, onnxpb.AppendString(nil, onnxpb.AttrName, string([]byte{byte(i), byte(i >> 8)})))
	}
	for name, node := range map[string][]byte{
		"inputs":        bytes.Repeat(onnxpb.AppendString(nil, onnxpb.NodeInput, ""), n/2),
		"4-byte inputs": bytes.Repeat(onnxpb.AppendString(nil, onnxpb.NodeInput, "ab"), n/4),
		"attributes":    attrs,
		"ints":          onnxpb.AppendBytes(nil, onnxpb.NodeAttribute, onnxpb.AppendBytes(nil, onnxpb.AttrInts, bytes.Repeat([]byte{1}, n))),
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			got := testenv.Allocated(func() { _, err = onnxpb.ParseNode(node) })
			if limit := uint64(5*len(node) + 16<<10); got > limit {
				t.Fatalf("ParseNode of %d bytes allocated %d (err %v), want at most %d", len(node), got, err, limit)
			}
		})
	}
}

// TestParseValueInfoBoundsRank: a shape of more dimensions than any
// tensor has is an error, and no more dimensions are kept than the limit.
func TestParseValueInfoBoundsRank(t *testing.T) {
	var shape []byte
	for range 100 {
		shape = onnxpb.AppendBytes(shape, onnxpb.ShapeDim, onnxpb.AppendVarint(nil, onnxpb.DimValue, 1))
	}
	tt := onnxpb.AppendVarint(nil, onnxpb.TensorElemType, onnxpb.DataTypeFloat)
	tt = onnxpb.AppendBytes(tt, onnxpb.TensorShape, shape)
	vi := onnxpb.AppendString(nil, onnxpb.ValueInfoName, "x")
	vi = onnxpb.AppendBytes(vi, onnxpb.ValueInfoType, onnxpb.AppendBytes(nil, onnxpb.TypeTensorType, tt))
	v, err := onnxpb.ParseValueInfo(vi)
	if !errors.Is(err, onnxpb.ErrLimit) || len(v.Dims) != onnxpb.MaxRank || v.Name != "x" || !v.Tensor || v.Elem != onnxpb.DataTypeFloat {
		t.Fatalf("ParseValueInfo = %+v, %v; want %d dims and %v", v, err, onnxpb.MaxRank, onnxpb.ErrLimit)
	}
}

// TestParseValueInfo: what it reads, and what it reads past a malformed
// part.
func TestParseValueInfo(t *testing.T) {
	dim := func(v uint64) []byte {
		return onnxpb.AppendBytes(nil, onnxpb.ShapeDim, onnxpb.AppendVarint(nil, onnxpb.DimValue, v))
	}
	param := onnxpb.AppendBytes(nil, onnxpb.ShapeDim, onnxpb.AppendString(nil, onnxpb.DimParam, "batch"))
	tensor := func(shape []byte) []byte {
		tt := onnxpb.AppendVarint(nil, onnxpb.TensorElemType, onnxpb.DataTypeInt64)
		tt = onnxpb.AppendBytes(tt, onnxpb.TensorShape, shape)
		return onnxpb.AppendBytes(nil, onnxpb.TypeTensorType, tt)
	}
	vi := func(name string, typ []byte) []byte {
		return onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.ValueInfoName, name), onnxpb.ValueInfoType, typ)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want onnxpb.ValueInfo
		err  error
	}{
		{"tensor", vi("ids", tensor(append(param, dim(128)...))), onnxpb.ValueInfo{Name: "ids", Tensor: true, Elem: onnxpb.DataTypeInt64, Dims: []int64{-1, 128}}, nil},
		{"no shape", vi("ids", onnxpb.AppendBytes(nil, onnxpb.TypeTensorType, nil)), onnxpb.ValueInfo{Name: "ids", Tensor: true}, nil},
		{"not a tensor", vi("seq", onnxpb.AppendBytes(nil, 4, nil)), onnxpb.ValueInfo{Name: "seq"}, nil},
		{"malformed type", vi("ids", []byte{0xff}), onnxpb.ValueInfo{Name: "ids"}, onnxpb.ErrMalformed},
		{"malformed dim", vi("ids", tensor(append(dim(2), onnxpb.AppendBytes(nil, onnxpb.ShapeDim, []byte{0x08})...))), onnxpb.ValueInfo{Name: "ids", Tensor: true, Elem: onnxpb.DataTypeInt64, Dims: []int64{2, -1}}, onnxpb.ErrMalformed},
		{"garbage", []byte{0xff}, onnxpb.ValueInfo{}, onnxpb.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := onnxpb.ParseValueInfo(tc.in)
			if !errors.Is(err, tc.err) || tc.err != nil && err == nil || v.Name != tc.want.Name || v.Tensor != tc.want.Tensor || v.Elem != tc.want.Elem || !slices.Equal(v.Dims, tc.want.Dims) {
				t.Fatalf("ParseValueInfo = %+v, %v; want %+v, %v", v, err, tc.want, tc.err)
			}
		})
	}
}

// TestAppendDims: up to MaxRank dims, packed or not; past it an ErrLimit
// error.
func TestAppendDims(t *testing.T) {
	packed := func(n int) onnxpb.Field {
		fs, err := onnxpb.Fields(onnxpb.AppendBytes(nil, onnxpb.TensorDims, bytes.Repeat([]byte{3}, n)))
		if err != nil {
			t.Fatal(err)
		}
		return fs[0]
	}
	one := onnxpb.Field{Num: onnxpb.TensorDims, Typ: protowire.VarintType, V: 3}
	for _, tc := range []struct {
		name string
		dst  []int64
		f    onnxpb.Field
		n    int
		want error
	}{
		{"packed", nil, packed(onnxpb.MaxRank), onnxpb.MaxRank, nil},
		{"packed, too many", nil, packed(onnxpb.MaxRank + 1), 0, onnxpb.ErrLimit},
		{"packed, many", nil, packed(1 << 20), 0, onnxpb.ErrLimit},
		{"one more", make([]int64, onnxpb.MaxRank-1), one, onnxpb.MaxRank, nil},
		{"one too many", make([]int64, onnxpb.MaxRank), one, 0, onnxpb.ErrLimit},
		{"malformed", nil, onnxpb.Field{Typ: protowire.BytesType, Val: []byte{0x80}}, 0, onnxpb.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := onnxpb.AppendDims(tc.dst, tc.f)
			if !errors.Is(err, tc.want) || tc.want != nil && err == nil || len(d) != tc.n {
				t.Fatalf("AppendDims = %d dims, %v; want %d, %v", len(d), err, tc.n, tc.want)
			}
		})
	}
}

// FuzzFields: Fields and All agree on any input; the fields' Raw bytes
// rebuild it; Fields stays within its limit; ParseNode and ParseValueInfo
// never panic and keep at most MaxRank dims.
func FuzzFields(f *testing.F) {
	f.Add([]byte{})
	f.Add(onnxpb.EncodeNode("", "n", "Transpose", []string{"x"}, []string{"y"}, onnxpb.IntAttr("axis", 1), onnxpb.FloatAttr("alpha", 2)))
	f.Add(bytes.Repeat(onnxpb.AppendVarint(nil, 1, 0), 100))
	f.Add(onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.ValueInfoName, "x"), onnxpb.ValueInfoType,
		onnxpb.AppendBytes(nil, onnxpb.TypeTensorType, onnxpb.AppendBytes(nil, onnxpb.TensorShape,
			onnxpb.AppendBytes(nil, onnxpb.ShapeDim, onnxpb.AppendVarint(nil, onnxpb.DimValue, 3))))))
	f.Fuzz(func(t *testing.T, in []byte) {
		var all []onnxpb.Field
		var allErr error
		for f, err := range onnxpb.All(in) {
			if err != nil {
				allErr = err
				break
			}
			all = append(all, f)
		}
		fs, err := onnxpb.Fields(in)
		switch {
		case allErr != nil:
			if !errors.Is(err, onnxpb.ErrMalformed) || !errors.Is(allErr, onnxpb.ErrMalformed) {
				t.Fatalf("All: %v, Fields: %v", allErr, err)
			}
		case len(all) > 64+len(in)/16:
			if !errors.Is(err, onnxpb.ErrLimit) {
				t.Fatalf("%d fields in %d bytes: err %v", len(all), len(in), err)
			}
		case err != nil || len(fs) != len(all):
			t.Fatalf("Fields: %d fields, %v; All: %d", len(fs), err, len(all))
		default:
			var raw []byte
			for i, f := range fs {
				if !bytes.Equal(f.Raw, all[i].Raw) || f.V != all[i].V || f.Num != all[i].Num {
					t.Fatalf("field %d: %+v != %+v", i, f, all[i])
				}
				raw = append(raw, f.Raw...)
			}
			if !bytes.Equal(raw, in) {
				t.Fatal("the fields do not rebuild the message")
			}
		}
		if n, err := onnxpb.ParseNode(in); err == nil {
			if !bytes.Equal(n.Raw, in) || len(n.Inputs)+len(n.Outputs) > 16+len(in)/4 {
				t.Fatalf("ParseNode: %d bytes, %d inputs, %d outputs", len(in), len(n.Inputs), len(n.Outputs))
			}
			_, _, _, _ = n.AttrInt("axis", 0), n.AttrFloat("alpha", 0), n.AttrTensor("value"), n.AttrInts("perm")
		}
		if v, _ := onnxpb.ParseValueInfo(in); len(v.Dims) > onnxpb.MaxRank {
			t.Fatalf("%d dims", len(v.Dims))
		}
	})
}
