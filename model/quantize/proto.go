package quantize

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rerank/rerank/internal/onnxpb"
)

// ErrMalformed reports an input that is not a well-formed ONNX model.
var ErrMalformed = errors.New("malformed ONNX model")

// field is one encoded protobuf field (onnxpb.Field).
type field = onnxpb.Field

// fields splits a message into its fields; a malformed one, or one of more
// fields than onnxpb.Fields keeps for its size (onnxpb.ErrLimit), is
// ErrMalformed.
func fields(b []byte) ([]field, error) {
	fs, err := onnxpb.Fields(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return fs, nil
}

// node is a NodeProto: the parts the rewrite reads, and the encoding it
// copies when it keeps the node.
type node struct {
	raw                  []byte
	inputs, outputs      []string
	name, opType, domain string
	pb                   *onnxpb.Node
}

func parseNode(b []byte) (*node, error) {
	n, err := onnxpb.ParseNode(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return &node{raw: n.Raw, inputs: n.Inputs, outputs: n.Outputs, name: n.Name, opType: n.OpType, domain: n.Domain, pb: n}, nil
}

// other is the input of a two-input node that is not v (its first when v
// is its second or neither).
func (n *node) other(v string) string {
	if n.inputs[0] == v {
		return n.inputs[1]
	}
	return n.inputs[0]
}

// transB reports whether n is a Gemm whose weight (B) is transposed.
func (n *node) transB() bool { return n.opType == "Gemm" && n.attrInt("transB", 0) != 0 }

// attrInt is an integer attribute, or def when the node has none.
func (n *node) attrInt(name string, def int64) int64 { return n.pb.AttrInt(name, def) }

// attrFloat is a float attribute, or def when the node has none.
func (n *node) attrFloat(name string, def float32) float32 { return n.pb.AttrFloat(name, def) }

func intAttr(name string, v int64) []byte { return onnxpb.IntAttr(name, v) }

// maxConstInts is the most values int64s reads: shape and axes constants
// are short, and parseTensor keeps no more of a tensor's int64_data.
const maxConstInts = 16

// tensor is a TensorProto initializer.
type tensor struct {
	name     string
	dims     []int64 // at most onnxpb.MaxRank
	dataType int
	external bool
	raw      []byte    // raw_data
	floats   []float32 // float_data
	ints     []int64   // int64_data: its first maxConstInts values
	nInts    int64     // int64_data: the number of values
}

// parseTensor parses a TensorProto; one of more than onnxpb.MaxRank
// dimensions is ErrMalformed (and onnxpb.ErrLimit).
func parseTensor(b []byte) (*tensor, error) {
	t := &tensor{}
	for f, err := range onnxpb.All(b) {
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		switch f.Num {
		case onnxpb.TensorName:
			t.name = string(f.Val)
		case onnxpb.TensorDataType:
			t.dataType = int(f.V)
		case onnxpb.TensorDims:
			if t.dims, err = onnxpb.AppendDims(t.dims, f); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
			}
		case onnxpb.TensorRawData:
			t.raw = f.Val
		case onnxpb.TensorFloatData:
			if f.Typ == protowire.BytesType {
				for p := f.Val; len(p) >= 4; p = p[4:] {
					v, _ := protowire.ConsumeFixed32(p)
					t.floats = append(t.floats, math.Float32frombits(v))
				}
			} else {
				t.floats = append(t.floats, math.Float32frombits(uint32(f.V)))
			}
		case onnxpb.TensorInt64Data:
			if err := t.appendInts(f); err != nil {
				return nil, err
			}
		case onnxpb.TensorExternalData:
			t.external = true
		case onnxpb.TensorDataLocation:
			t.external = t.external || f.V == 1
		}
	}
	return t, nil
}

// appendInts counts the values of one int64_data field, packed or not,
// and keeps them while there are at most maxConstInts.
func (t *tensor) appendInts(f field) error {
	if f.Typ != protowire.BytesType {
		if t.nInts++; t.nInts <= maxConstInts {
			t.ints = append(t.ints, int64(f.V))
		}
		return nil
	}
	for p := f.Val; len(p) > 0; {
		v, k := protowire.ConsumeVarint(p)
		if k < 0 {
			return fmt.Errorf("%w: %s: %w", ErrMalformed, t.name, protowire.ParseError(k))
		}
		if t.nInts++; t.nInts <= maxConstInts {
			t.ints = append(t.ints, int64(v))
		}
		p = p[k:]
	}
	return nil
}

// numel is the number of elements of t's dims, when every dim is at least
// 0 and their product at most have, the elements its data holds; else
// ErrMalformed. A tensor's dims are untrusted: their product may be
// negative, or overflow, or wrap to what its data happens to hold.
func (t *tensor) numel(have int64) (int64, error) {
	for _, d := range t.dims {
		if d < 0 {
			return 0, fmt.Errorf("%w: %s has a dimension of %d", ErrMalformed, t.name, d)
		}
	}
	if slices.Contains(t.dims, 0) {
		return 0, nil
	}
	n := int64(1)
	for _, d := range t.dims {
		if d > have/n {
			return 0, fmt.Errorf("%w: %s: dims %v give more than the %d elements its data holds", ErrMalformed, t.name, t.dims, have)
		}
		n *= d
	}
	return n, nil
}

// float32s returns a copy of the values of a float tensor (its callers
// scale them in place), or ErrMalformed when its dims do not give the
// number of values its data holds.
func (t *tensor) float32s() ([]float32, error) {
	if t.floats != nil {
		n, err := t.numel(int64(len(t.floats)))
		if err != nil {
			return nil, err
		}
		if int64(len(t.floats)) != n {
			return nil, fmt.Errorf("%w: %s has %d floats for %d elements", ErrMalformed, t.name, len(t.floats), n)
		}
		return slices.Clone(t.floats), nil
	}
	n, err := t.numel(int64(len(t.raw) / 4))
	if err != nil {
		return nil, err
	}
	if int64(len(t.raw)) != 4*n {
		return nil, fmt.Errorf("%w: %s has %d bytes for %d floats", ErrMalformed, t.name, len(t.raw), n)
	}
	out := make([]float32, n)
	for i := range out {
		v, _ := protowire.ConsumeFixed32(t.raw[4*i:])
		out[i] = math.Float32frombits(v)
	}
	return out, nil
}

// int64s returns the values of a small int64 tensor (a shape or axes
// constant: at most maxConstInts values), or nil when it is not one.
func (t *tensor) int64s() []int64 {
	if t.dataType != onnxpb.DataTypeInt64 || t.external {
		return nil
	}
	if t.nInts > 0 {
		if n, err := t.numel(min(t.nInts, maxConstInts)); err != nil || n != t.nInts {
			return nil
		}
		return t.ints
	}
	n, err := t.numel(min(int64(len(t.raw)/8), maxConstInts))
	if err != nil || int64(len(t.raw)) != 8*n {
		return nil
	}
	out := make([]int64, n)
	for i := range out {
		v, _ := protowire.ConsumeFixed64(t.raw[8*i:])
		out[i] = int64(v)
	}
	return out
}

// scalar returns the value of a one-element float tensor.
func (t *tensor) scalar() (float32, bool) {
	if t.dataType != onnxpb.DataTypeFloat || t.external {
		return 0, false
	}
	if n, err := t.numel(1); err != nil || n != 1 {
		return 0, false
	}
	v, err := t.float32s()
	if err != nil {
		return 0, false
	}
	return v[0], true
}

// encodeTensor writes a TensorProto with raw data.
func encodeTensor(name string, dataType int, raw []byte, dims ...int64) []byte {
	var b []byte
	for _, d := range dims {
		b = onnxpb.AppendVarint(b, onnxpb.TensorDims, uint64(d))
	}
	b = onnxpb.AppendVarint(b, onnxpb.TensorDataType, uint64(dataType))
	b = onnxpb.AppendString(b, onnxpb.TensorName, name)
	return onnxpb.AppendBytes(b, onnxpb.TensorRawData, raw)
}
