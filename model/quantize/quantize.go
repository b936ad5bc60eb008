package quantize

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"

	"github.com/rerank/rerank/internal/onnxpb"
)

// Granularity is how weight scales are shared.
type Granularity string

// The weight scale granularities.
const (
	// PerChannel gives every output column of a weight its own scale (the
	// default: a column with small weights keeps its precision).
	PerChannel Granularity = "per-channel"
	// PerTensor gives a whole weight one scale.
	PerTensor Granularity = "per-tensor"
)

// DefaultExclude matches the nodes of a sequence-classification head (the
// pooler and the classifier): they run on one row per pair, so quantizing
// them saves no time and costs agreement.
const DefaultExclude = `(?i)(^|/)(pooler|classifier)(/|$)`

// Options selects what Graph quantizes. The zero value is not valid; start
// from DefaultOptions.
type Options struct {
	// Granularity of the weight scales.
	Granularity Granularity
	// OpTypes are the operators whose constant weight is quantized:
	// "MatMul", "Gemm" or both.
	OpTypes []string
	// Exclude keeps in fp32 every node whose name matches it (nil: none).
	Exclude *regexp.Regexp
	// KeepEdgeLayers keeps the first and the last encoder layer (node names
	// with "layer.N") in fp32.
	KeepEdgeLayers bool
	// MinColumns keeps in fp32 weights with fewer output columns (a
	// one-logit classifier has one).
	MinColumns int64
}

// DefaultOptions quantizes the weight MatMuls and Gemms of the encoder with
// per-channel scales and keeps the classification head in fp32.
func DefaultOptions() Options {
	return Options{
		Granularity: PerChannel,
		OpTypes:     []string{"MatMul", "Gemm"},
		Exclude:     regexp.MustCompile(DefaultExclude),
		MinColumns:  16,
	}
}

// Validate reports options Graph cannot use.
func (o Options) Validate() error {
	if o.Granularity != PerChannel && o.Granularity != PerTensor {
		return fmt.Errorf("quantize: granularity %q: want %s or %s", o.Granularity, PerChannel, PerTensor)
	}
	if len(o.OpTypes) == 0 {
		return errors.New("quantize: no operator types to quantize")
	}
	for _, op := range o.OpTypes {
		if op != "MatMul" && op != "Gemm" {
			return fmt.Errorf("quantize: operator %q: want MatMul or Gemm", op)
		}
	}
	if o.MinColumns < 1 {
		return fmt.Errorf("quantize: min columns %d: want at least 1", o.MinColumns)
	}
	return nil
}

// Report says what Graph did.
type Report struct {
	Quantized   []string // names of the quantized nodes
	Kept        []string // weight MatMul/Gemm nodes left in fp32, with why
	WeightBytes [2]int64 // bytes of the quantized weights before and after
}

// ErrUnsupported reports a model the rewrite cannot handle.
var ErrUnsupported = errors.New("model not supported by the quantizer")

// minOpset is the default-domain opset of DynamicQuantizeLinear.
const minOpset = 11

var layerRE = regexp.MustCompile(`(?:^|/)layer\.(\d+)(?:/|$)`)

// Graph rewrites a serialized ONNX ModelProto.
func Graph(model []byte, opts Options) ([]byte, Report, error) {
	var rep Report
	if err := opts.Validate(); err != nil {
		return nil, rep, err
	}
	top, err := fields(model)
	if err != nil {
		return nil, rep, err
	}
	graphAt := -1
	opset := int64(-1)
	hasMicrosoft := false
	for i, f := range top {
		switch f.Num {
		case onnxpb.ModelGraph:
			graphAt = i
		case onnxpb.ModelOpsetImport:
			fs, err := fields(f.Val)
			if err != nil {
				return nil, rep, err
			}
			domain, version := "", int64(0)
			for _, g := range fs {
				switch g.Num {
				case onnxpb.OpsetDomain:
					domain = string(g.Val)
				case onnxpb.OpsetVersion:
					version = int64(g.V)
				}
			}
			switch domain {
			case "", "ai.onnx":
				opset = version
			case domainMicrosoft:
				hasMicrosoft = true
			}
		}
	}
	if graphAt < 0 {
		return nil, rep, fmt.Errorf("%w: no graph", ErrMalformed)
	}
	if opset < minOpset {
		return nil, rep, fmt.Errorf("%w: default opset %d, DynamicQuantizeLinear needs %d (re-export with a newer opset)", ErrUnsupported, opset, minOpset)
	}
	graph, microsoft, err := rewriteGraph(top[graphAt].Val, opts, &rep)
	if err != nil {
		return nil, rep, err
	}
	out := make([]byte, 0, len(model)/3)
	for i, f := range top {
		if i == graphAt {
			out = onnxpb.AppendBytes(out, onnxpb.ModelGraph, graph)
			continue
		}
		out = append(out, f.Raw...)
	}
	if microsoft && !hasMicrosoft {
		op := onnxpb.AppendString(nil, onnxpb.OpsetDomain, domainMicrosoft)
		out = onnxpb.AppendBytes(out, onnxpb.ModelOpsetImport, onnxpb.AppendVarint(op, onnxpb.OpsetVersion, 1))
	}
	return out, rep, nil
}

