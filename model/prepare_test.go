package model

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rerank/rerank/internal/onnxpb"
	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/model/testmodel"
)

// graphFields are the fields of a model's graph.
func graphFields(t *testing.T, model []byte) []onnxpb.Field {
	t.Helper()
	top, err := onnxpb.Fields(model)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range top {
		if f.Num == onnxpb.ModelGraph {
			gf, err := onnxpb.Fields(f.Val)
			if err != nil {
				t.Fatal(err)
			}
			return gf
		}
	}
	t.Fatal("no graph")
	return nil
}

// initializers returns a model's initializers by name: their fields.
func initializers(t *testing.T, model []byte) map[string][]onnxpb.Field {
	t.Helper()
	out := map[string][]onnxpb.Field{}
	for _, g := range graphFields(t, model) {
		if g.Num != onnxpb.GraphInitializer {
			continue
		}
		tf, err := onnxpb.Fields(g.Val)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range tf {
			if x.Num == onnxpb.TensorName {
				out[string(x.Val)] = tf
			}
		}
	}
	return out
}

// withoutInitializers is a model's bytes less its graph's initializers.
func withoutInitializers(t *testing.T, model []byte) []byte {
	t.Helper()
	top, err := onnxpb.Fields(model)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, f := range top {
		if f.Num != onnxpb.ModelGraph {
			out = append(out, f.Raw...)
			continue
		}
		gf, err := onnxpb.Fields(f.Val)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gf {
			if g.Num != onnxpb.GraphInitializer {
				out = append(out, g.Raw...)
			}
		}
	}
	return out
}

// nodeOps counts a model's nodes by "domain:op" and returns them.
func nodeOps(t *testing.T, model []byte) (map[string]int, []*onnxpb.Node) {
	t.Helper()
	ops := map[string]int{}
	var nodes []*onnxpb.Node
	for _, g := range graphFields(t, model) {
		if g.Num == onnxpb.GraphNode {
			n, err := onnxpb.ParseNode(g.Val)
			if err != nil {
				t.Fatal(err)
			}
			ops[n.Domain+":"+n.OpType]++
			nodes = append(nodes, n)
		}
	}
	return ops, nodes
}

// TestResidualNormsAreFused: each encoder layer's two residual Add +
// LayerNormalization pairs become SkipLayerNormalization nodes over the
// same inputs, scale, bias and epsilon, writing the LayerNormalization's
// output; the embeddings' LayerNormalization (its sum has a position table
// in it) stays; the weights stay inline when not mapped; the com.microsoft
// domain is imported.
func TestResidualNormsAreFused(t *testing.T) {
	var buf bytes.Buffer
	if err := testmodel.WriteONNX(&buf, testmodel.Tiny); err != nil {
		t.Fatal(err)
	}
	g, st, err := prepareGraph("model.onnx", buf.Bytes(), false, true)
	if err != nil {
		t.Fatal(err)
	}
	if st.fused != 4 || st.mapped != 0 {
		t.Fatalf("prepared %+v, want 4 fused for 2 layers", st)
	}
	before, orig := nodeOps(t, buf.Bytes())
	after, nodes := nodeOps(t, g)
	if after["com.microsoft:SkipLayerNormalization"] != 4 || after[":LayerNormalization"] != before[":LayerNormalization"]-4 || after[":Add"] != before[":Add"]-4 {
		t.Fatalf("ops %v → %v", before, after)
	}
	norms := map[string]*onnxpb.Node{} // by output
	adds := map[string]*onnxpb.Node{}
	for _, n := range orig {
		switch n.OpType {
		case "LayerNormalization":
			norms[n.Outputs[0]] = n
		case "Add":
			adds[n.Outputs[0]] = n
		}
	}
	for _, n := range nodes {
		if n.OpType != "SkipLayerNormalization" {
			continue
		}
		ln := norms[n.Outputs[0]]
		add := adds[ln.Inputs[0]]
		if ln == nil || add == nil || len(n.Inputs) != 4 || n.Inputs[0] != add.Inputs[0] || n.Inputs[1] != add.Inputs[1] ||
			n.Inputs[2] != ln.Inputs[1] || n.Inputs[3] != ln.Inputs[2] || n.AttrFloat("epsilon", 0) != ln.AttrFloat("epsilon", 1e-5) {
			t.Fatalf("%+v does not replace its Add and LayerNormalization", n)
		}
	}
	if len(initializers(t, g)) != len(initializers(t, buf.Bytes())) || len(g) < len(buf.Bytes())-1024 {
		t.Fatal("the weights did not stay inline")
	}
	// One com.microsoft opset import, added once whatever the model had.
	imports := func(model []byte) int {
		top, _ := onnxpb.Fields(model)
		k := 0
		for _, f := range top {
			if f.Num == onnxpb.ModelOpsetImport && bytes.Contains(f.Val, []byte("com.microsoft")) {
				k++
			}
		}
		return k
	}
	if imports(buf.Bytes()) != 0 || imports(g) != 1 {
		t.Fatalf("com.microsoft imported %d times", imports(g))
	}
	if _, st, err := prepareGraph("model.onnx", g, false, true); !errors.Is(err, errUnprepared) || st.fused != 0 {
		t.Fatalf("fusing a fused graph: %v, %+v", err, st)
	}
	// Node names stay distinct, whatever the norms were called.
	seen := map[string]bool{}
	for _, n := range nodes {
		if seen[n.Name] {
			t.Fatalf("node name %q twice", n.Name)
		}
		seen[n.Name] = true
	}
	names := map[string]bool{"": true, "_skip": true}
	if a, b := onnxpb.FreshName(names, "_skip"), onnxpb.FreshName(names, "_skip"); a != "_skip_1" || b != "_skip_2" {
		t.Fatalf("fresh names %q, %q", a, b)
	}
}

