package quantize

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of onnx.proto (onnx/onnx, IR version 8) that the rewrite
// reads or writes. Every other field is copied as it is.
const (
	fModelGraph protowire.Number = 7
	fModelOpset protowire.Number = 8

	fOpsetDomain  protowire.Number = 1
	fOpsetVersion protowire.Number = 2

	fGraphNode        protowire.Number = 1
	fGraphInitializer protowire.Number = 5
	fGraphInput       protowire.Number = 11
	fGraphOutput      protowire.Number = 12

	fNodeInput  protowire.Number = 1
	fNodeOutput protowire.Number = 2
	fNodeName   protowire.Number = 3
	fNodeOpType protowire.Number = 4
	fNodeAttr   protowire.Number = 5
	fNodeDomain protowire.Number = 7

	fAttrName protowire.Number = 1
	fAttrF    protowire.Number = 2
	fAttrI    protowire.Number = 3
	fAttrType protowire.Number = 20

	fTensorDims         protowire.Number = 1
	fTensorDataType     protowire.Number = 2
	fTensorFloatData    protowire.Number = 4
	fTensorName         protowire.Number = 8
	fTensorRawData      protowire.Number = 9
	fTensorExternalData protowire.Number = 13
	fTensorDataLocation protowire.Number = 14

	fValueInfoName protowire.Number = 1

	attrTypeInt = 2

	dataTypeFloat = 1
	dataTypeUint8 = 2
	dataTypeInt8  = 3

	domainMicrosoft = "com.microsoft"
)

// ErrMalformed reports an input that is not a well-formed ONNX model.
var ErrMalformed = errors.New("malformed ONNX model")

// field is one encoded protobuf field: its number, wire type, the bytes of
// the whole field (tag included) and, for varints and length-delimited
// fields, the value.
type field struct {
	num protowire.Number
	typ protowire.Type
	raw []byte
	val []byte // BytesType payload
	v   uint64 // VarintType, Fixed32Type, Fixed64Type value
}

