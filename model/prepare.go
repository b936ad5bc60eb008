package model

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rerank/rerank/internal/onnxpb"
)

// A worker does not hand onnxruntime the model file as it is but a
// prepared copy of its graph (prepareGraph), built in memory:
//
//   - mapped weights: every large inline initializer refers, as external
//     data, to its own bytes in the model file, so that onnxruntime maps
//     the weights instead of reading and copying them several times. For
//     the 133 MB L12 model, session creation took 0.4–0.5 s instead of
//     1.1–1.4 s, and the peak resident memory fell by ~100 MB;
//   - on CPU, each encoder residual Add feeding a LayerNormalization
//     becomes one SkipLayerNormalization, onnxruntime's fused kernel, which
//     its own optimizer does not apply to these graphs. ONNX Runtime 1.29's
//     CPU LayerNormalization took ~1.8 ms per [16, 110, 384] tensor here,
//     its SkipLayerNormalization ~0.33 ms with the Add included: 12 % of an
//     fp32 L12 run, 25 % of an int8 one (BENCHMARKS.md).
//
// Scores stay within float rounding of the file's own (the mapping changes
// no bit, the fusion sums in another order); Options.LoadAsIs loads the
// file as it is.

// mapThreshold is the smallest initializer whose bytes onnxruntime maps
// from the model file instead of copying (smaller ones stay inline).
const mapThreshold = 4096

// errUnprepared reports a graph that neither mapping nor fusion changes.
var errUnprepared = errors.New("nothing to prepare in the graph")

// errChanged reports a model file replaced while it was being loaded.
var errChanged = errors.New("the model file changed while it was loaded")

// prepared counts what prepareGraph changed.
type prepared struct {
	mapped int // initializers mapped from the file
	fused  int // Add + LayerNormalization pairs fused
}

// prepareGraph returns the ONNX model in file (its bytes, data) with its
// large initializers mapped (mapWeights) and its residual Add +
// LayerNormalization pairs fused (fuse), or errUnprepared when neither
// changes anything. The file is untrusted: besides its output (at most
// the size of data, written twice: as a graph, then as a model), it
// allocates at most about 4 bytes per byte of data to index it
// (onnxpb.Fields; a model of more fields than that keeps for its size is
// an onnxpb.ErrLimit error), and what fusion indexes, bounded by
// maxFusedNodes and maxFusedValues.
func prepareGraph(file string, data []byte, mapWeights, fuse bool) ([]byte, prepared, error) {
	var st prepared
	top, err := onnxpb.Fields(data)
	if err != nil {
		return nil, st, err
	}
	location := filepath.Base(file)
	graphs := map[int][]byte{} // top-level field index → its prepared GraphProto
	at := 0                    // offset of the current top-level field in data
	for i, f := range top {
		if f.Num == onnxpb.ModelGraph && f.Typ == protowire.BytesType {
			g, changed, err := prepareNodes(f.Val, at+len(f.Raw)-len(f.Val), location, mapWeights, fuse, &st)
			if err != nil {
				return nil, st, err
			}
			if changed {
				graphs[i] = g
			}
		}
		at += len(f.Raw)
	}
	if st.mapped == 0 && st.fused == 0 {
		return nil, st, errUnprepared
	}
	var imports []byte
	if st.fused > 0 {
		opsets, _ := onnxpb.OpsetImports(top) // a malformed one is onnxruntime's to report
		if _, ok := opsets[onnxpb.DomainMicrosoft]; !ok {
			imports = onnxpb.AppendOpsetImport(nil, onnxpb.DomainMicrosoft, 1)
		}
	}
	size := len(data) + len(imports)
	for i, g := range graphs {
		size += protowire.SizeTag(onnxpb.ModelGraph) + protowire.SizeBytes(len(g)) - len(top[i].Raw)
	}
	out := make([]byte, 0, size)
	for i, f := range top {
		if g, ok := graphs[i]; ok {
			out = onnxpb.AppendBytes(out, onnxpb.ModelGraph, g)
		} else {
			out = append(out, f.Raw...)
		}
	}
	return append(out, imports...), st, nil
}

