package quantize

import (
	"math"
	"slices"

	"github.com/rerank/rerank/internal/onnxpb"
)

// attention is a self-attention block in the form BERT exports take, which
// the rewrite replaces with one com.microsoft QAttention node:
//
//	q = Transpose(Reshape(x·Wq + bq, [0, 0, N, d]), [0, 2, 1, 3])
//	k = Transpose(Reshape(x·Wk + bk, [0, 0, N, d]), [0, 2, 3, 1])
//	v = Transpose(Reshape(x·Wv + bv, [0, 0, N, d]), [0, 2, 1, 3])
//	p = Softmax(q·k / √d + bias, axis −1)          (or q·k · (1/√d))
//	y = Reshape(Transpose(p·v, [0, 2, 1, 3]), [0, 0, N·d])
//
// where bias, if there is one, is the usual additive padding mask
// Unsqueeze((1 − Cast(m)) · c, [1, 2]) of a graph input m with c ≤ −10⁴.
// QAttention computes the three projections as one integer product and
// writes them head by head, so the four Transposes (each a copy of the
// activations: 12 % of an int8 L12 run), the Reshapes, the scaling and the
// mask Add go; its masked positions get −10⁴, which, like any c ≤ −10⁴,
// makes their softmax weight exactly 0 in float32.
type attention struct {
	x     string
	proj  [3]projection // query, key, value
	heads int64
	mask  string // the graph input the padding mask is computed from; "" none
	out   string // y
	nodes []int  // every node replaced (the projections' included)
	first int    // the lowest of nodes: where QAttention goes
}

// projection is x·W + b reshaped to heads and transposed.
type projection struct {
	matmul, add, reshape, transpose int
	shapeNodes                      []int // the nodes computing the Reshape's shape
	perm                            []int64
	heads, size                     int64 // N and d
	out                             string
}

// graphIndex answers the matcher's questions about a parsed graph.
type graphIndex struct {
	g         *graphProto
	producer  map[string]int   // value → the node writing it
	consumers map[string][]int // value → the nodes reading it
	consts    map[string]*tensor
}

func newGraphIndex(g *graphProto) *graphIndex {
	ix := &graphIndex{g: g, producer: map[string]int{}, consumers: map[string][]int{}, consts: map[string]*tensor{}}
	for i, n := range g.nodes {
		for _, out := range n.outputs {
			ix.producer[out] = i
		}
		for _, in := range n.inputs {
			ix.consumers[in] = append(ix.consumers[in], i)
		}
		if n.opType == "Constant" && n.domain == "" && len(n.outputs) == 1 {
			if b := n.pb.AttrTensor("value"); b != nil {
				if t, err := parseTensor(b); err == nil {
					ix.consts[n.outputs[0]] = t
				}
			}
		}
	}
	return ix
}

// constant is the initializer or Constant node value named v, or nil.
func (ix *graphIndex) constant(v string) *tensor {
	if t := ix.g.inits[v]; t != nil {
		return t
	}
	return ix.consts[v]
}

// sole is the one node reading v other than Shape nodes (a computed
// Reshape shape reads the tensor it reshapes), when v is not a graph
// output, or -1. findAttentions checks at the end that those Shape nodes
// go too.
func (ix *graphIndex) sole(v string) int {
	if ix.g.outputs[v] {
		return -1
	}
	one := -1
	for _, c := range ix.consumers[v] {
		if n := ix.g.nodes[c]; n.opType == "Shape" && n.pb.DefaultDomain() {
			continue
		}
		if one >= 0 {
			return -1
		}
		one = c
	}
	return one
}

// op is node i when it is op in the default domain with at least ins
// inputs, or nil.
func (ix *graphIndex) op(i int, op string, ins int) *node {
	if i < 0 {
		return nil
	}
	n := ix.g.nodes[i]
	if n.opType != op || !n.pb.DefaultDomain() || len(n.inputs) < ins || len(n.outputs) < 1 {
		return nil
	}
	return n
}

// produced is the node writing v when it is op, or -1 and nil.
func (ix *graphIndex) produced(v, op string, ins int) (int, *node) {
	i, ok := ix.producer[v]
	if !ok {
		return -1, nil
	}
	n := ix.op(i, op, ins)
	if n == nil {
		return -1, nil
	}
	return i, n
}

// scalarConst is the value of a one-element float constant input.
func (ix *graphIndex) scalarConst(v string) (float32, bool) {
	if t := ix.constant(v); t != nil {
		return t.scalar()
	}
	return 0, false
}