// TestMappedGraphPointsIntoTheFile: every large initializer of the mapped
// graph refers, by location, offset and length, to exactly the bytes of its
// raw data in the model file; small ones stay inline; nothing else changes.
func TestMappedGraphPointsIntoTheFile(t *testing.T) {
	var buf bytes.Buffer
	if err := testmodel.WriteONNX(&buf, testmodel.Tiny); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	data, _, unmap, err := mapFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	g, st, err := prepareGraph(file, data, true, false)
	if err != nil || st.fused != 0 {
		t.Fatal(err, st)
	}
	if len(g)*10 > len(data) {
		t.Fatalf("mapped graph %d bytes for a %d-byte model", len(g), len(data))
	}
	orig, mapped := initializers(t, buf.Bytes()), initializers(t, g)
	external := 0
	for name, tf := range orig {
		var raw []byte
		for _, x := range tf {
			if x.Num == onnxpb.TensorRawData {
				raw = x.Val
			}
		}
		ext := map[string]string{}
		location := int64(-1)
		for _, x := range mapped[name] {
			switch x.Num {
			case onnxpb.TensorRawData:
				if len(raw) >= mapThreshold {
					t.Errorf("%s: %d bytes still inline", name, len(x.Val))
				}
			case onnxpb.TensorDataLocation:
				location = int64(x.V)
			case onnxpb.TensorExternalData:
				kv, err := onnxpb.Fields(x.Val)
				if err != nil || len(kv) != 2 {
					t.Fatalf("%s: external data entry %v", name, err)
				}
				ext[string(kv[0].Val)] = string(kv[1].Val)
			}
		}
		if len(raw) < mapThreshold {
			if location >= 0 || len(ext) > 0 {
				t.Errorf("%s: a %d-byte tensor was mapped", name, len(raw))
			}
			continue
		}
		external++
		off, err1 := strconv.Atoi(ext["offset"])
		n, err2 := strconv.Atoi(ext["length"])
		if location != 1 || ext["location"] != "model.onnx" || err1 != nil || err2 != nil || off+n > len(data) {
			t.Fatalf("%s: location %d, external data %v", name, location, ext)
		}
		if !bytes.Equal(data[off:off+n], raw) {
			t.Fatalf("%s: offset %d length %d is not its data", name, off, n)
		}
	}
	if external < 10 || external != st.mapped {
		t.Fatalf("%d tensors mapped, %d counted", external, st.mapped)
	}
	// Every field but the initializers is the same bytes.
	if a, b := withoutInitializers(t, buf.Bytes()), withoutInitializers(t, g); !bytes.Equal(a, b) {
		t.Fatalf("the rest of the model changed: %d bytes → %d", len(a), len(b))
	}
	// A model with nothing to map is left to the plain load.
	small := onnxpb.AppendBytes(nil, onnxpb.ModelGraph, onnxpb.AppendString(nil, onnxpb.GraphName, "g"))
	if _, _, err := prepareGraph(file, small, true, true); err != errUnprepared {
		t.Fatalf("err = %v, want %v", err, errUnprepared)
	}
	if _, _, err := prepareGraph(file, []byte{0xff}, true, true); err == nil {
		t.Fatal("garbage prepared")
	}
}