// prepareNodes rewrites one GraphProto whose bytes start at offset at of
// the file; changed is false (and the graph nil) when nothing in it
// changes.
func prepareNodes(graph []byte, at int, location string, mapWeights, fuse bool, st *prepared) (g []byte, changed bool, err error) {
	gf, err := onnxpb.Fields(graph)
	if err != nil {
		return nil, false, err
	}
	var skip map[int]bool          // graph field index of a fused Add
	var fused map[int]residualNorm // graph field index of a LayerNormalization → it and its Add
	var names map[string]bool      // node names in use
	if fuse && fusable(gf) {
		if skip, fused, names, err = residualNorms(gf); err != nil {
			return nil, false, err
		}
	}
	// The fields that change (a fused Add: to nothing), then the graph
	// written at its size.
	edits := map[int][]byte{}
	for i, x := range gf {
		switch {
		case skip[i]:
			edits[i] = nil
		case fused[i].norm != nil:
			add, ln := fused[i].add, fused[i].norm
			name := onnxpb.FreshName(names, ln.Name+"_skip")
			edits[i] = onnxpb.AppendBytes(nil, onnxpb.GraphNode, onnxpb.EncodeNode(onnxpb.DomainMicrosoft, name, "SkipLayerNormalization",
				[]string{add.Inputs[0], add.Inputs[1], ln.Inputs[1], ln.Inputs[2]}, ln.Outputs[:1],
				onnxpb.FloatAttr("epsilon", ln.AttrFloat("epsilon", 1e-5))))
			st.fused++
		case x.Num == onnxpb.GraphInitializer && mapWeights:
			t, ok, err := mapTensor(x, at+len(x.Raw)-len(x.Val), location)
			if err != nil {
				return nil, false, err
			}
			if ok {
				st.mapped++
				edits[i] = onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, t)
			}
		}
		at += len(x.Raw)
	}
	if len(edits) == 0 {
		return nil, false, nil
	}
	size := len(graph)
	for i, e := range edits {
		size += len(e) - len(gf[i].Raw)
	}
	g = make([]byte, 0, size)
	for i, x := range gf {
		if e, ok := edits[i]; ok {
			g = append(g, e...)
		} else {
			g = append(g, x.Raw...)
		}
	}
	return g, true, nil
}

// maxFusedNodes is the most nodes of a graph that prepareNodes fuses, and
// maxFusedValues the most inputs and outputs of its nodes in all; a larger
// graph is only mapped. Matching the residual connections indexes every
// node and every value a node reads or writes, by name (about 730 bytes
// for a node of 3 inputs and 1 output), and a crafted file of tiny nodes
// must not cost that without end: these bound it to about 12 MiB, and are
// far above a cross-encoder's graph (about 1,000 nodes in a 12-layer
// MiniLM export, 3,000 in a 24-layer BERT-large, twice as many quantized;
// each reads 1 to 3 values and writes 1).
const (
	maxFusedNodes  = 1 << 14
	maxFusedValues = 4 * maxFusedNodes
)

// fusable reports whether a graph is within maxFusedNodes and
// maxFusedValues.
func fusable(gf []onnxpb.Field) bool {
	nodes, values := 0, 0
	for _, x := range gf {
		if x.Num != onnxpb.GraphNode {
			continue
		}
		nodes++
		for f, err := range onnxpb.All(x.Val) {
			if err != nil {
				break // ParseNode reports it
			}
			if f.Num == onnxpb.NodeInput || f.Num == onnxpb.NodeOutput {
				values++
			}
		}
		if nodes > maxFusedNodes || values > maxFusedValues {
			return false
		}
	}
	return true
}

