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

// sole is the one node reading v, when v is read once and is not a graph
// output, or -1.
func (ix *graphIndex) sole(v string) int {
	if c := ix.consumers[v]; len(c) == 1 && ix.g.uses[v] == 1 && !ix.g.outputs[v] {
		return c[0]
	}
	return -1
}

// op is node i when it is op in the default domain with at least ins
// inputs, or nil.
func (ix *graphIndex) op(i int, op string, ins int) *node {
	if i < 0 {
		return nil
	}
	n := ix.g.nodes[i]
	if n.opType != op || (n.domain != "" && n.domain != "ai.onnx") || len(n.inputs) < ins || len(n.outputs) < 1 {
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
	shape := ix.int64s(reshape.inputs[1])
	if len(shape) != 4 || shape[0] != 0 || (shape[1] != 0 && shape[1] != -1) || shape[2] < 1 || shape[3] < 1 || shape[2]*shape[3] != hidden {
		return projection{}, false
	}
	tr := ix.sole(reshape.outputs[0])
	transpose := ix.op(tr, "Transpose", 1)
	if transpose == nil {
		return projection{}, false
	}
	return projection{matmul: i, add: a, reshape: rs, transpose: tr, perm: transpose.pb.Ints["perm"], heads: shape[2], size: shape[3], out: transpose.outputs[0]}, true
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

// maskInput is the graph input an additive padding mask is computed from:
// Unsqueeze((1 − Cast(m, float)) · c, [1, 2]) with c ≤ −10⁴ (either
// operand order of the Mul), or "".
func (ix *graphIndex) maskInput(v string) (string, []int) {
	ui, u := ix.produced(v, "Unsqueeze", 1)
	if u == nil {
		return "", nil
	}
	axes := u.pb.Ints["axes"]
	if len(u.inputs) > 1 {
		axes = ix.int64s(u.inputs[1])
	}
	if !slices.Equal(axes, []int64{1, 2}) {
		return "", nil
	}
	mi, mul := ix.produced(u.inputs[0], "Mul", 2)
	if mul == nil {
		return "", nil
	}
	scaled := ""
	for k, in := range mul.inputs[:2] {
		if c, ok := ix.scalarConst(in); ok && c <= -1e4 {
			scaled = mul.inputs[1-k]
		}
	}
	si, sub := ix.produced(scaled, "Sub", 2)
	if sub == nil {
		return "", nil
	}
	if one, ok := ix.scalarConst(sub.inputs[0]); !ok || one != 1 {
		return "", nil
	}
	ci, cast := ix.produced(sub.inputs[1], "Cast", 1)
	if cast == nil || cast.attrInt("to", 0) != onnxpb.DataTypeFloat {
		return "", nil
	}
	m := cast.inputs[0]
	if _, made := ix.producer[m]; made || ix.constant(m) != nil {
		return "", nil
	}
	return m, []int{ui, mi, si, ci}
}

// findAttentions returns the self-attention blocks QAttention can replace,
// and the nodes of their padding mask that nothing else reads once they
// are replaced.
func findAttentions(g *graphProto) ([]attention, []int) {
	ix := newGraphIndex(g)
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
		if !ok || g.nodes[k.matmul].inputs[0] != x || k.heads != q.heads || k.size != q.size || ix.sole(q.out) != si || ix.sole(k.out) != si {
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
			other := mul.inputs[1]
			if other == s.outputs[0] {
				other = mul.inputs[0]
			}
			if c, ok := ix.scalarConst(other); !ok || !near(c, 1/want) {
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
			other := add.inputs[1]
			if other == scaled {
				other = add.inputs[0]
			}
			if a.mask, chain = ix.maskInput(other); a.mask == "" {
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
		if !ok || g.nodes[v.matmul].inputs[0] != x || v.heads != q.heads || v.size != q.size || ix.sole(v.out) != pvi {
			continue
		}
		ti := ix.sole(pv.outputs[0])
		tr := ix.op(ti, "Transpose", 1)
		if tr == nil || !slices.Equal(tr.pb.Ints["perm"], []int64{0, 2, 1, 3}) {
			continue
		}
		ri := ix.sole(tr.outputs[0])
		rs := ix.op(ri, "Reshape", 2)
		if rs == nil || rs.attrInt("allowzero", 0) != 0 {
			continue
		}
		hidden := q.heads * q.size
		if shape := ix.int64s(rs.inputs[1]); len(shape) != 3 || shape[0] != 0 || (shape[1] != 0 && shape[1] != -1) || (shape[2] != hidden && shape[2] != -1) || shape[1] == -1 && shape[2] == -1 {
			continue
		}
		wq, wk, wv := g.weights[q.matmul], g.weights[k.matmul], g.weights[v.matmul]
		if wk.dims[0] != wq.dims[0] || wv.dims[0] != wq.dims[0] || wq.dims[1] != hidden || wk.dims[1] != hidden || wv.dims[1] != hidden {
			continue
		}
		a.proj = [3]projection{q, k, v}
		a.out = rs.outputs[0]
		for _, p := range a.proj {
			a.nodes = append(a.nodes, p.matmul, p.add, p.reshape, p.transpose)
		}
		a.nodes = append(a.nodes, pvi, ti, ri)
		a.first = slices.Min(a.nodes)
		out = append(out, a)
		for _, c := range chain {
			maskNodes[c] = true
		}
	}
	// The mask's nodes go when every reader of their outputs goes.
	gone := map[int]bool{}
	for _, a := range out {
		for _, i := range a.nodes {
			gone[i] = true
		}
	}
	var dead []int
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
				dead = append(dead, i)
				changed = true
			}
		}
	}
	return out, dead
}