// rewriter holds one graph's rewrite.
type rewriter struct {
	opts    Options
	rep     *Report
	inits   map[string]*tensor
	names   map[string]bool // every value and node name in the graph
	quantOf map[string][3]string
	nodes   [][]byte
	extra   [][]byte // new initializers
	// microsoft is set when a node of the com.microsoft domain was written.
	microsoft bool
}

func rewriteGraph(b []byte, opts Options, rep *Report) ([]byte, bool, error) {
	gf, err := fields(b)
	if err != nil {
		return nil, false, err
	}
	r := &rewriter{opts: opts, rep: rep, inits: map[string]*tensor{}, names: map[string]bool{}, quantOf: map[string][3]string{}}
	var nodes []*node
	uses := map[string]int{}     // consumers of each value, graph outputs included
	initName := map[int]string{} // graph field index → initializer name
	for i, f := range gf {
		switch f.Num {
		case onnxpb.GraphNode:
			n, err := parseNode(f.Val)
			if err != nil {
				return nil, false, err
			}
			nodes = append(nodes, n)
			r.names[n.name] = true
			for _, in := range n.inputs {
				uses[in]++
			}
			for _, out := range n.outputs {
				r.names[out] = true
			}
		case onnxpb.GraphInitializer:
			t, err := parseTensor(f.Val)
			if err != nil {
				return nil, false, err
			}
			r.inits[t.name] = t
			r.names[t.name] = true
			initName[i] = t.name
		case onnxpb.GraphOutput:
			vf, err := fields(f.Val)
			if err != nil {
				return nil, false, err
			}
			for _, v := range vf {
				if v.Num == onnxpb.ValueInfoName {
					uses[string(v.Val)]++
				}
			}
		}
	}
	first, last := layerRange(nodes)

	// Which nodes to quantize, how many quantized nodes read each input
	// (one DynamicQuantizeLinear is shared between them), and which bias
	// Adds fold into the quantized node.
	weights := make([]*tensor, len(nodes))
	readers := map[string]int{}
	consumer := map[string]int{} // value → index of its only consumer node
	for i, n := range nodes {
		for _, in := range n.inputs {
			consumer[in] = i
		}
	}
	for i, n := range nodes {
		w, why := r.candidate(n, first, last)
		if w == nil && why != "" {
			rep.Kept = append(rep.Kept, n.name+": "+why)
		}
		if weights[i] = w; w != nil {
			readers[n.inputs[0]]++
		}
	}
	folded := map[int]bool{}
	converted := map[string]int{} // quantized consumers of each weight
	for i, n := range nodes {
		if folded[i] {
			continue
		}
		w := weights[i]
		if w == nil {
			r.nodes = append(r.nodes, n.raw)
			continue
		}
		var bias *node
		if y := n.outputs[0]; uses[y] == 1 && n.opType == "MatMul" {
			if k := consumer[y]; k > i && r.isBias(nodes[k], y, w.dims[1]) {
				bias = nodes[k]
				folded[k] = true
			}
		}
		if err := r.quantize(n, w, bias, readers[n.inputs[0]] > 1); err != nil {
			return nil, false, err
		}
		converted[w.name]++
		rep.Quantized = append(rep.Quantized, n.name)
	}

	dropped := map[string]bool{}
	for name, k := range converted {
		if k == uses[name] {
			dropped[name] = true
		}
	}
	out := make([]byte, 0, len(b)/3)
	nodesDone := false
	for i, f := range gf {
		switch f.Num {
		case onnxpb.GraphNode:
			if !nodesDone {
				for _, n := range r.nodes {
					out = onnxpb.AppendBytes(out, onnxpb.GraphNode, n)
				}
				nodesDone = true
			}
			continue
		case onnxpb.GraphInitializer:
			if dropped[initName[i]] {
				continue
			}
		case onnxpb.GraphInput:
			// IR < 4 lists initializers among the inputs too.
			vf, err := fields(f.Val)
			if err != nil {
				return nil, false, err
			}
			drop := false
			for _, v := range vf {
				if v.Num == onnxpb.ValueInfoName && dropped[string(v.Val)] {
					drop = true
				}
			}
			if drop {
				continue
			}
		}
		out = append(out, f.Raw...)
	}
	for _, t := range r.extra {
		out = onnxpb.AppendBytes(out, onnxpb.GraphInitializer, t)
	}
	return out, r.microsoft, nil
}