// residualNorms finds the encoder's residual connections: a
// LayerNormalization over the last axis, with 1-D initializers as scale and
// bias and only its first output used, of an Add read by nothing else,
// whose inputs are a dense layer's output (a MatMul's or an integer
// product's, bias added or not) and the output of a previous (Skip)
// LayerNormalization. Both are then [batch, sequence, hidden], the shapes
// SkipLayerNormalization takes; anything else (the embeddings' sums, with
// broadcast position tables) is left alone.
func residualNorms(gf []onnxpb.Field) (skip map[int]bool, fused map[int]residualNorm, names map[string]bool, err error) {
	type at struct {
		field int
		node  *onnxpb.Node
	}
	producer := map[string]at{}
	uses := map[string]int{}
	names = map[string]bool{}
	vectors := map[string]bool{} // 1-D float initializers
	var nodes []at
	for i, x := range gf {
		switch x.Num {
		case onnxpb.GraphNode:
			n, err := onnxpb.ParseNode(x.Val)
			if err != nil {
				return nil, nil, nil, err
			}
			names[n.Name] = true
			nodes = append(nodes, at{i, n})
			for _, in := range n.Inputs {
				uses[in]++
			}
			for _, o := range n.Outputs {
				producer[o] = at{i, n}
			}
		case onnxpb.GraphInitializer:
			var name string
			var dims []int64
			float := false
			for y, err := range onnxpb.All(x.Val) {
				if err != nil {
					return nil, nil, nil, err
				}
				switch {
				case y.Num == onnxpb.TensorName:
					name = string(y.Val)
				case y.Num == onnxpb.TensorDims:
					if dims, err = onnxpb.AppendDims(dims, y); err != nil {
						return nil, nil, nil, err
					}
				case y.Num == onnxpb.TensorDataType:
					float = y.V == onnxpb.DataTypeFloat
				}
			}
			// Only float32 norms are fused: the CPU kernel's float16 path is
			// another code path, not measured here.
			if len(dims) == 1 && float {
				vectors[name] = true
			}
		case onnxpb.GraphOutput:
			// Its name, even past a malformed type.
			if v, _ := onnxpb.ParseValueInfo(x.Val); v.Name != "" {
				uses[v.Name]++
			}
		}
	}
	std := (*onnxpb.Node).DefaultDomain
	isNorm := func(v string) bool { // a norm's normalized output, not its mean or deviation
		p, ok := producer[v]
		return ok && p.node.Outputs[0] == v &&
			(std(p.node) && p.node.OpType == "LayerNormalization" || p.node.Domain == onnxpb.DomainMicrosoft && p.node.OpType == "SkipLayerNormalization")
	}
	product := func(n *onnxpb.Node) bool { // fp32 or integer
		return std(n) && n.OpType == "MatMul" || n.Domain == onnxpb.DomainMicrosoft && (n.OpType == "MatMulIntegerToFloat" || n.OpType == "DynamicQuantizeMatMul")
	}
	isDense := func(v string) bool {
		p, ok := producer[v]
		if !ok {
			return false
		}
		n := p.node
		if std(n) && n.OpType == "Add" && len(n.Inputs) == 2 {
			// A bias added to a product.
			for k, in := range n.Inputs {
				if q, ok := producer[in]; ok && vectors[n.Inputs[1-k]] && product(q.node) {
					return true
				}
			}
			return false
		}
		return product(n)
	}
	skip, fused = map[int]bool{}, map[int]residualNorm{}
	for _, l := range nodes {
		ln := l.node
		if !std(ln) || ln.OpType != "LayerNormalization" || len(ln.Inputs) != 3 || ln.AttrInt("axis", -1) != -1 ||
			!vectors[ln.Inputs[1]] || !vectors[ln.Inputs[2]] || len(ln.Outputs) == 0 {
			continue
		}
		extra := false
		for _, o := range ln.Outputs[1:] {
			extra = extra || o != "" && uses[o] > 0
		}
		a, ok := producer[ln.Inputs[0]]
		if extra || !ok || uses[ln.Inputs[0]] != 1 || !std(a.node) || a.node.OpType != "Add" || len(a.node.Inputs) != 2 || len(a.node.Outputs) != 1 {
			continue
		}
		p, q := a.node.Inputs[0], a.node.Inputs[1]
		if !(isDense(p) && isNorm(q) || isDense(q) && isNorm(p)) {
			continue
		}
		skip[a.field] = true
		fused[l.field] = residualNorm{add: a.node, norm: ln}
	}
	return skip, fused, names, nil
}

// residualNorm is a LayerNormalization and the residual Add it normalizes,
// to be written as one SkipLayerNormalization.
type residualNorm struct{ add, norm *onnxpb.Node }

