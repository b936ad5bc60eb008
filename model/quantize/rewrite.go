package quantize

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/rerank/rerank/internal/onnxpb"
)

// rewriter holds one graph's rewrite.
type rewriter struct {
	opts    Options
	rep     *Report
	inits   map[string]*tensor
	names   map[string]bool      // every value and node name in the graph
	quantOf map[string][3]string // activation → its quantized value, scale and zero point
	maskOf  map[string]string    // padding mask input → its int32 form
	// quantized holds the weights written in int8.
	quantized map[string]bool
	smooth    map[string][]float64 // activation → its smoothing factors
	nodes     [][]byte
	read      map[string]bool // values the nodes written so far read
	extra     [][]byte        // new initializers
	// microsoft is set when a node of the com.microsoft domain was written.
	microsoft bool
}

// graphProto is a parsed GraphProto and the nodes a rewrite quantizes.
type graphProto struct {
	nodes    []*node
	inits    map[string]*tensor
	names    map[string]bool // every value and node name in the graph
	outputs  map[string]bool // the graph's outputs
	initName map[int]string  // graph field index → initializer name
	weights  []*tensor       // per node: the weight to quantize, or nil
	kept     []string        // weight nodes left in fp32, with why
	readers  map[string]int  // quantized nodes reading each activation
	inputs   map[string]onnxpb.ValueInfo
	// subgraphs is set when a node holds a graph, which may read values
	// unseen: the rewrite then matches no attention and drops only the
	// weights it quantized.
	subgraphs bool
}

func parseGraph(gf []field, opts Options) (*graphProto, error) {
	g := &graphProto{inits: map[string]*tensor{}, names: map[string]bool{},
		outputs: map[string]bool{}, initName: map[int]string{}, readers: map[string]int{}, inputs: map[string]onnxpb.ValueInfo{}}
	for i, f := range gf {
		switch f.Num {
		case onnxpb.GraphNode:
			n, err := parseNode(f.Val)
			if err != nil {
				return nil, err
			}
			g.nodes = append(g.nodes, n)
			g.names[n.name] = true
			g.subgraphs = g.subgraphs || n.pb.Subgraph
			for _, out := range n.outputs {
				g.names[out] = true
			}
		case onnxpb.GraphInitializer:
			t, err := parseTensor(f.Val)
			if err != nil {
				return nil, err
			}
			g.inits[t.name] = t
			g.names[t.name] = true
			g.initName[i] = t.name
		case onnxpb.GraphOutput:
			for v, err := range onnxpb.All(f.Val) {
				if err != nil {
					return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
				}
				if v.Num == onnxpb.ValueInfoName {
					g.outputs[string(v.Val)] = true
				}
			}
		case onnxpb.GraphInput:
			v, err := onnxpb.ParseValueInfo(f.Val)
			if err != nil {
				return nil, err
			}
			g.inputs[v.Name] = v
			g.names[v.Name] = true
		}
	}
	first, last := layerRange(g.nodes)
	g.weights = make([]*tensor, len(g.nodes))
	for i, n := range g.nodes {
		w, why := g.candidate(n, opts, first, last)
		if w == nil && why != "" {
			g.kept = append(g.kept, n.name+": "+why)
		}
		if g.weights[i] = w; w != nil {
			g.readers[n.inputs[0]]++
		}
	}
	return g, nil
}