// layerRange is the lowest and highest encoder layer number in node names
// (-1, -1 when none has one).
func layerRange(nodes []*node) (first, last int) {
	first, last = -1, -1
	for _, n := range nodes {
		m := layerRE.FindStringSubmatch(n.name)
		if m == nil {
			continue
		}
		k, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		if first < 0 || k < first {
			first = k
		}
		if k > last {
			last = k
		}
	}
	return first, last
}

// candidate returns the weight of a node to quantize, or nil and why not
// ("" for nodes that are not weight MatMuls or Gemms at all).
func (r *rewriter) candidate(n *node, first, last int) (*tensor, string) {
	if n.domain != "" && n.domain != "ai.onnx" || !slices.Contains(r.opts.OpTypes, n.opType) || len(n.inputs) < 2 {
		return nil, ""
	}
	w := r.inits[n.inputs[1]]
	if w == nil || len(n.outputs) != 1 {
		return nil, ""
	}
	if w.dataType != onnxpb.DataTypeFloat || len(w.dims) != 2 || w.dims[0] < 1 || w.dims[1] < 1 || w.dims[0] > 1<<20 || w.dims[1] > 1<<20 {
		return nil, "weight is not a 2-D float tensor"
	}
	if w.external {
		return nil, "weight is stored outside the model file"
	}
	if r.opts.Exclude != nil && r.opts.Exclude.MatchString(n.name) {
		return nil, "excluded by name"
	}
	if r.opts.KeepEdgeLayers && first >= 0 {
		if m := layerRE.FindStringSubmatch(n.name); m != nil {
			if k, _ := strconv.Atoi(m[1]); k == first || k == last {
				return nil, "first or last layer kept in fp32"
			}
		}
	}
	cols := w.dims[1]
	if n.opType == "Gemm" {
		if n.attrInt("transA", 0) != 0 || n.attrFloat("alpha", 1) != 1 || n.attrFloat("beta", 1) != 1 {
			return nil, "Gemm with transA, alpha or beta"
		}
		if n.attrInt("transB", 0) != 0 {
			cols = w.dims[0]
		}
	}
	if cols < r.opts.MinColumns {
		return nil, fmt.Sprintf("%d output columns (< %d)", cols, r.opts.MinColumns)
	}
	return w, ""
}

// fresh returns name, or name with a numeric suffix, unused in the graph.
func (r *rewriter) fresh(name string) string {
	s := name
	for k := 1; r.names[s]; k++ {
		s = name + "_" + strconv.Itoa(k)
	}
	r.names[s] = true
	return s
}

// isBias reports whether add is Add(y, b) or Add(b, y) with b a float
// initializer of n elements: a bias the quantized node can add itself.
func (r *rewriter) isBias(add *node, y string, n int64) bool {
	if add.opType != "Add" || add.domain != "" || len(add.inputs) != 2 || len(add.outputs) != 1 {
		return false
	}
	other := add.inputs[0]
	if other == y {
		other = add.inputs[1]
	}
	b := r.inits[other]
	return b != nil && b.dataType == onnxpb.DataTypeFloat && len(b.dims) == 1 && b.dims[0] == n && !b.external
}

