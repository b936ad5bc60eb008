package quantize

import (
	"bytes"
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/rerank/rerank/model/testmodel"

	"github.com/rerank/rerank/internal/onnxpb"
)

// graphOps counts the op types of a model's nodes ("domain:op").
func graphOps(t testing.TB, model []byte) (map[string]int, []*node, map[string]*tensor) {
	t.Helper()
	top, err := fields(model)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	var nodes []*node
	inits := map[string]*tensor{}
	for _, f := range top {
		if f.Num != onnxpb.ModelGraph {
			continue
		}
		gf, err := fields(f.Val)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gf {
			switch g.Num {
			case onnxpb.GraphNode:
				n, err := parseNode(g.Val)
				if err != nil {
					t.Fatal(err)
				}
				ops[n.domain+":"+n.opType]++
				nodes = append(nodes, n)
			case onnxpb.GraphInitializer:
				tn, err := parseTensor(g.Val)
				if err != nil {
					t.Fatal(err)
				}
				inits[tn.name] = tn
			}
		}
	}
	return ops, nodes, inits
}

func tinyONNX(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := testmodel.WriteONNX(&b, testmodel.Tiny); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestGraphQuantizesTheEncoderAndKeepsTheHead(t *testing.T) {
	in := tinyONNX(t)
	before, _, _ := graphOps(t, in)
	out, rep, err := Graph(in, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	after, nodes, inits := graphOps(t, out)
	// 2 layers × (query, key, value, attention output, intermediate, output).
	if len(rep.Quantized) != 12 {
		t.Fatalf("quantized %d nodes: %q", len(rep.Quantized), rep.Quantized)
	}
	if len(rep.Kept) != 2 || !strings.Contains(rep.Kept[0], "pooler") || !strings.Contains(rep.Kept[1], "classifier") {
		t.Fatalf("kept %q", rep.Kept)
	}
	// Query, key and value share one DynamicQuantizeLinear per layer; the
	// other three quantize their own input; every bias Add is folded.
	want := map[string]int{
		"com.microsoft:MatMulIntegerToFloat":  6,
		"com.microsoft:DynamicQuantizeMatMul": 6,
		":DynamicQuantizeLinear":              2,
		":MatMul":                             before[":MatMul"] - 12,
		":Add":                                before[":Add"] - 12,
	}
	for op, n := range want {
		if after[op] != n {
			t.Errorf("%s: %d nodes, want %d (before %v, after %v)", op, after[op], n, before, after)
		}
	}
	// No float weight of a quantized node is left; int8 weights with one
	// scale per output column take their place.
	for _, n := range nodes {
		if n.domain != domainMicrosoft {
			continue
		}
		wq := inits[n.inputs[1]]
		if wq == nil || wq.dataType != onnxpb.DataTypeInt8 || len(wq.dims) != 2 {
			t.Fatalf("%s: weight %q is %+v", n.name, n.inputs[1], wq)
		}
		scaleAt := 2
		if n.opType == "MatMulIntegerToFloat" {
			scaleAt = 3
		}
		if s := inits[n.inputs[scaleAt]]; s == nil || len(s.dims) != 1 || s.dims[0] != wq.dims[1] {
			t.Fatalf("%s: scale %+v for weight dims %v", n.name, s, wq.dims)
		}
		if !strings.HasSuffix(n.inputs[len(n.inputs)-1], ".bias") {
			t.Errorf("%s: inputs %q: the bias was not folded", n.name, n.inputs)
		}
	}
	for name, tn := range inits {
		if strings.HasSuffix(name, ".weight") && strings.Contains(name, "encoder") && tn.dataType == onnxpb.DataTypeFloat && len(tn.dims) == 2 {
			t.Errorf("fp32 weight %s still in the graph", name)
		}
	}
	if rep.WeightBytes[1]*3 > rep.WeightBytes[0] || len(out) >= len(in) {
		t.Errorf("weights %d → %d bytes, model %d → %d", rep.WeightBytes[0], rep.WeightBytes[1], len(in), len(out))
	}
}

func TestGraphOptions(t *testing.T) {
	in := tinyONNX(t)
	for _, tc := range []struct {
		name string
		opts func(*Options)
		want int
	}{
		{"edge layers kept", func(o *Options) { o.KeepEdgeLayers = true }, 0},
		{"attention output kept", func(o *Options) { o.Exclude = regexp.MustCompile(`pooler|classifier|attention/output`) }, 10},
		{"classifier too", func(o *Options) { o.Exclude = nil; o.MinColumns = 1 }, 14},
		{"pooler but not the 1-logit classifier", func(o *Options) { o.Exclude = nil }, 13},
		{"per tensor", func(o *Options) { o.Granularity = PerTensor }, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.opts(&o)
			out, rep, err := Graph(in, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Quantized) != tc.want {
				t.Fatalf("quantized %d: %q", len(rep.Quantized), rep.Quantized)
			}
			if o.Granularity == PerTensor {
				_, nodes, inits := graphOps(t, out)
				for _, n := range nodes {
					if n.opType == "DynamicQuantizeMatMul" && len(inits[n.inputs[2]].dims) != 0 {
						t.Fatalf("per-tensor scale of %s has dims %v", n.name, inits[n.inputs[2]].dims)
					}
				}
			}
		})
	}
}

func TestQuantizeWeightRoundTrips(t *testing.T) {
	const rows, cols = 7, 5
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(math.Sin(float64(i)*1.7)) * float32(1+i%cols) // columns of different ranges
	}
	w[3] = 0 // a zero
	for _, g := range []Granularity{PerChannel, PerTensor} {
		q, scales := quantizeWeight(w, rows, cols, g)
		if g == PerChannel && len(scales) != cols || g == PerTensor && len(scales) != 1 {
			t.Fatalf("%s: %d scales", g, len(scales))
		}
		for i, v := range w {
			s := scales[i%cols%len(scales)]
			got := float32(int8(q[i])) * s
			if d := math.Abs(float64(got - v)); d > float64(s)/2+1e-7 {
				t.Errorf("%s: w[%d] = %v dequantized to %v (scale %v)", g, i, v, got, s)
			}
			if int8(q[i]) == -128 {
				t.Errorf("%s: -128 used (symmetric range is ±127)", g)
			}
		}
	}
	// All-zero columns keep a usable scale.
	q, scales := quantizeWeight(make([]float32, 6), 3, 2, PerChannel)
	if scales[0] <= 0 || q[0] != 0 {
		t.Fatalf("zero weight: q %v scales %v", q, scales)
	}
}