// fields splits a message into its fields.
func fields(b []byte) ([]field, error) {
	var out []field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(n))
		}
		f := field{num: num, typ: typ}
		var m int
		switch typ {
		case protowire.VarintType:
			f.v, m = protowire.ConsumeVarint(b[n:])
		case protowire.Fixed32Type:
			var v uint32
			v, m = protowire.ConsumeFixed32(b[n:])
			f.v = uint64(v)
		case protowire.Fixed64Type:
			f.v, m = protowire.ConsumeFixed64(b[n:])
		case protowire.BytesType:
			f.val, m = protowire.ConsumeBytes(b[n:])
		default:
			m = protowire.ConsumeFieldValue(num, typ, b[n:])
		}
		if m < 0 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(m))
		}
		f.raw = b[:n+m]
		out = append(out, f)
		b = b[n+m:]
	}
	return out, nil
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendString(b []byte, num protowire.Number, v string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

// node is a NodeProto: the parts the rewrite reads, and the encoding it
// copies when it keeps the node.
type node struct {
	raw                  []byte
	inputs, outputs      []string
	name, opType, domain string
	attrs                map[string]field // by name: the value field (i or f)
}

func parseNode(b []byte) (*node, error) {
	fs, err := fields(b)
	if err != nil {
		return nil, err
	}
	n := &node{raw: b, attrs: map[string]field{}}
	for _, f := range fs {
		switch f.num {
		case fNodeInput:
			n.inputs = append(n.inputs, string(f.val))
		case fNodeOutput:
			n.outputs = append(n.outputs, string(f.val))
		case fNodeName:
			n.name = string(f.val)
		case fNodeOpType:
			n.opType = string(f.val)
		case fNodeDomain:
			n.domain = string(f.val)
		case fNodeAttr:
			afs, err := fields(f.val)
			if err != nil {
				return nil, err
			}
			var name string
			var value field
			for _, af := range afs {
				switch af.num {
				case fAttrName:
					name = string(af.val)
				case fAttrI, fAttrF:
					value = af
				}
			}
			n.attrs[name] = value
		}
	}
	return n, nil
}

// attrInt is an integer attribute, or def when the node has none.
func (n *node) attrInt(name string, def int64) int64 {
	if f, ok := n.attrs[name]; ok && f.num == fAttrI {
		return int64(f.v)
	}
	return def
}

// attrFloat is a float attribute, or def when the node has none.
func (n *node) attrFloat(name string, def float32) float32 {
	if f, ok := n.attrs[name]; ok && f.num == fAttrF {
		return math.Float32frombits(uint32(f.v))
	}
	return def
}

// encodeNode writes a new NodeProto in the default domain.
func encodeNode(name, op string, inputs, outputs []string, attrs ...[]byte) []byte {
	return encodeNodeIn("", name, op, inputs, outputs, attrs...)
}

// encodeNodeIn writes a new NodeProto in an operator domain.
func encodeNodeIn(domain, name, op string, inputs, outputs []string, attrs ...[]byte) []byte {
	for len(inputs) > 0 && inputs[len(inputs)-1] == "" {
		inputs = inputs[:len(inputs)-1] // omitted optional inputs
	}
	var b []byte
	for _, in := range inputs {
		b = appendString(b, fNodeInput, in)
	}
	for _, out := range outputs {
		b = appendString(b, fNodeOutput, out)
	}
	b = appendString(b, fNodeName, name)
	b = appendString(b, fNodeOpType, op)
	for _, a := range attrs {
		b = appendBytes(b, fNodeAttr, a)
	}
	if domain != "" {
		b = appendString(b, fNodeDomain, domain)
	}
	return b
}

func intAttr(name string, v int64) []byte {
	b := appendString(nil, fAttrName, name)
	b = appendVarint(b, fAttrI, uint64(v))
	return appendVarint(b, fAttrType, attrTypeInt)
}

// tensor is a TensorProto initializer.
type tensor struct {
	name     string
	dims     []int64
	dataType int
	external bool
	raw      []byte    // raw_data
	floats   []float32 // float_data
}

func parseTensor(b []byte) (*tensor, error) {
	fs, err := fields(b)
	if err != nil {
		return nil, err
	}
	t := &tensor{}
	for _, f := range fs {
		switch f.num {
		case fTensorName:
			t.name = string(f.val)
		case fTensorDataType:
			t.dataType = int(f.v)
		case fTensorDims:
			if f.typ == protowire.BytesType { // packed
				for p := f.val; len(p) > 0; {
					v, n := protowire.ConsumeVarint(p)
					if n < 0 {
						return nil, ErrMalformed
					}
					t.dims = append(t.dims, int64(v))
					p = p[n:]
				}
			} else {
				t.dims = append(t.dims, int64(f.v))
			}
		case fTensorRawData:
			t.raw = f.val
		case fTensorFloatData:
			if f.typ == protowire.BytesType {
				for p := f.val; len(p) >= 4; p = p[4:] {
					v, _ := protowire.ConsumeFixed32(p)
					t.floats = append(t.floats, math.Float32frombits(v))
				}
			} else {
				t.floats = append(t.floats, math.Float32frombits(uint32(f.v)))
			}
		case fTensorExternalData:
			t.external = true
		case fTensorDataLocation:
			t.external = t.external || f.v == 1
		}
	}
	return t, nil
}

func (t *tensor) numel() int64 {
	n := int64(1)
	for _, d := range t.dims {
		n *= d
	}
	return n
}

// float32s returns the values of a float tensor.
func (t *tensor) float32s() ([]float32, error) {
	n := t.numel()
	if t.floats != nil {
		if int64(len(t.floats)) != n {
			return nil, fmt.Errorf("%w: %s has %d floats for %d elements", ErrMalformed, t.name, len(t.floats), n)
		}
		return t.floats, nil
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

// encodeTensor writes a TensorProto with raw data.
func encodeTensor(name string, dataType int, raw []byte, dims ...int64) []byte {
	var b []byte
	for _, d := range dims {
		b = appendVarint(b, fTensorDims, uint64(d))
	}
	b = appendVarint(b, fTensorDataType, uint64(dataType))
	b = appendString(b, fTensorName, name)
	return appendBytes(b, fTensorRawData, raw)
}
