package quantize

import (
	"fmt"
	"slices"

	"github.com/rerank/rerank/internal/onnxpb"
)

// Graph rewrites a serialized ONNX ModelProto.
func Graph(model []byte, opts Options) ([]byte, Report, error) {
	var rep Report
	if err := opts.Validate(); err != nil {
		return nil, rep, err
	}
	m, err := parseModel(model)
	if err != nil {
		return nil, rep, err
	}
	graph, microsoft, err := rewriteGraph(m.top[m.graphAt].Val, opts, &rep)
	if err != nil {
		return nil, rep, err
	}
	out := m.with(graph)
	if microsoft && !m.hasMicrosoft {
		out = onnxpb.AppendOpsetImport(out, onnxpb.DomainMicrosoft, 1)
	}
	return out, rep, nil
}

// Observe returns model with the activations that Graph would quantize
// with opts added to its outputs, and their names: running it on a
// calibration job gives their ranges (Options.Ranges).
func Observe(model []byte, opts Options) ([]byte, []string, error) {
	if err := opts.Validate(); err != nil {
		return nil, nil, err
	}
	m, err := parseModel(model)
	if err != nil {
		return nil, nil, err
	}
	gf, err := fields(m.top[m.graphAt].Val)
	if err != nil {
		return nil, nil, err
	}
	g, err := parseGraph(gf, opts)
	if err != nil {
		return nil, nil, err
	}
	var names []string
	seen := map[string]bool{}
	graph := slices.Clone(m.top[m.graphAt].Val)
	for i, n := range g.nodes {
		if x := n.inputs[0]; g.weights[i] != nil && !seen[x] {
			seen[x] = true
			names = append(names, x)
			if !g.outputs[x] {
				elem := onnxpb.AppendVarint(nil, onnxpb.TensorElemType, onnxpb.DataTypeFloat)
				typ := onnxpb.AppendBytes(nil, onnxpb.TypeTensorType, elem)
				vi := onnxpb.AppendBytes(onnxpb.AppendString(nil, onnxpb.ValueInfoName, x), onnxpb.ValueInfoType, typ)
				graph = onnxpb.AppendBytes(graph, onnxpb.GraphOutput, vi)
			}
		}
	}
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("%w: no weight MatMul or Gemm to quantize", ErrUnsupported)
	}
	return m.with(graph), names, nil
}

// modelProto is a parsed ModelProto's top level.
type modelProto struct {
	top          []field
	graphAt      int
	hasMicrosoft bool
}

func parseModel(model []byte) (*modelProto, error) {
	top, err := fields(model)
	if err != nil {
		return nil, err
	}
	m := &modelProto{top: top, graphAt: -1}
	for i, f := range top {
		if f.Num != onnxpb.ModelGraph {
			continue
		}
		if m.graphAt >= 0 {
			return nil, fmt.Errorf("%w: two graph fields", ErrMalformed)
		}
		m.graphAt = i
	}
	imports, err := onnxpb.OpsetImports(top)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	opset, ok := imports[""]
	if !ok {
		if opset, ok = imports["ai.onnx"]; !ok {
			opset = -1
		}
	}
	_, m.hasMicrosoft = imports[onnxpb.DomainMicrosoft]
	if m.graphAt < 0 {
		return nil, fmt.Errorf("%w: no graph", ErrMalformed)
	}
	if opset < minOpset {
		return nil, fmt.Errorf("%w: default opset %d, DynamicQuantizeLinear needs %d (re-export with a newer opset)", ErrUnsupported, opset, minOpset)
	}
	return m, nil
}

// with returns the model with its graph replaced.
func (m *modelProto) with(graph []byte) []byte {
	out := make([]byte, 0, len(graph)+1024)
	for i, f := range m.top {
		if i == m.graphAt {
			out = onnxpb.AppendBytes(out, onnxpb.ModelGraph, graph)
			continue
		}
		out = append(out, f.Raw...)
	}
	return out
}