func rewriteGraph(b []byte, opts Options, rep *Report) ([]byte, bool, error) {
	gf, err := fields(b)
	if err != nil {
		return nil, false, err
	}
	g, err := parseGraph(gf, opts)
	if err != nil {
		return nil, false, err
	}
	rep.Kept = append(rep.Kept, g.kept...)
	r := &rewriter{opts: opts, rep: rep, inits: g.inits, names: g.names, quantOf: map[string][3]string{}, maskOf: map[string]string{}, quantized: map[string]bool{}, read: map[string]bool{}}
	nodes, weights, readers, initName := g.nodes, g.weights, g.readers, g.initName

	if opts.Activations == Static && opts.Smooth > 0 {
		r.smooth = smoothing(g, opts)
		rep.Smoothed = len(r.smooth)
	}

	ix := newGraphIndex(g)
	folded := map[int]bool{} // nodes written as part of another
	var atts []attention
	if !opts.KeepAttention {
		atts, folded = findAttentions(ix)
	}
	attAt := map[int]int{} // node index → the attention written there
	for k, a := range atts {
		attAt[a.first] = k
	}
	for i, n := range nodes {
		if n.opType == "Softmax" {
			rep.Softmaxes++
		}
		if k, ok := attAt[i]; ok {
			a := atts[k]
			if err := r.attention(a, nodes, weights); err != nil {
				return nil, false, err
			}
			for _, p := range a.proj {
				rep.Quantized = append(rep.Quantized, nodes[p.matmul].name)
			}
			continue
		}
		if folded[i] {
			continue
		}
		w := weights[i]
		if w == nil {
			r.emit(n.raw, n.inputs)
			continue
		}
		// The bias Add this product alone feeds folds into it.
		var bias *node
		if y := n.outputs[0]; !g.outputs[y] && n.opType == "MatMul" {
			if c := ix.consumers[y]; len(c) == 1 && c[0] > i && isBias(r.inits, nodes[c[0]], y, w.dims[1]) {
				bias = nodes[c[0]]
				folded[c[0]] = true
			}
		}
		if err := r.quantize(n, w, bias, readers[n.inputs[0]] > 1); err != nil {
			return nil, false, err
		}
		rep.Quantized = append(rep.Quantized, n.name)
	}

	dropped := r.unused(g, ix)
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
			drop := false
			for v, err := range onnxpb.All(f.Val) {
				if err != nil {
					return nil, false, fmt.Errorf("%w: %w", ErrMalformed, err)
				}
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

// unused returns the initializers the rewritten nodes no longer read: the
// weights now quantized, biases folded into a corrected or concatenated
// one, constants of replaced nodes. Only those some node read before go;
// in a graph with subgraphs, which may read them unseen, only the quantized
// weights.
func (r *rewriter) unused(g *graphProto, ix *graphIndex) map[string]bool {
	dropped := map[string]bool{}
	for name := range g.inits {
		if len(ix.consumers[name]) > 0 && !r.read[name] && !g.outputs[name] && (!g.subgraphs || r.quantized[name]) {
			dropped[name] = true
		}
	}
	return dropped
}

// emit appends a node to the rewritten graph, and records the values it
// reads.
func (r *rewriter) emit(raw []byte, inputs []string) {
	r.nodes = append(r.nodes, raw)
	for _, in := range inputs {
		r.read[in] = true
	}
}

// add writes a new node in domain ("": the default) and emits it.
func (r *rewriter) add(domain, name, op string, inputs, outputs []string, attrs ...[]byte) {
	r.microsoft = r.microsoft || domain == onnxpb.DomainMicrosoft
	r.emit(onnxpb.EncodeNode(domain, name, op, inputs, outputs, attrs...), inputs)
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
func (g *graphProto) candidate(n *node, opts Options, first, last int) (*tensor, string) {
	if !n.pb.DefaultDomain() || !slices.Contains(opts.OpTypes, n.opType) || len(n.inputs) < 2 || n.inputs[0] == "" {
		return nil, ""
	}
	w := g.inits[n.inputs[1]]
	if w == nil || len(n.outputs) != 1 {
		return nil, ""
	}
	if w.dataType != onnxpb.DataTypeFloat || len(w.dims) != 2 || w.dims[0] < 1 || w.dims[1] < 1 || w.dims[0] > 1<<20 || w.dims[1] > 1<<20 {
		return nil, "weight is not a 2-D float tensor"
	}
	if w.external {
		return nil, "weight is stored outside the model file"
	}
	if opts.Exclude != nil && opts.Exclude.MatchString(n.name) {
		return nil, "excluded by name"
	}
	if opts.KeepEdgeLayers && first >= 0 {
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
		if n.transB() {
			cols = w.dims[0]
		}
	}
	if cols < opts.MinColumns {
		return nil, fmt.Sprintf("%d output columns (< %d)", cols, opts.MinColumns)
	}
	return w, ""
}

// fresh returns name, or name with a numeric suffix, unused in the graph.
func (r *rewriter) fresh(name string) string { return onnxpb.FreshName(r.names, name) }

// isBias reports whether add is Add(y, b) or Add(b, y) with b a float
// initializer of n elements: a bias the quantized node can add itself.
func isBias(inits map[string]*tensor, add *node, y string, n int64) bool {
	if add.opType != "Add" || add.domain != "" || len(add.inputs) != 2 || len(add.outputs) != 1 {
		return false
	}
	return biasVector(inits[add.other(y)], n)
}

// biasVector reports whether t is a float initializer of n elements, held
// in the file: a bias an integer product can add itself.
func biasVector(t *tensor, n int64) bool {
	return t != nil && t.dataType == onnxpb.DataTypeFloat && len(t.dims) == 1 && t.dims[0] == n && !t.external
}

// quantize replaces n, a MatMul or Gemm on weight w (and the bias Add that
// follows it, if any), with the operators onnxruntime's CPU provider runs
// integer matrix products in. With Static activations, one shared
//
//	x_q = QuantizeLinear(x, x_scale, x_zp)        constants from the calibrated range
//	y   = MatMulIntegerToFloat(x_q, w_q, x_scale, w_scale, x_zp, w_zp, bias)
//
// and with PerBatch, onnxruntime's quantize_dynamic form,
//
//	y = DynamicQuantizeMatMul(x, w_q, w_scale, w_zp, bias)
//
// or, when several quantized nodes read x, one shared
//
//	x_q, x_scale, x_zp = DynamicQuantizeLinear(x)
//	y = MatMulIntegerToFloat(x_q, w_q, x_scale, w_scale, x_zp, w_zp, bias)
//
// All multiply uint8 activations by int8 weights in integers (VNNI where the
// CPU has it) and scale the int32 sums back to float.
func (r *rewriter) quantize(n *node, w *tensor, biasAdd *node, shared bool) error {
	qw, err := r.weight(n, w)
	if err != nil {
		return err
	}
	rows, cols := qw.rows, qw.cols
	wqName, wsName, wzName := r.fresh(qw.base+"_quantized"), r.fresh(qw.base+"_scale"), r.fresh(qw.base+"_zero_point")
	var scaleDims []int64
	if len(qw.scales) > 1 {
		scaleDims = []int64{int64(len(qw.scales))}
	}
	r.extra = append(r.extra,
		encodeTensor(wqName, onnxpb.DataTypeInt8, qw.q, rows, cols),
		encodeTensor(wsName, onnxpb.DataTypeFloat, float32Bytes(qw.scales), scaleDims...),
		encodeTensor(wzName, onnxpb.DataTypeInt8, make([]byte, len(qw.scales)), scaleDims...))

	y, bias := n.outputs[0], ""
	var after *node // a Gemm's C when it is not a bias vector
	switch {
	case biasAdd != nil:
		y = biasAdd.outputs[0]
		bias = biasAdd.other(n.outputs[0])
	case n.opType == "Gemm" && len(n.inputs) > 2 && n.inputs[2] != "":
		if biasVector(r.inits[n.inputs[2]], cols) {
			bias = n.inputs[2]
		} else {
			after, y = n, r.fresh(n.name+"_output_nobias")
		}
	}
	if qw.correction != nil {
		b, err := r.biasValues(bias, qw)
		if err != nil {
			return err
		}
		bias = r.fresh(qw.base + "_bias_corrected")
		r.extra = append(r.extra, encodeTensor(bias, onnxpb.DataTypeFloat, float32Bytes(b), cols))
	}
	x := n.inputs[0]
	if r.opts.Activations == PerBatch && !shared {
		r.add(onnxpb.DomainMicrosoft, r.fresh(n.name+"_quant"), "DynamicQuantizeMatMul",
			[]string{x, wqName, wsName, wzName, bias}, []string{y})
	} else {
		q, err := r.input(x, n.name)
		if err != nil {
			return err
		}
		r.add(onnxpb.DomainMicrosoft, r.fresh(n.name+"_quant"), "MatMulIntegerToFloat",
			[]string{q[0], wqName, q[1], wsName, q[2], wzName, bias}, []string{y})
	}
	if after != nil {
		r.add("", r.fresh(n.name+"_quant_add_c"), "Add", []string{y, after.inputs[2]}, after.outputs)
	}
	return nil
}

// quantWeight is a weight rounded to int8 for an integer product: [rows,
// cols] (a transposed Gemm weight turned back), smoothed, with its scales
// and, for Static activations with channel means, its bias correction.
type quantWeight struct {
	q          []byte
	scales     []float32 // one per column, or one
	correction []float32 // to add to the bias, per column; nil: none
	rows, cols int64
	base       string // the weight's name, for the names of what it becomes
}

func (r *rewriter) weight(n *node, w *tensor) (quantWeight, error) {
	vals, err := w.float32s()
	if err != nil {
		return quantWeight{}, err
	}
	rows, cols := w.dims[0], w.dims[1]
	base := w.name
	if n.transB() {
		vals = transpose(vals, rows, cols)
		rows, cols = cols, rows
		base += "_T"
	}
	if f := r.smooth[n.inputs[0]]; f != nil {
		for i := range vals {
			vals[i] *= float32(f[int64(i)/cols])
		}
	}
	wq, scales := quantizeWeight(vals, rows, cols, r.opts.Granularity)
	var correction []float32
	if r.opts.Activations == Static {
		correction = biasCorrection(vals, wq, scales, rows, cols, r.opts.Ranges[n.inputs[0]].ChannelMean, r.smooth[n.inputs[0]])
	}
	if correction != nil {
		r.rep.Corrected++
	}
	r.rep.WeightBytes[0] += 4 * rows * cols
	r.rep.WeightBytes[1] += rows*cols + 4*int64(len(scales))
	r.quantized[w.name] = true
	return quantWeight{q: wq, scales: scales, correction: correction, rows: rows, cols: cols, base: base}, nil
}

// biasValues is the bias initializer named bias (zeros when "") plus the
// weight's correction.
func (r *rewriter) biasValues(bias string, qw quantWeight) ([]float32, error) {
	b := make([]float32, qw.cols)
	if bias != "" {
		bv, err := r.inits[bias].float32s()
		if err != nil {
			return nil, err
		}
		copy(b, bv)
	}
	for c := range qw.correction {
		b[c] += qw.correction[c]
	}
	return b, nil
}

// input returns the uint8 form of activation x, its scale and its zero
// point, written the first time a quantized node (reader) asks for it:
// QuantizeLinear with the calibrated constants (after smoothing's Mul) for
// Static activations, DynamicQuantizeLinear for PerBatch ones.
func (r *rewriter) input(x, reader string) ([3]string, error) {
	if q, ok := r.quantOf[x]; ok {
		return q, nil
	}
	q := [3]string{r.fresh(x + "_quantized"), r.fresh(x + "_scale"), r.fresh(x + "_zero_point")}
	if r.opts.Activations == PerBatch {
		r.quantOf[x] = q
		r.add("", r.fresh(x+"_QuantizeLinear"), "DynamicQuantizeLinear", []string{x}, q[:])
		return q, nil
	}
	rg, ok := r.opts.Ranges[x]
	if !ok {
		return q, fmt.Errorf("%w: %q (read by %s)", ErrUncalibrated, x, reader)
	}
	if !rg.finite() {
		return q, fmt.Errorf("%w: %q has a range or channel figure that is not finite", ErrUncalibrated, x)
	}
	in := x
	if f := r.smooth[x]; f != nil {
		in = r.fresh(x + "_smoothed")
		inv := make([]float32, len(f))
		rg.Min, rg.Max = float32(math.Inf(1)), float32(math.Inf(-1))
		for k, v := range f {
			inv[k] = float32(1 / v)
			rg.Min = min(rg.Min, rg.ChannelMin[k]*inv[k])
			rg.Max = max(rg.Max, rg.ChannelMax[k]*inv[k])
		}
		invName := r.fresh(x + "_smoothing")
		r.extra = append(r.extra, encodeTensor(invName, onnxpb.DataTypeFloat, float32Bytes(inv), int64(len(inv))))
		r.add("", r.fresh(x+"_smooth"), "Mul", []string{x, invName}, []string{in})
	}
	scale, zp := activationParams(rg)
	r.quantOf[x] = q
	r.extra = append(r.extra,
		encodeTensor(q[1], onnxpb.DataTypeFloat, float32Bytes([]float32{scale})),
		encodeTensor(q[2], onnxpb.DataTypeUint8, []byte{zp}))
	r.add("", r.fresh(x+"_QuantizeLinear"), "QuantizeLinear", []string{in, q[1], q[2]}, q[:1])
	return q, nil
}

// attention writes a's QAttention node: the three projections' weights
// side by side in one int8 [D, 3H] weight, their biases (corrected) in one
// [3H] vector, one scale per column, and the padding mask as int32.
func (r *rewriter) attention(a attention, nodes []*node, weights []*tensor) error {
	var qws [3]quantWeight
	var bias []float32
	for k, p := range a.proj {
		qw, err := r.weight(nodes[p.matmul], weights[p.matmul])
		if err != nil {
			return err
		}
		bv, err := r.biasValues(nodes[p.add].other(nodes[p.matmul].outputs[0]), qw)
		if err != nil {
			return err
		}
		qws[k] = qw
		bias = append(bias, bv...)
	}
	rows, cols := qws[0].rows, qws[0].cols
	wq := make([]byte, 0, 3*rows*cols)
	for i := range rows {
		for _, qw := range qws {
			wq = append(wq, qw.q[i*cols:(i+1)*cols]...)
		}
	}
	scales := make([]float32, 0, 3*cols)
	for _, qw := range qws {
		for c := range cols {
			scales = append(scales, qw.scales[c%int64(len(qw.scales))])
		}
		// One scale per column even for per-tensor weights (QAttention's
		// scale is one or one per column).
		r.rep.WeightBytes[1] += 4 * (cols - int64(len(qw.scales)))
	}
	q := nodes[a.proj[0].matmul]
	base := r.fresh(q.name + "_qkv")
	wqName, wsName, wzName, bName := r.fresh(base+"_weight_quantized"), r.fresh(base+"_weight_scale"), r.fresh(base+"_weight_zero_point"), r.fresh(base+"_bias")
	r.extra = append(r.extra,
		encodeTensor(wqName, onnxpb.DataTypeInt8, wq, rows, 3*cols),
		encodeTensor(wsName, onnxpb.DataTypeFloat, float32Bytes(scales), 3*cols),
		encodeTensor(wzName, onnxpb.DataTypeInt8, []byte{0}),
		encodeTensor(bName, onnxpb.DataTypeFloat, float32Bytes(bias), 3*cols))
	x, err := r.input(a.x, q.name)
	if err != nil {
		return err
	}
	mask := ""
	if a.mask != "" {
		if mask = r.maskOf[a.mask]; mask == "" {
			mask = r.fresh(a.mask + "_int32")
			r.maskOf[a.mask] = mask
			r.add("", r.fresh(a.mask+"_Cast_int32"), "Cast", []string{a.mask}, []string{mask}, intAttr("to", onnxpb.DataTypeInt32))
		}
	}
	r.add(onnxpb.DomainMicrosoft, r.fresh(base+"_QAttention"), "QAttention",
		[]string{x[0], wqName, bName, x[1], wsName, mask, x[2], wzName}, []string{a.out}, intAttr("num_heads", a.heads))
	r.rep.Attentions++
	return nil
}
