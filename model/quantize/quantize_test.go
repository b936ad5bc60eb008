package quantize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
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

// calibrated returns opts with made-up ranges for every activation Graph
// quantizes in model: [-4, 4], channel ranges and means included.
func calibrated(t testing.TB, model []byte, opts Options) Options {
	t.Helper()
	_, names, err := Observe(model, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, nodes, inits := graphOps(t, model)
	opts.Ranges = map[string]Range{}
	for _, n := range names {
		k := 0 // the channels: the input size of a weight that reads n
		for _, nd := range nodes {
			if nd.opType != "MatMul" || nd.inputs[0] != n {
				continue
			}
			if w := inits[nd.inputs[1]]; w != nil {
				k = int(w.dims[0])
			}
		}
		r := Range{Min: -4, Max: 4, Rows: 10}
		for c := range k {
			r.ChannelMin = append(r.ChannelMin, -1-float32(c%3))
			r.ChannelMax = append(r.ChannelMax, 1+float32(c%4))
			r.ChannelMean = append(r.ChannelMean, 0.1*float64(c%5))
		}
		opts.Ranges[n] = r
	}
	return opts
}

func TestGraphQuantizesTheEncoderAndKeepsTheHead(t *testing.T) {
	in := tinyONNX(t)
	before, _, _ := graphOps(t, in)
	for _, tc := range []struct {
		acts Activations
		keep bool // KeepAttention
		want map[string]int
		bias string // suffix of every quantized node's bias input
	}{
		// Query, key and value share one DynamicQuantizeLinear per layer;
		// the other three quantize their own input; every bias Add is
		// folded.
		{PerBatch, true, map[string]int{
			"com.microsoft:MatMulIntegerToFloat":  6,
			"com.microsoft:DynamicQuantizeMatMul": 6,
			"com.microsoft:QAttention":            0,
			":DynamicQuantizeLinear":              2,
			":QuantizeLinear":                     0,
			":MatMul":                             before[":MatMul"] - 12,
			":Add":                                before[":Add"] - 12,
			":Mul":                                before[":Mul"],
			":Transpose":                          before[":Transpose"],
		}, ".bias"},
		// One smoothing Mul and one QuantizeLinear per distinct input (4 a
		// layer); every bias is replaced by its corrected copy.
		{Static, true, map[string]int{
			"com.microsoft:MatMulIntegerToFloat":  12,
			"com.microsoft:DynamicQuantizeMatMul": 0,
			"com.microsoft:QAttention":            0,
			":DynamicQuantizeLinear":              0,
			":QuantizeLinear":                     8,
			":MatMul":                             before[":MatMul"] - 12,
			":Add":                                before[":Add"] - 12,
			":Mul":                                before[":Mul"] + 8,
			":Transpose":                          before[":Transpose"],
		}, "_bias_corrected"},
		// Each layer's self-attention is one QAttention: its three
		// projections, two attention products, four Transposes, four
		// Reshapes, scaling Div, mask Add and Softmax go, and so does the
		// mask's arithmetic (Unsqueeze, Mul, Sub, float Cast), for one
		// int32 Cast of attention_mask.
		{PerBatch, false, map[string]int{
			"com.microsoft:MatMulIntegerToFloat":  0,
			"com.microsoft:DynamicQuantizeMatMul": 6,
			"com.microsoft:QAttention":            2,
			":DynamicQuantizeLinear":              2,
			":QuantizeLinear":                     0,
			":MatMul":                             before[":MatMul"] - 16,
			":Add":                                before[":Add"] - 14,
			":Mul":                                before[":Mul"] - 1,
			":Div":                                before[":Div"] - 2,
			":Transpose":                          0,
			":Reshape":                            0,
			":Softmax":                            0,
			":Unsqueeze":                          0,
			":Sub":                                0,
			":Cast":                               1,
		}, ".bias"},
		{Static, false, map[string]int{
			"com.microsoft:MatMulIntegerToFloat":  6,
			"com.microsoft:DynamicQuantizeMatMul": 0,
			"com.microsoft:QAttention":            2,
			":DynamicQuantizeLinear":              0,
			":QuantizeLinear":                     8,
			":MatMul":                             before[":MatMul"] - 16,
			":Add":                                before[":Add"] - 14,
			":Mul":                                before[":Mul"] + 8 - 1,
			":Transpose":                          0,
			":Softmax":                            0,
		}, "_bias_corrected"},
	} {
		name := string(tc.acts)
		if tc.keep {
			name += "/keep-attention"
		}
		t.Run(name, func(t *testing.T) {
			opts := DefaultOptions()
			opts.Activations = tc.acts
			opts.KeepAttention = tc.keep
			if tc.acts == Static {
				opts = calibrated(t, in, opts)
			}
			out, rep, err := Graph(in, opts)
			if err != nil {
				t.Fatal(err)
			}
			after, nodes, inits := graphOps(t, out)
			// 2 layers × (query, key, value, attention output, intermediate, output).
			if len(rep.Quantized) != 12 || rep.Attentions != tc.want["com.microsoft:QAttention"] {
				t.Fatalf("quantized %d nodes: %q, %d attentions", len(rep.Quantized), rep.Quantized, rep.Attentions)
			}
			if len(rep.Kept) != 2 || !strings.Contains(rep.Kept[0], "pooler") || !strings.Contains(rep.Kept[1], "classifier") {
				t.Fatalf("kept %q", rep.Kept)
			}
			for op, n := range tc.want {
				if after[op] != n {
					t.Errorf("%s: %d nodes, want %d (before %v, after %v)", op, after[op], n, before, after)
				}
			}
			// No float weight of a quantized node is left; int8 weights with
			// one scale per output column take their place.
			for _, n := range nodes {
				if n.domain != onnxpb.DomainMicrosoft {
					continue
				}
				wq := inits[n.inputs[1]]
				if wq == nil || wq.dataType != onnxpb.DataTypeInt8 || len(wq.dims) != 2 {
					t.Fatalf("%s: weight %q is %+v", n.name, n.inputs[1], wq)
				}
				// Where the weight scale, the bias and the activation's
				// scale and zero point are.
				scaleAt, biasAt, xScaleAt, xZeroAt := 2, len(n.inputs)-1, 2, 4
				bias := tc.bias
				switch n.opType {
				case "MatMulIntegerToFloat":
					scaleAt = 3
				case "QAttention":
					scaleAt, biasAt, xScaleAt, xZeroAt = 4, 2, 3, 6
					bias = "_qkv_bias" // the three, corrected or not, side by side
					if n.inputs[5] != "attention_mask_int32" || n.attrInt("num_heads", 0) != int64(testmodel.Tiny.Heads) {
						t.Errorf("%s: mask %q, %d heads", n.name, n.inputs[5], n.attrInt("num_heads", 0))
					}
					if b := inits[n.inputs[biasAt]]; b == nil || len(b.dims) != 1 || b.dims[0] != wq.dims[1] || wq.dims[1] != 3*wq.dims[0] {
						t.Errorf("%s: bias %+v for weight dims %v", n.name, b, wq.dims)
					}
				}
				if s := inits[n.inputs[scaleAt]]; s == nil || len(s.dims) != 1 || s.dims[0] != wq.dims[1] {
					t.Fatalf("%s: scale %+v for weight dims %v", n.name, s, wq.dims)
				}
				if !strings.HasSuffix(n.inputs[biasAt], bias) {
					t.Errorf("%s: inputs %q: the bias was not folded", n.name, n.inputs)
				}
				if tc.acts == Static {
					// The activation's scale and zero point are constants.
					if s, z := inits[n.inputs[xScaleAt]], inits[n.inputs[xZeroAt]]; s == nil || z == nil || z.dataType != onnxpb.DataTypeUint8 {
						t.Errorf("%s: activation scale %+v, zero point %+v", n.name, s, z)
					}
				}
			}
			for name, tn := range inits {
				if strings.HasSuffix(name, ".weight") && strings.Contains(name, "encoder") && tn.dataType == onnxpb.DataTypeFloat && len(tn.dims) == 2 {
					t.Errorf("fp32 weight %s still in the graph", name)
				}
				if tc.acts == Static && strings.HasSuffix(name, ".bias") && strings.Contains(name, "encoder") && !strings.Contains(name, "LayerNorm") {
					t.Errorf("bias %s, replaced by its corrected copy, still in the graph", name)
				}
			}
			if rep.WeightBytes[1]*3 > rep.WeightBytes[0] || len(out) >= len(in) {
				t.Errorf("weights %d → %d bytes, model %d → %d", rep.WeightBytes[0], rep.WeightBytes[1], len(in), len(out))
			}
		})
	}
}

// TestObserveAddsTheQuantizedInputsAsOutputs: the calibration graph is the
// model with the inputs of the nodes Graph quantizes (4 distinct ones a
// layer) added to its outputs, typed float; nothing else changes.
func TestObserveAddsTheQuantizedInputsAsOutputs(t *testing.T) {
	in := tinyONNX(t)
	out, names, err := Observe(in, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 8 || names[0] != "/bert/embeddings/LayerNorm/LayerNormalization_output_0" {
		t.Fatalf("names %q", names)
	}
	outputs := func(model []byte) []string {
		_, gf := graphFields(t, model)
		var got []string
		for _, f := range gf {
			if f.Num == onnxpb.GraphOutput {
				v, err := onnxpb.ParseValueInfo(f.Val)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, v.Name)
			}
		}
		return got
	}
	if got := outputs(out); !slices.Equal(got, append(outputs(in), names...)) {
		t.Fatalf("outputs %q", got)
	}
	b, _, _ := graphOps(t, in)
	a, _, _ := graphOps(t, out)
	if !maps.Equal(a, b) || len(out) <= len(in) {
		t.Fatalf("ops %v → %v", b, a)
	}
	// Static quantization needs every one of them.
	opts := calibrated(t, in, DefaultOptions())
	delete(opts.Ranges, names[3])
	if _, _, err := Graph(in, opts); !errors.Is(err, ErrUncalibrated) || !strings.Contains(err.Error(), names[3]) {
		t.Fatalf("err = %v, want %v for %q", err, ErrUncalibrated, names[3])
	}
}

func TestActivationParams(t *testing.T) {
	for _, tc := range []struct {
		rg    Range
		scale float32
		zp    byte
	}{
		{Range{Min: -1, Max: 3}, 4.0 / 255, 64},   // zero at 63.75 → 64
		{Range{Min: 0.5, Max: 2}, 2.0 / 255, 0},   // widened to hold zero
		{Range{Min: -2, Max: -1}, 2.0 / 255, 255}, // all negative
		{Range{Min: 0, Max: 0}, 1, 0},
		{Range{Min: float32(math.NaN()), Max: 1}, 1, 0},
		{Range{Min: float32(math.Inf(-1)), Max: 1}, 1, 0},
	} {
		scale, zp := activationParams(tc.rg)
		if math.Abs(float64(scale-tc.scale)) > 1e-7 || zp != tc.zp {
			t.Errorf("%+v: scale %v, zero point %d; want %v, %d", tc.rg, scale, zp, tc.scale, tc.zp)
		}
	}
}

// TestBiasCorrectionRestoresTheMeanOutput: over rows whose channel means
// are the calibration's, the int8 weight's product plus the corrected bias
// has the fp32 product's mean, column by column, with or without
// smoothing; without the correction it does not.
func TestBiasCorrectionRestoresTheMeanOutput(t *testing.T) {
	const rows, cols, n = 24, 6, 50
	r := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	x := make([][]float64, n) // activations with nonzero channel means
	mean := make([]float64, rows)
	for i := range x {
		x[i] = make([]float64, rows)
		for k := range rows {
			x[i][k] = r.NormFloat64() + float64(k%4)
			mean[k] += x[i][k] / n
		}
	}
	for _, smooth := range [][]float64{nil, func() []float64 {
		s := make([]float64, rows)
		for k := range s {
			s[k] = 0.5 + float64(k%3)
		}
		return s
	}()} {
		ws := slices.Clone(w)
		for i := range ws {
			if smooth != nil {
				ws[i] *= float32(smooth[i/cols])
			}
		}
		wq, scales := quantizeWeight(ws, rows, cols, PerChannel)
		corr := biasCorrection(ws, wq, scales, rows, cols, mean, smooth)
		for c := range cols {
			var exact, plain float64
			for _, row := range x {
				for k := range rows {
					xs := row[k]
					if smooth != nil {
						xs /= smooth[k]
					}
					exact += xs * float64(ws[k*cols+c])
					plain += xs * float64(int8(wq[k*cols+c])) * float64(scales[c])
				}
			}
			exact, plain = exact/n, plain/n
			if got := plain + float64(corr[c]); math.Abs(got-exact) > 1e-4 {
				t.Errorf("smooth %v, column %d: corrected mean %v, fp32 %v", smooth != nil, c, got, exact)
			}
			if math.Abs(plain-exact) < 1e-3 {
				t.Errorf("column %d: the uncorrected mean is already exact (%v): the test shows nothing", c, plain)
			}
		}
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
			o.Activations = PerBatch // which nodes, not how
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

// handWeight is handModel's weight, n values in row-major order.
func handWeight(n int64) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(i%7) - 3
	}
	return w
}

// handModel builds a small ModelProto: one node over input x and weight w
// (dims), with an optional bias c, at a given default opset.
func handModel(op string, opset int, dims []int64, attrs [][]byte, withC bool) []byte {
	vals := handWeight(dims[0] * dims[1])
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
	opts := DefaultOptions()
	opts.Activations = PerBatch
	out, rep, err := Graph(in, opts)
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
	q, scales := quantizeWeight(transpose(handWeight(32*24), 32, 24), 24, 32, PerChannel)
	if !bytes.Equal(q, wq.raw) || len(scales) != 32 {
		t.Fatal("the stored weight is not the transposed, quantized weight")
	}
	// An opset model of the microsoft domain gets one opset import.
	if c := bytes.Count(out, []byte(onnxpb.DomainMicrosoft)); c < 2 {
		t.Fatalf("com.microsoft appears %d times", c)
	}
}

// TestStaticGemmWithTransposedWeight: smoothing and bias correction follow
// a Gemm's transposed weight [N, K]: with the activation divided by the
// graph's smoothing factors and multiplied exactly (no activation
// rounding), the int8 weight and the corrected bias give x·Wᵀ + c within
// the weights' rounding, and the corrected bias restores the mean output
// over rows of the calibrated channel means.
func TestStaticGemmWithTransposedWeight(t *testing.T) {
	const n, k = 32, 24
	in := handModel("Gemm", 13, []int64{n, k}, [][]byte{intAttr("transB", 1)}, true)
	rg := Range{Min: -6, Max: 6, Rows: 100}
	for c := range k {
		rg.ChannelMin = append(rg.ChannelMin, -1-float32(c%5))
		rg.ChannelMax = append(rg.ChannelMax, 1+float32(c%3))
		rg.ChannelMean = append(rg.ChannelMean, 0.5+0.1*float64(c%4))
	}
	opts := DefaultOptions()
	opts.Ranges = map[string]Range{"x": rg}
	out, rep, err := Graph(in, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Smoothed != 1 || rep.Corrected != 1 {
		t.Fatalf("report %+v", rep)
	}
	_, nodes, inits := graphOps(t, out)
	var inv, wq, ws, bias []float32
	var wqDims []int64
	for _, nd := range nodes {
		switch nd.opType {
		case "Mul":
			inv, _ = inits[nd.inputs[1]].float32s()
		case "MatMulIntegerToFloat":
			q := inits[nd.inputs[1]]
			wqDims = q.dims
			for _, b := range q.raw {
				wq = append(wq, float32(int8(b)))
			}
			ws, _ = inits[nd.inputs[3]].float32s()
			bias, _ = inits[nd.inputs[6]].float32s()
		}
	}
	if len(inv) != k || len(wqDims) != 2 || wqDims[0] != k || wqDims[1] != n || len(ws) != n || len(bias) != n {
		t.Fatalf("smoothing %d, weight %v, scales %d, bias %d", len(inv), wqDims, len(ws), len(bias))
	}
	// handModel's weight, [N, K].
	w := handWeight(int64(n * k))
	yq := func(x []float64) []float64 { // the rewritten node, exact activations
		y := make([]float64, n)
		for j := range n {
			y[j] = float64(bias[j])
			for c := range k {
				y[j] += x[c] * float64(inv[c]) * float64(wq[c*n+j]) * float64(ws[j])
			}
		}
		return y
	}
	yf := func(x []float64) []float64 { // Gemm(x, w, c) with transB, c = 0
		y := make([]float64, n)
		for j := range n {
			for c := range k {
				y[j] += x[c] * float64(w[j*k+c])
			}
		}
		return y
	}
	r := rand.New(rand.NewPCG(5, 5))
	var sum [2][n]float64
	const rows = 64
	for range rows {
		x := make([]float64, k)
		for c := range x {
			x[c] = rg.ChannelMean[c] + r.NormFloat64()
		}
		a, b := yq(x), yf(x)
		for j := range n {
			// Rounding s·W to int8 moves each weight by at most half a
			// step of its column: the bound on the output's error.
			var peak, l1 float64
			for c := range k {
				peak = max(peak, math.Abs(float64(w[j*k+c])/float64(inv[c])))
				l1 += math.Abs(x[c] * float64(inv[c]))
			}
			if d := math.Abs(a[j] - b[j]); d > l1*peak/127/2*1.001+1e-4 {
				t.Fatalf("column %d: int8 %v, fp32 %v: off by %v, bound %v", j, a[j], b[j], d, l1*peak/127/2)
			}
			sum[0][j] += a[j] / rows
			sum[1][j] += b[j] / rows
		}
	}
	// The mean input is the calibrated one: the means agree far closer
	// than single outputs.
	a, b := yq(rg.ChannelMean), yf(rg.ChannelMean)
	for j := range n {
		if math.Abs(a[j]-b[j]) > 1e-3 {
			t.Fatalf("column %d at the mean input: int8 %v, fp32 %v", j, a[j], b[j])
		}
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
		{"two graphs", append(slices.Clone(valid), onnxpb.AppendBytes(nil, onnxpb.ModelGraph, nil)...), nil, ErrMalformed, "two graph"},
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
	// A range that is not finite is no calibration.
	for _, bad := range []Range{{Min: float32(math.NaN()), Max: 1}, {Min: 0, Max: float32(math.Inf(1))}, {Min: 1, Max: -1},
		{Min: -1, Max: 1, ChannelMean: []float64{math.NaN()}}} {
		o := DefaultOptions()
		o.Ranges = map[string]Range{"x": bad}
		if _, _, err := Graph(valid, o); !errors.Is(err, ErrUncalibrated) {
			t.Errorf("range %+v: err = %v, want %v", bad, err, ErrUncalibrated)
		}
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
	// A whole (tiny) encoder: self-attention for the fusion to match.
	var b bytes.Buffer
	if err := testmodel.WriteONNX(&b, testmodel.Spec{Name: "fuzz", Layers: 1, Hidden: 16, Heads: 2, FFN: 16, MaxPositions: 8, TypeVocab: 2, Vocab: 8, Seed: 1, InitStd: 0.3}); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	perBatch := DefaultOptions()
	perBatch.Activations = PerBatch
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, o := range []Options{DefaultOptions(), perBatch} {
			out, _, err := Graph(in, o)
			if err != nil {
				continue
			}
			if _, err := fields(out); err != nil {
				t.Fatalf("output does not parse: %v", err)
			}
		}
	})
}

// graphFields parses model and its graph's fields.
// encodeNode writes a NodeProto in the default domain.
func encodeNode(name, op string, inputs, outputs []string, attrs ...[]byte) []byte {
	return onnxpb.EncodeNode("", name, op, inputs, outputs, attrs...)
}

func graphFields(t testing.TB, model []byte) (*modelProto, []field) {
	t.Helper()
	m, err := parseModel(model)
	if err != nil {
		t.Fatal(err)
	}
	gf, err := fields(m.top[m.graphAt].Val)
	if err != nil {
		t.Fatal(err)
	}
	return m, gf
}

// editGraph returns model with each node passed through edit (nil: drop
// it; more than one: replace it by them) and extra initializers and nodes
// (put first) added.
func editGraph(t testing.TB, model []byte, edit func(n *node) [][]byte, first [][]byte, inits ...[]byte) []byte {
	t.Helper()
	m, gf := graphFields(t, model)
	var g []byte
	for _, b := range first {
		g = onnxpb.AppendBytes(g, onnxpb.GraphNode, b)
	}
	for _, f := range gf {
		if f.Num != onnxpb.GraphNode {
			g = append(g, f.Raw...)
			continue
		}
		n, err := parseNode(f.Val)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range edit(n) {
			g = onnxpb.AppendBytes(g, onnxpb.GraphNode, b)
		}
	}
	for _, b := range inits {
		g = onnxpb.AppendBytes(g, onnxpb.GraphInitializer, b)
	}
	return m.with(g)
}

// withInput returns model with a graph input of int64 elements and the
// given rank added.
func withInput(t testing.TB, model []byte, name string, rank int) []byte {
	t.Helper()
	m, err := parseModel(model)
	if err != nil {
		t.Fatal(err)
	}
	var shape []byte
	for range rank {
		shape = onnxpb.AppendBytes(shape, onnxpb.ShapeDim, onnxpb.AppendString(nil, onnxpb.DimParam, "d"))
	}
	tt := onnxpb.AppendVarint(nil, onnxpb.TensorElemType, onnxpb.DataTypeInt64)
	tt = onnxpb.AppendBytes(tt, onnxpb.TensorShape, shape)
	vi := onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.ValueInfoName, name), onnxpb.ValueInfoType, onnxpb.AppendBytes(nil, onnxpb.TypeTensorType, tt))
	return m.with(onnxpb.AppendBytes(slices.Clone(m.top[m.graphAt].Val), onnxpb.GraphInput, vi))
}