// projectionOf follows a quantizable MatMul through its bias Add, Reshape
// to heads and Transpose.
func (ix *graphIndex) projectionOf(i int) (projection, bool) {
	g := ix.g
	w := g.weights[i]
	n := g.nodes[i]
	if w == nil || n.opType != "MatMul" {
		return projection{}, false
	}
	hidden := w.dims[1]
	a := ix.sole(n.outputs[0])
	add := ix.op(a, "Add", 2)
	if add == nil || !isBias(g.inits, add, n.outputs[0], hidden) {
		return projection{}, false
	}
	rs := ix.sole(add.outputs[0])
	reshape := ix.op(rs, "Reshape", 2)
	if reshape == nil || reshape.inputs[0] != add.outputs[0] || reshape.attrInt("allowzero", 0) != 0 {
		return projection{}, false
	}
	// heads × head size is the hidden size, neither more than it (their
	// product would overflow, and might wrap around to it).
	shape, shapeNodes := ix.reshapeTo(reshape)
	if len(shape) != 4 || shape[0] != 0 || (shape[1] != 0 && shape[1] != -1) || shape[2] < 1 || shape[3] < 1 ||
		shape[2] > hidden || shape[3] > hidden || shape[2]*shape[3] != hidden {
		return projection{}, false
	}
	tr := ix.sole(reshape.outputs[0])
	transpose := ix.op(tr, "Transpose", 1)
	if transpose == nil {
		return projection{}, false
	}
	return projection{matmul: i, add: a, reshape: rs, transpose: tr, shapeNodes: shapeNodes, perm: transpose.pb.AttrInts("perm"), heads: shape[2], size: shape[3], out: transpose.outputs[0]}, true
}

// int64s is the value of a small int64 constant, or nil.
func (ix *graphIndex) int64s(v string) []int64 {
	if t := ix.constant(v); t != nil {
		return t.int64s()
	}
	return nil
}

// projectionTo is the projection whose Transpose writes v.
func (ix *graphIndex) projectionTo(v string, perm ...int64) (projection, bool) {
	_, tr := ix.produced(v, "Transpose", 1)
	if tr == nil {
		return projection{}, false
	}
	_, rs := ix.produced(tr.inputs[0], "Reshape", 2)
	if rs == nil {
		return projection{}, false
	}
	_, add := ix.produced(rs.inputs[0], "Add", 2)
	if add == nil {
		return projection{}, false
	}
	for _, in := range add.inputs {
		if i, mm := ix.produced(in, "MatMul", 2); mm != nil {
			if p, ok := ix.projectionOf(i); ok && p.out == v && slices.Equal(p.perm, perm) {
				return p, true
			}
		}
	}
	return projection{}, false
}

// reshapeTo is the shape a Reshape gives, 0 meaning "this dimension of
// the input, as it is": a constant, or what PyTorch exports write for
// x.view(x.size()[:k] + (…)): Concat of Unsqueeze(Gather(Shape(x), i)) at
// position i and constants (onnxruntime's ReshapeFusion turns the same
// into constants at load). nil when it is neither.
func (ix *graphIndex) reshapeTo(rs *node) ([]int64, []int) {
	if c := ix.int64s(rs.inputs[1]); c != nil {
		return c, nil
	}
	ci, cat := ix.produced(rs.inputs[1], "Concat", 1)
	if cat == nil || cat.attrInt("axis", 0) != 0 {
		return nil, nil
	}
	var shape []int64
	nodes := []int{ci}
	for _, in := range cat.inputs {
		if c := ix.int64s(in); c != nil {
			shape = append(shape, c...)
			continue
		}
		ui, u := ix.produced(in, "Unsqueeze", 1)
		if u == nil || !slices.Equal(ix.axes(u), []int64{0}) {
			return nil, nil
		}
		gi, g := ix.produced(u.inputs[0], "Gather", 2)
		if g == nil || g.attrInt("axis", 0) != 0 {
			return nil, nil
		}
		idx := ix.int64s(g.inputs[1])
		si, sh := ix.produced(g.inputs[0], "Shape", 1)
		if sh == nil || sh.inputs[0] != rs.inputs[0] || len(idx) != 1 || idx[0] != int64(len(shape)) || sh.pb.NumAttrs > 0 {
			return nil, nil
		}
		shape = append(shape, 0)
		nodes = append(nodes, ui, gi, si)
	}
	return shape, nodes
}

// axes are an Unsqueeze's axes: its attribute (opsets < 13) or constant
// second input.
func (ix *graphIndex) axes(u *node) []int64 {
	if len(u.inputs) > 1 {
		return ix.int64s(u.inputs[1])
	}
	return u.pb.AttrInts("axes")
}