// mapTensor rewrites one TensorProto, whose bytes start at offset at of the
// file, to refer to its raw data in place; ok is false for a tensor to
// leave as it is (small, already external, or without raw data).
func mapTensor(x onnxpb.Field, at int, location string) ([]byte, bool, error) {
	rawAt, rawLen := -1, 0
	for y, err := range onnxpb.All(x.Val) {
		if err != nil {
			return nil, false, err
		}
		switch y.Num {
		case onnxpb.TensorRawData:
			rawAt, rawLen = at+len(y.Raw)-len(y.Val), len(y.Val)
		case onnxpb.TensorExternalData, onnxpb.TensorDataLocation:
			return nil, false, nil
		}
		at += len(y.Raw)
	}
	if rawAt < 0 || rawLen < mapThreshold {
		return nil, false, nil
	}
	var t []byte
	for y := range onnxpb.All(x.Val) { // well-formed: read above
		if y.Num != onnxpb.TensorRawData {
			t = append(t, y.Raw...)
		}
	}
	entry := func(k, v string) []byte {
		return onnxpb.AppendString(onnxpb.AppendString(nil, onnxpb.EntryKey, k), onnxpb.EntryValue, v)
	}
	t = onnxpb.AppendBytes(t, onnxpb.TensorExternalData, entry("location", location))
	t = onnxpb.AppendBytes(t, onnxpb.TensorExternalData, entry("offset", strconv.Itoa(rawAt)))
	t = onnxpb.AppendBytes(t, onnxpb.TensorExternalData, entry("length", strconv.Itoa(rawLen)))
	t = onnxpb.AppendVarint(t, onnxpb.TensorDataLocation, 1) // EXTERNAL
	return t, true, nil
}

// newSession creates the session of the graph file path from its prepared
// graph where there is something to prepare, else from the file.
func newSession(path string, inputs, outputs []string, opts Options, so *ort.SessionOptions) (*ort.DynamicAdvancedSession, prepared, error) {
	if !opts.LoadAsIs {
		if s, st, err := preparedSession(path, inputs, outputs, !opts.Device.CUDA, so); err == nil {
			return s, st, nil
		}
	}
	// As it is: asked for, nothing to prepare, not mappable here, or the
	// file changed meanwhile (the plain load also reports what is wrong
	// with a broken file).
	s, err := ort.NewDynamicAdvancedSession(path, inputs, outputs, so)
	return s, prepared{}, err
}

// preparedSession creates the session from the prepareGraph of the file
// at path: fused (if fuse) and mapped, else mapped only when onnxruntime
// refuses a fusion. onnxruntime opens the file again by name to map the
// weights: if the path no longer names the file the offsets were read from
// (renamed over meanwhile), the session is dropped.
func preparedSession(path string, inputs, outputs []string, fuse bool, so *ort.SessionOptions) (*ort.DynamicAdvancedSession, prepared, error) {
	// The file itself, not a link to it: external data must lie in the
	// folder it is resolved from (Hugging Face caches link to blobs).
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, prepared{}, err
	}
	data, fi, unmap, err := mapFile(path)
	if err != nil {
		return nil, prepared{}, err
	}
	defer unmap()
	if err := setExternalFolder(so, path); err != nil {
		return nil, prepared{}, err
	}
	g, st, err := prepareGraph(path, data, true, fuse)
	if err != nil {
		return nil, st, err
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(g, inputs, outputs, so)
	if err != nil && st.fused > 0 {
		if g, st, err = prepareGraph(path, data, true, false); err != nil {
			return nil, st, err
		}
		s, err = ort.NewDynamicAdvancedSessionWithONNXData(g, inputs, outputs, so)
	}
	if err != nil {
		return nil, st, err
	}
	now, err := os.Stat(path)
	if err != nil || !os.SameFile(fi, now) || now.Size() != fi.Size() || !now.ModTime().Equal(fi.ModTime()) {
		s.Destroy()
		return nil, st, errChanged
	}
	return s, st, nil
}

// setExternalFolder has the external data locations of a graph created
// from bytes resolved from the folder of the graph file path.
func setExternalFolder(so *ort.SessionOptions, path string) error {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return err
	}
	return so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", dir)
}