// checkOrder fails unless every node input of model is a graph input, an
// initializer or an output of an earlier node.
func checkOrder(t testing.TB, model []byte) {
	t.Helper()
	_, nodes, inits := graphOps(t, model)
	_, gf := graphFields(t, model)
	known := map[string]bool{"": true}
	for name := range inits {
		known[name] = true
	}
	for _, f := range gf {
		if f.Num == onnxpb.GraphInput {
			v, err := onnxpb.ParseValueInfo(f.Val)
			if err != nil {
				t.Fatal(err)
			}
			known[v.Name] = true
		}
	}
	for _, n := range nodes {
		for _, in := range n.inputs {
			if !known[in] {
				t.Fatalf("%s (%s) reads %q before anything writes it", n.name, n.opType, in)
			}
		}
		for _, o := range n.outputs {
			known[o] = true
		}
	}
}

// TestAttentionFusionMatchesOnlyItsForm: the forms of a BERT export that
// mean the same attention are fused (the scaling as a Mul by 1/√d, shapes
// and scalars in Constant nodes); anything that changes what it computes,
// or reads its intermediate values elsewhere, leaves the block as it is,
// its projections quantized one by one.
func TestAttentionFusionMatchesOnlyItsForm(t *testing.T) {
	in := tinyONNX(t)
	d := float32(testmodel.Tiny.Hidden / testmodel.Tiny.Heads)
	sqrtD := float32(math.Sqrt(float64(d)))
	f32 := func(name string, v float32) []byte {
		return encodeTensor(name, onnxpb.DataTypeFloat, float32Bytes([]float32{v}))
	}
	self := func(n *node, op string) bool {
		return n.opType == op && strings.Contains(n.name, "attention/self")
	}
	keep := func(n *node) [][]byte { return [][]byte{n.raw} }
	constNode := func(out string, t []byte) []byte {
		return encodeNode(out+"_node", "Constant", nil, []string{out}, onnxpb.AppendVarint(onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.AttrName, "value"), onnxpb.AttrT, t), onnxpb.AttrType, 4))
	}
	i64 := func(name string, vs ...int64) []byte {
		b := make([]byte, 8*len(vs))
		for i, v := range vs {
			binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
		}
		return encodeTensor(name, onnxpb.DataTypeInt64, b, int64(len(vs)))
	}
	heads := int64(testmodel.Tiny.Heads)
	scalarI64 := func(name string, v int64) []byte {
		return encodeTensor(name, onnxpb.DataTypeInt64, binary.LittleEndian.AppendUint64(nil, uint64(v)))
	}
	// computedShapes writes each attention Reshape's shape as PyTorch
	// exports x.view(x.size()[:k] + (…)): Concat(Unsqueeze(Gather(Shape(x),
	// i))…, constants), the Gathers taking indices first and second.
	computedShapes := func(first, second string) []byte {
		return editGraph(t, in, func(n *node) [][]byte {
			if !self(n, "Reshape") {
				return keep(n)
			}
			p := n.name + "/shape"
			tail := "c_heads_size"
			if !strings.Contains(n.name, "query") && !strings.Contains(n.name, "key") && !strings.Contains(n.name, "value") {
				tail = "c_hidden"
			}
			return [][]byte{
				encodeNode(p+"/Shape", "Shape", []string{n.inputs[0]}, []string{p + "/s"}),
				encodeNode(p+"/Gather0", "Gather", []string{p + "/s", first}, []string{p + "/g0"}, intAttr("axis", 0)),
				encodeNode(p+"/Gather1", "Gather", []string{p + "/s", second}, []string{p + "/g1"}, intAttr("axis", 0)),
				encodeNode(p+"/Unsqueeze0", "Unsqueeze", []string{p + "/g0", "c_axis0"}, []string{p + "/u0"}),
				encodeNode(p+"/Unsqueeze1", "Unsqueeze", []string{p + "/g1", "c_axis0"}, []string{p + "/u1"}),
				encodeNode(p+"/Concat", "Concat", []string{p + "/u0", p + "/u1", tail}, []string{p + "/shape"}, intAttr("axis", 0)),
				encodeNode(n.name, "Reshape", []string{n.inputs[0], p + "/shape"}, n.outputs),
			}
		}, nil, scalarI64("c_0", 0), scalarI64("c_1", 1), i64("c_axis0", 0), i64("c_heads_size", heads, int64(d)), i64("c_hidden", heads*int64(d)))
	}
	// hfMask computes the padding mask in the order of transformers'
	// get_extended_attention_mask: mask[:, None, None, :] first, then the
	// cast and (1 − m) · c.
	hfMask := func(second int64) []byte {
		_, nodes, _ := graphOps(t, in)
		byOp := map[string]*node{}
		for _, n := range nodes {
			if strings.HasPrefix(n.name, "/bert/") && strings.Count(n.name, "/") == 2 {
				byOp[n.opType] = n
			}
		}
		cast, sub, mul, unsq := byOp["Cast"], byOp["Sub"], byOp["Mul"], byOp["Unsqueeze"]
		if cast == nil || sub == nil || mul == nil || unsq == nil {
			t.Fatalf("no mask arithmetic among %v", byOp)
		}
		return editGraph(t, in, func(n *node) [][]byte {
			switch n.name {
			case cast.name, sub.name, mul.name:
				return nil
			case unsq.name:
				return [][]byte{
					encodeNode("hf/Unsqueeze", "Unsqueeze", []string{cast.inputs[0], "c_axis1"}, []string{"hf/u1"}),
					encodeNode("hf/Unsqueeze_1", "Unsqueeze", []string{"hf/u1", "c_axis2"}, []string{"hf/u2"}),
					encodeNode("hf/Cast", "Cast", []string{"hf/u2"}, []string{"hf/f"}, intAttr("to", onnxpb.DataTypeFloat)),
					encodeNode("hf/Sub", "Sub", []string{sub.inputs[0], "hf/f"}, []string{"hf/inv"}),
					encodeNode("hf/Mul", "Mul", []string{"hf/inv", mul.inputs[1]}, n.outputs),
				}
			}
			return keep(n)
		}, nil, i64("c_axis1", 1), i64("c_axis2", second))
	}
	for _, tc := range []struct {
		name  string
		model []byte
		opts  func(*Options)
		want  int // attentions fused
	}{
		{"as exported", in, nil, 2},
		{"kept on request", in, func(o *Options) { o.KeepAttention = true }, 0},
		{"scaled by a Mul", editGraph(t, in, func(n *node) [][]byte {
			if self(n, "Div") {
				return [][]byte{encodeNode(n.name, "Mul", []string{"inv_sqrt_d", n.inputs[0]}, n.outputs)}
			}
			return keep(n)
		}, nil, f32("inv_sqrt_d", 1/sqrtD)), nil, 2},
		{"constants as Constant nodes", editGraph(t, in, func(n *node) [][]byte {
			switch {
			case self(n, "Div"):
				return [][]byte{encodeNode(n.name, "Div", []string{n.inputs[0], "c_sqrt_d"}, n.outputs)}
			case self(n, "Reshape") && strings.Contains(n.name, "query"):
				return [][]byte{encodeNode(n.name, "Reshape", []string{n.inputs[0], "c_split"}, n.outputs)}
			}
			return keep(n)
		}, [][]byte{constNode("c_sqrt_d", f32("", sqrtD)), constNode("c_split", i64("", 0, 0, heads, int64(d)))}), nil, 2},
		{"shapes computed as PyTorch exports them", computedShapes("c_0", "c_1"), nil, 2},
		{"shapes computed from other dimensions", computedShapes("c_1", "c_0"), nil, 0},
		{"mask unsqueezed before its cast", hfMask(2), nil, 2},
		{"mask unsqueezed twice at 1", hfMask(1), nil, 2},
		{"mask unsqueezed elsewhere", hfMask(3), nil, 0},
		{"another scale", editGraph(t, in, func(n *node) [][]byte {
			if self(n, "Div") {
				return [][]byte{encodeNode(n.name, "Div", []string{n.inputs[0], "not_sqrt_d"}, n.outputs)}
			}
			return keep(n)
		}, nil, f32("not_sqrt_d", sqrtD+1)), nil, 0},
		{"softmax over another axis", editGraph(t, in, func(n *node) [][]byte {
			if n.opType == "Softmax" {
				return [][]byte{encodeNode(n.name, "Softmax", n.inputs, n.outputs, intAttr("axis", 2))}
			}
			return keep(n)
		}, nil), nil, 0},
		{"a mild mask", editGraph(t, in, func(n *node) [][]byte {
			if n.opType == "Mul" && n.name == "/bert/Mul" {
				return [][]byte{encodeNode(n.name, "Mul", []string{n.inputs[0], "mild"}, n.outputs)}
			}
			return keep(n)
		}, nil, f32("mild", -100)), nil, 0},
		{"other heads", editGraph(t, in, func(n *node) [][]byte {
			if self(n, "Reshape") && strings.Contains(n.name, "key") {
				return [][]byte{encodeNode(n.name, "Reshape", []string{n.inputs[0], "split1"}, n.outputs)}
			}
			return keep(n)
		}, nil, i64("split1", 0, 0, 1, heads*int64(d))), nil, 0},
		{"probabilities read elsewhere", editGraph(t, in, func(n *node) [][]byte {
			if n.opType == "Softmax" && strings.Contains(n.name, "layer.0") {
				return [][]byte{n.raw, encodeNode("spy", "Identity", n.outputs, []string{"spied"})}
			}
			return keep(n)
		}, nil), nil, 1},
		{"query in fp32", in, func(o *Options) { o.Exclude = regexp.MustCompile(`layer\.1/attention/self/query`) }, 1},
		{"a 1-D mask (key lengths to QAttention)", withInput(t, editGraph(t, in, func(n *node) [][]byte {
			if n.opType == "Cast" && n.inputs[0] == "attention_mask" {
				return [][]byte{encodeNode(n.name, "Cast", []string{"mask1d"}, n.outputs, intAttr("to", onnxpb.DataTypeFloat))}
			}
			return keep(n)
		}, nil), "mask1d", 1), nil, 0},
		{"a 2-D mask input of our own", withInput(t, editGraph(t, in, func(n *node) [][]byte {
			if n.opType == "Cast" && n.inputs[0] == "attention_mask" {
				return [][]byte{encodeNode(n.name, "Cast", []string{"mask2d"}, n.outputs, intAttr("to", onnxpb.DataTypeFloat))}
			}
			return keep(n)
		}, nil), "mask2d", 2), nil, 2},
		{"a node with a subgraph", editGraph(t, in, keep, [][]byte{onnxpb.EncodeNode("", "sub", "If", []string{"cond"}, []string{"branch"},
			onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.AttrName, "then_branch"), onnxpb.AttrG, nil))}), nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultOptions()
			opts.Activations = PerBatch
			if tc.opts != nil {
				tc.opts(&opts)
			}
			out, rep, err := Graph(tc.model, opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name != "a node with a subgraph" {
				checkOrder(t, out)
			}
			ops, _, _ := graphOps(t, out)
			if rep.Attentions != tc.want || ops["com.microsoft:QAttention"] != tc.want {
				t.Fatalf("%d attentions fused (%d QAttention nodes), want %d", rep.Attentions, ops["com.microsoft:QAttention"], tc.want)
			}
			// A block left as it is keeps its 2 products, 4 Transposes
			// and Softmax.
			if unfused := 2 - tc.want; ops[":Transpose"] != 4*unfused || ops[":Softmax"] != unfused {
				t.Fatalf("%d blocks unfused, ops %v", unfused, ops)
			}
			// Every encoder weight that is not excluded is quantized.
			if want := 12 - len(rep.Kept) + 2; len(rep.Quantized) != want {
				t.Fatalf("quantized %d, kept %q", len(rep.Quantized), rep.Kept)
			}
		})
	}
}