// unsqueezed is dims after Unsqueeze(axes) (1 for each dimension
// inserted), or nil for axes Unsqueeze refuses.
func unsqueezed(dims, axes []int64) []int64 {
	r := int64(len(dims) + len(axes))
	if len(axes) == 0 || r > 8 {
		return nil
	}
	out := make([]int64, r)
	for _, a := range axes {
		if a < 0 {
			a += r
		}
		if a < 0 || a >= r || out[a] != 0 {
			return nil
		}
		out[a] = 1
	}
	k := 0
	for i := range out {
		if out[i] == 0 {
			out[i] = dims[k]
			k++
		}
	}
	return out
}

// maskInput is the graph input m an additive padding mask [B, 1, 1, S] is
// computed from, (1 − Cast(m, float)) · c with c ≤ −10⁴ (either operand
// order of the Mul) and m's [B, S] made [B, 1, 1, S] by Unsqueezes
// anywhere in the chain, and the chain's nodes; "" when v is not such a
// mask.
func (ix *graphIndex) maskInput(v string) (string, []int) {
	var chain []int
	var unsq [][]int64 // the Unsqueezes' axes, last first
	sub, mul, cast := false, false, false
	for steps := 0; steps < 6; steps++ {
		i, ok := ix.producer[v]
		if !ok {
			break
		}
		n := ix.g.nodes[i]
		if !n.pb.DefaultDomain() || len(n.inputs) < 1 || len(n.outputs) < 1 {
			return "", nil
		}
		chain = append(chain, i)
		switch {
		case n.opType == "Unsqueeze":
			unsq = append(unsq, ix.axes(n))
			v = n.inputs[0]
		case n.opType == "Mul" && !mul && len(n.inputs) == 2:
			mul, v = true, ""
			for k, in := range n.inputs {
				if c, ok := ix.scalarConst(in); ok && c <= -1e4 {
					v = n.inputs[1-k]
				}
			}
		case n.opType == "Sub" && !sub && len(n.inputs) == 2:
			if one, ok := ix.scalarConst(n.inputs[0]); !ok || one != 1 {
				return "", nil
			}
			sub, v = true, n.inputs[1]
		case n.opType == "Cast" && !cast && n.attrInt("to", 0) == onnxpb.DataTypeFloat:
			cast, v = true, n.inputs[0]
		default:
			return "", nil
		}
		if v == "" {
			return "", nil
		}
	}
	slices.Reverse(unsq)
	dims := []int64{'B', 'S'}
	for _, axes := range unsq {
		if dims = unsqueezed(dims, axes); dims == nil {
			return "", nil
		}
	}
	// m is a graph input, declared [B, S] of integers or booleans:
	// QAttention reads a 2-D mask as 0 (masked) or not, where a 1-D one
	// would be lengths.
	in, declared := ix.g.inputs[v]
	integer := in.Elem == onnxpb.DataTypeInt64 || in.Elem == onnxpb.DataTypeInt32 || in.Elem == onnxpb.DataTypeBool
	if _, made := ix.producer[v]; made || !declared || len(in.Dims) != 2 || !integer || !sub || !mul || !cast || !slices.Equal(dims, []int64{'B', 1, 1, 'S'}) || ix.constant(v) != nil {
		return "", nil
	}
	return v, chain
}

// closed reports whether nothing outside nodes (sorted) reads what they
// write, out aside: they can all be replaced.
func (ix *graphIndex) closed(nodes []int, out string) bool {
	for _, i := range nodes {
		for _, o := range ix.g.nodes[i].outputs {
			if o == out {
				continue
			}
			if ix.g.outputs[o] {
				return false
			}
			for _, c := range ix.consumers[o] {
				if _, in := slices.BinarySearch(nodes, c); !in {
					return false
				}
			}
		}
	}
	return true
}