// TestPrepareGraphAllocationIsBounded: preparing a crafted model of N
// bytes allocates at most 6N bytes (its index, at most 4N, and its output,
// at most N, written as a graph, then as a model), plus a few KiB,
// whatever it answers: its parse keeps no 64-byte record per 2-byte field,
// and it fuses no graph of more than maxFusedNodes nodes.
func TestPrepareGraphAllocationIsBounded(t *testing.T) {
	graphs := hostileGraphs()
	// Something to map, so that the output is written.
	graphs["small nodes, mapped"] = append(onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, initializer("w", make([]byte, mapThreshold), mapThreshold/4)),
		graphs["small nodes"]...)
	for name, graph := range graphs {
		t.Run(name, func(t *testing.T) {
			data := onnxModel(graph)
			var err error
			got := testenv.Allocated(func() { _, _, err = prepareGraph("model.onnx", data, true, true) })
			t.Logf("%d bytes allocated for %d (err %v)", got, len(data), err)
			if limit := uint64(6*len(data) + 64<<10); got > limit {
				t.Fatalf("preparing %d bytes allocated %d bytes (err %v), want at most %d", len(data), got, err, limit)
			}
		})
	}
}

// FuzzPrepare: no model panics prepareGraph or makes it loop; what it
// prepares is a well-formed model whose mapped tensors point, by offset
// and length, into the file's bytes.
func FuzzPrepare(f *testing.F) {
	for _, spec := range []testmodel.Spec{
		{Name: "fuzz", Layers: 1, Hidden: 16, Heads: 2, FFN: 16, MaxPositions: 8, TypeVocab: 2, Vocab: 8, Seed: 1, InitStd: 0.3},
		// 32×32 float weights: 4 KiB each, mapped.
		{Name: "fuzz-mapped", Layers: 1, Hidden: 32, Heads: 2, FFN: 32, MaxPositions: 8, TypeVocab: 2, Vocab: 8, Seed: 1, InitStd: 0.3},
	} {
		var b bytes.Buffer
		if err := testmodel.WriteONNX(&b, spec); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Add([]byte{})
	f.Add(onnxModel(onnxpb.AppendBytes(nil, onnxpb.GraphInitializer, initializer("w", make([]byte, mapThreshold), mapThreshold/4))))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, mode := range [][2]bool{{true, true}, {true, false}, {false, true}} {
			g, st, err := prepareGraph("model.onnx", in, mode[0], mode[1])
			if err != nil {
				continue
			}
			if st.mapped < 0 || st.fused < 0 || st.mapped == 0 && st.fused == 0 {
				t.Fatalf("prepared %+v", st)
			}
			checkPrepared(t, g, in)
		}
	})
}

// checkPrepared checks that a model prepared from file is well-formed
// protobuf down to its initializers, and that the external data of those
// it rewrote lies within the file.
func checkPrepared(t *testing.T, model, file []byte) {
	t.Helper()
	kept := map[string]bool{} // the file's initializers, as they are
	for top := range onnxpb.All(file) {
		if top.Num == onnxpb.ModelGraph {
			for x := range onnxpb.All(top.Val) {
				if x.Num == onnxpb.GraphInitializer {
					kept[string(x.Val)] = true
				}
			}
		}
	}
	for top, err := range onnxpb.All(model) {
		if err != nil {
			t.Fatalf("prepared model: %v", err)
		}
		if top.Num != onnxpb.ModelGraph {
			continue
		}
		for x, err := range onnxpb.All(top.Val) {
			if err != nil {
				t.Fatalf("prepared graph: %v", err)
			}
			if x.Num != onnxpb.GraphInitializer || kept[string(x.Val)] {
				continue
			}
			ext := map[string]string{}
			for y, err := range onnxpb.All(x.Val) {
				if err != nil {
					t.Fatalf("prepared initializer: %v", err)
				}
				if y.Num != onnxpb.TensorExternalData {
					continue
				}
				var k, v string
				for e, err := range onnxpb.All(y.Val) {
					if err != nil {
						t.Fatalf("external data entry: %v", err)
					}
					switch e.Num {
					case onnxpb.EntryKey:
						k = string(e.Val)
					case onnxpb.EntryValue:
						v = string(e.Val)
					}
				}
				ext[k] = v
			}
			off, err1 := strconv.Atoi(ext["offset"])
			n, err2 := strconv.Atoi(ext["length"])
			if ext["location"] != "model.onnx" || err1 != nil || err2 != nil || off < 0 || n < mapThreshold || off+n > len(file) {
				t.Fatalf("external data %v in a %d-byte file", ext, len(file))
			}
		}
	}
}