// handModel builds a small ModelProto: one node over input x and weight w
// (dims), with an optional bias c, at a given default opset.
func handModel(op string, opset int, dims []int64, attrs [][]byte, withC bool) []byte {
	n := dims[0] * dims[1]
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(i%7) - 3
	}
	inputs := []string{"x", "w"}
	g := onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, encodeTensor("w", onnxpb.DataTypeFloat, float32Bytes(vals), dims...))
	if withC {
		inputs = append(inputs, "c")
		g = onnxpb.AppendBytes(g, onnxpb.GraphInitializer, encodeTensor("c", onnxpb.DataTypeFloat, float32Bytes(make([]float32, dims[0])), dims[0]))
	}
	g = onnxpb.AppendBytes(g, onnxpb.GraphNode, encodeNode("/layer.0/dense/"+op, op, inputs, []string{"y"}, attrs...))
	g = onnxpb.AppendBytes(g, onnxpb.GraphOutput, onnxpb.AppendString(nil, onnxpb.ValueInfoName, "y"))
	m := onnxpb.AppendVarint(nil, 1, 8) // ir_version
	m = onnxpb.AppendBytes(m, onnxpb.ModelGraph, g)
	return onnxpb.AppendBytes(m, onnxpb.ModelOpsetImport, onnxpb.AppendVarint(nil, onnxpb.OpsetVersion, uint64(opset)))
}