// findAttentions returns the self-attention blocks QAttention can replace,
// and the nodes they remove: their own, and those of their padding mask
// that nothing else reads once they are replaced.
func findAttentions(ix *graphIndex) ([]attention, map[int]bool) {
	g := ix.g
	gone := map[int]bool{}
	if g.subgraphs {
		return nil, gone
	}
	var out []attention
	maskNodes := map[int]bool{}
	for si := range g.nodes {
		s := ix.op(si, "MatMul", 2)
		if s == nil || ix.constant(s.inputs[1]) != nil {
			continue
		}
		q, ok := ix.projectionTo(s.inputs[0], 0, 2, 1, 3)
		if !ok {
			continue
		}
		k, ok := ix.projectionTo(s.inputs[1], 0, 2, 3, 1)
		x := g.nodes[q.matmul].inputs[0]
		// like reports whether p projects x as q does (same heads, head
		// size and weight rows: the three weights are [D, heads × size])
		// and only reader reads it.
		like := func(p projection, reader int) bool {
			return g.nodes[p.matmul].inputs[0] == x && p.heads == q.heads && p.size == q.size &&
				g.weights[p.matmul].dims[0] == g.weights[q.matmul].dims[0] && ix.sole(p.out) == reader
		}
		if !ok || ix.sole(q.out) != si || !like(k, si) {
			continue
		}
		a := attention{x: x, heads: q.heads, nodes: []int{si}}
		// The scaling by 1/√d.
		sc := ix.sole(s.outputs[0])
		want := math.Sqrt(float64(q.size))
		near := func(v float32, w float64) bool { return math.Abs(float64(v)-w) <= 1e-6*w }
		if div := ix.op(sc, "Div", 2); div != nil && div.inputs[0] == s.outputs[0] {
			if c, ok := ix.scalarConst(div.inputs[1]); !ok || !near(c, want) {
				continue
			}
		} else if mul := ix.op(sc, "Mul", 2); mul != nil {
			if c, ok := ix.scalarConst(mul.other(s.outputs[0])); !ok || !near(c, 1/want) {
				continue
			}
		} else {
			continue
		}
		a.nodes = append(a.nodes, sc)
		scaled := g.nodes[sc].outputs[0]
		// The padding mask, if any, then the softmax over keys.
		next := ix.sole(scaled)
		var chain []int
		if add := ix.op(next, "Add", 2); add != nil {
			if a.mask, chain = ix.maskInput(add.other(scaled)); a.mask == "" {
				continue
			}
			a.nodes = append(a.nodes, next)
			scaled = add.outputs[0]
			next = ix.sole(scaled)
		}
		sm := ix.op(next, "Softmax", 1)
		if sm == nil {
			continue
		}
		if axis := sm.attrInt("axis", 1); axis != -1 && axis != 3 {
			continue
		}
		a.nodes = append(a.nodes, next)
		pvi := ix.sole(sm.outputs[0])
		pv := ix.op(pvi, "MatMul", 2)
		if pv == nil || pv.inputs[0] != sm.outputs[0] {
			continue
		}
		v, ok := ix.projectionTo(pv.inputs[1], 0, 2, 1, 3)
		if !ok || !like(v, pvi) {
			continue
		}
		ti := ix.sole(pv.outputs[0])
		tr := ix.op(ti, "Transpose", 1)
		if tr == nil || !slices.Equal(tr.pb.AttrInts("perm"), []int64{0, 2, 1, 3}) {
			continue
		}
		ri := ix.sole(tr.outputs[0])
		rs := ix.op(ri, "Reshape", 2)
		if rs == nil || rs.attrInt("allowzero", 0) != 0 {
			continue
		}
		hidden := q.heads * q.size
		shape, shapeNodes := ix.reshapeTo(rs)
		if len(shape) != 3 || shape[0] != 0 || (shape[1] != 0 && shape[1] != -1) || (shape[2] != hidden && shape[2] != -1) || shape[1] == -1 && shape[2] == -1 {
			continue
		}
		a.proj = [3]projection{q, k, v}
		a.out = rs.outputs[0]
		for _, p := range a.proj {
			a.nodes = append(a.nodes, p.matmul, p.add, p.reshape, p.transpose)
			a.nodes = append(a.nodes, p.shapeNodes...)
		}
		a.nodes = append(a.nodes, pvi, ti, ri)
		a.nodes = append(a.nodes, shapeNodes...)
		slices.Sort(a.nodes)
		a.nodes = slices.Compact(a.nodes)
		if !ix.closed(a.nodes, a.out) {
			continue
		}
		a.first = a.nodes[0]
		out = append(out, a)
		for _, c := range chain {
			maskNodes[c] = true
		}
	}
	// The mask's nodes go when every reader of their outputs goes.
	for _, a := range out {
		for _, i := range a.nodes {
			gone[i] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for i := range maskNodes {
			if gone[i] {
				continue
			}
			unread := true
			for _, o := range g.nodes[i].outputs {
				if g.outputs[o] {
					unread = false
				}
				for _, c := range ix.consumers[o] {
					if !gone[c] {
						unread = false
					}
				}
			}
			if unread {
				gone[i] = true
				changed = true
			}
		}
	}
	return out, gone
}