// quantize replaces n, a MatMul or Gemm on weight w (and the bias Add that
// follows it, if any), with the operators onnxruntime's CPU provider runs
// its dynamic quantization in (the form its quantize_dynamic output is
// fused into):
//
//	y = DynamicQuantizeMatMul(x, w_q, w_scale, w_zp, bias)
//
// or, when several quantized nodes read x, one shared
//
//	x_q, x_scale, x_zp = DynamicQuantizeLinear(x)
//	y = MatMulIntegerToFloat(x_q, w_q, x_scale, w_scale, x_zp, w_zp, bias)
//
// Both quantize x per tensor to uint8 at run time, multiply in integers
// (VNNI where the CPU has it) and scale the int32 sums back to float.
func (r *rewriter) quantize(n *node, w *tensor, biasAdd *node, shared bool) error {
	vals, err := w.float32s()
	if err != nil {
		return err
	}
	rows, cols := w.dims[0], w.dims[1]
	transB := n.opType == "Gemm" && n.attrInt("transB", 0) != 0
	if transB {
		vals = transpose(vals, rows, cols)
		rows, cols = cols, rows
	}
	wq, scales := quantizeWeight(vals, rows, cols, r.opts.Granularity)
	r.rep.WeightBytes[0] += 4 * rows * cols
	r.rep.WeightBytes[1] += rows*cols + 4*int64(len(scales))
	r.microsoft = true

	base := w.name
	if transB {
		base += "_T"
	}
	wqName, wsName, wzName := r.fresh(base+"_quantized"), r.fresh(base+"_scale"), r.fresh(base+"_zero_point")
	var scaleDims []int64
	if len(scales) > 1 {
		scaleDims = []int64{int64(len(scales))}
	}
	r.extra = append(r.extra,
		encodeTensor(wqName, onnxpb.DataTypeInt8, wq, rows, cols),
		encodeTensor(wsName, onnxpb.DataTypeFloat, float32Bytes(scales), scaleDims...),
		encodeTensor(wzName, onnxpb.DataTypeInt8, make([]byte, len(scales)), scaleDims...))

	y, bias := n.outputs[0], ""
	var after *node // a Gemm's C when it is not a bias vector
	switch {
	case biasAdd != nil:
		y = biasAdd.outputs[0]
		bias = biasAdd.inputs[0]
		if bias == n.outputs[0] {
			bias = biasAdd.inputs[1]
		}
	case n.opType == "Gemm" && len(n.inputs) > 2 && n.inputs[2] != "":
		if c := r.inits[n.inputs[2]]; c != nil && c.dataType == onnxpb.DataTypeFloat && len(c.dims) == 1 && c.dims[0] == cols {
			bias = n.inputs[2]
		} else {
			after, y = n, r.fresh(n.name+"_output_nobias")
		}
	}
	x := n.inputs[0]
	if !shared {
		r.nodes = append(r.nodes, encodeNodeIn(domainMicrosoft, r.fresh(n.name+"_quant"), "DynamicQuantizeMatMul",
			[]string{x, wqName, wsName, wzName, bias}, []string{y}))
	} else {
		q, ok := r.quantOf[x]
		if !ok {
			q = [3]string{r.fresh(x + "_quantized"), r.fresh(x + "_scale"), r.fresh(x + "_zero_point")}
			r.quantOf[x] = q
			r.nodes = append(r.nodes, encodeNode(r.fresh(x+"_QuantizeLinear"), "DynamicQuantizeLinear", []string{x}, q[:]))
		}
		r.nodes = append(r.nodes, encodeNodeIn(domainMicrosoft, r.fresh(n.name+"_quant"), "MatMulIntegerToFloat",
			[]string{q[0], wqName, q[1], wsName, q[2], wzName, bias}, []string{y}))
	}
	if after != nil {
		r.nodes = append(r.nodes, encodeNode(r.fresh(n.name+"_quant_add_c"), "Add", []string{y, after.inputs[2]}, after.outputs))
	}
	return nil
}

// quantizeWeight maps a [rows, cols] weight to symmetric int8 (zero point 0,
// values in [-127, 127], round half to even) with one scale per column or
// one for the tensor.
func quantizeWeight(w []float32, rows, cols int64, g Granularity) ([]byte, []float32) {
	nScales := cols
	if g == PerTensor {
		nScales = 1
	}
	maxAbs := make([]float64, nScales)
	for i, v := range w {
		k := int64(i) % cols % nScales
		maxAbs[k] = math.Max(maxAbs[k], math.Abs(float64(v)))
	}
	scales := make([]float32, nScales)
	for k, m := range maxAbs {
		if m == 0 {
			m = 1 // an all-zero column: any scale reproduces it
		}
		scales[k] = float32(m / 127)
	}
	q := make([]byte, rows*cols)
	for i, v := range w {
		s := float64(scales[int64(i)%cols%nScales])
		x := math.RoundToEven(float64(v) / s)
		q[i] = byte(int8(max(-127, min(127, x))))
	}
	return q, scales
}

func transpose(w []float32, rows, cols int64) []float32 {
	out := make([]float32, len(w))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = w[i*cols+j]
		}
	}
	return out
}

func float32Bytes(vs []float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}