func TestGemmWithTransposedWeight(t *testing.T) {
	// Gemm(x, w[32,24]ᵀ, c[32]): the int8 weight is stored [24,32], C is the bias.
	in := handModel("Gemm", 13, []int64{32, 24}, [][]byte{intAttr("transB", 1)}, true)
	out, rep, err := Graph(in, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	ops, nodes, inits := graphOps(t, out)
	if len(rep.Quantized) != 1 || ops["com.microsoft:DynamicQuantizeMatMul"] != 1 || ops[":Gemm"] != 0 {
		t.Fatalf("ops %v, report %+v", ops, rep)
	}
	n := nodes[0]
	wq := inits[n.inputs[1]]
	if wq.dims[0] != 24 || wq.dims[1] != 32 || n.inputs[4] != "c" || n.outputs[0] != "y" {
		t.Fatalf("node %+v, weight dims %v", n, wq.dims)
	}
	if _, ok := inits["w"]; ok {
		t.Fatal("the fp32 weight is still there")
	}
	// w[j,k] (row j = output column) is the element k*... of the transposed copy.
	q, scales := quantizeWeight(transpose(func() []float32 {
		v := make([]float32, 32*24)
		for i := range v {
			v[i] = float32(i%7) - 3
		}
		return v
	}(), 32, 24), 24, 32, PerChannel)
	if !bytes.Equal(q, wq.raw) || len(scales) != 32 {
		t.Fatal("the stored weight is not the transposed, quantized weight")
	}
	// An opset model of the microsoft domain gets one opset import.
	if c := bytes.Count(out, []byte(domainMicrosoft)); c < 2 {
		t.Fatalf("com.microsoft appears %d times", c)
	}
}

func TestGraphErrors(t *testing.T) {
	valid := handModel("MatMul", 13, []int64{24, 32}, nil, false)
	for _, tc := range []struct {
		name  string
		in    []byte
		opts  func(*Options)
		want  error
		match string
	}{
		{"garbage", []byte{0xff, 0xff}, nil, ErrMalformed, ""},
		{"truncated", valid[:len(valid)-3], nil, ErrMalformed, ""},
		{"no graph", onnxpb.AppendVarint(nil, 1, 8), nil, ErrMalformed, "no graph"},
		{"old opset", handModel("MatMul", 10, []int64{24, 32}, nil, false), nil, ErrUnsupported, "opset 10"},
		{"bad granularity", valid, func(o *Options) { o.Granularity = "per-row" }, nil, "granularity"},
		{"bad op", valid, func(o *Options) { o.OpTypes = []string{"Conv"} }, nil, "Conv"},
		{"no op", valid, func(o *Options) { o.OpTypes = nil }, nil, "no operator"},
		{"min columns", valid, func(o *Options) { o.MinColumns = 0 }, nil, "min columns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			if tc.opts != nil {
				tc.opts(&o)
			}
			_, _, err := Graph(tc.in, o)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.match) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.match)
			}
		})
	}
	// A weight of too few columns is kept, and said so.
	_, rep, err := Graph(handModel("MatMul", 13, []int64{24, 8}, nil, false), DefaultOptions())
	if err != nil || len(rep.Quantized) != 0 || len(rep.Kept) != 1 || !strings.Contains(rep.Kept[0], "8 output columns") {
		t.Fatalf("err %v, report %+v", err, rep)
	}
}

// FuzzGraph: no input panics the rewrite or makes it loop; what it accepts
// it writes as a well-formed model.
func FuzzGraph(f *testing.F) {
	f.Add(handModel("MatMul", 13, []int64{24, 32}, nil, false))
	f.Add(handModel("Gemm", 13, []int64{32, 24}, [][]byte{intAttr("transB", 1)}, true))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _, err := Graph(in, DefaultOptions())
		if err != nil {
			return
		}
		if _, err := fields(out); err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
	})
}
