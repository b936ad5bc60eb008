// Package onnxpb holds the field numbers and enum values of onnx.proto
// (onnx/onnx, IR version 8) that this project reads and writes, and the
// protowire helpers it writes fields with. model/testmodel writes ONNX
// graphs with it, model/quantize rewrites them, and model reads a graph's
// inputs, outputs and initializers without loading it; Fields splits a
// message for the last two.
//
// It may import only google.golang.org/protobuf/encoding/protowire.
package onnxpb

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// ModelProto.
const (
	ModelIRVersion     protowire.Number = 1
	ModelProducerName  protowire.Number = 2
	ModelProducerVer   protowire.Number = 3
	ModelDocString     protowire.Number = 6
	ModelGraph         protowire.Number = 7
	ModelOpsetImport   protowire.Number = 8
	ModelMetadataProps protowire.Number = 14
)

// OperatorSetIdProto and StringStringEntryProto.
const (
	OpsetDomain  protowire.Number = 1
	OpsetVersion protowire.Number = 2

	EntryKey   protowire.Number = 1
	EntryValue protowire.Number = 2
)

// GraphProto.
const (
	GraphNode        protowire.Number = 1
	GraphName        protowire.Number = 2
	GraphInitializer protowire.Number = 5
	GraphInput       protowire.Number = 11
	GraphOutput      protowire.Number = 12
)

// NodeProto.
const (
	NodeInput     protowire.Number = 1
	NodeOutput    protowire.Number = 2
	NodeName      protowire.Number = 3
	NodeOpType    protowire.Number = 4
	NodeAttribute protowire.Number = 5
	NodeDomain    protowire.Number = 7
)

// AttributeProto and its AttributeType values.
const (
	AttrName   protowire.Number = 1
	AttrF      protowire.Number = 2
	AttrI      protowire.Number = 3
	AttrT      protowire.Number = 5
	AttrG      protowire.Number = 6
	AttrInts   protowire.Number = 8
	AttrGraphs protowire.Number = 11
	AttrType   protowire.Number = 20

	AttrTypeFloat = 1
	AttrTypeInt   = 2
	AttrTypeInts  = 7
)

// TensorProto and its DataType values.
const (
	TensorDims         protowire.Number = 1
	TensorDataType     protowire.Number = 2
	TensorFloatData    protowire.Number = 4
	TensorInt64Data    protowire.Number = 7
	TensorName         protowire.Number = 8
	TensorRawData      protowire.Number = 9
	TensorExternalData protowire.Number = 13
	TensorDataLocation protowire.Number = 14

	DataTypeFloat = 1
	DataTypeUint8 = 2
	DataTypeInt8  = 3
	DataTypeInt32 = 6
	DataTypeInt64 = 7
	DataTypeBool  = 9
)

// ValueInfoProto, TypeProto, TypeProto.Tensor, TensorShapeProto and its
// Dimension.
const (
	ValueInfoName  protowire.Number = 1
	ValueInfoType  protowire.Number = 2
	TypeTensorType protowire.Number = 1
	TensorElemType protowire.Number = 1
	TensorShape    protowire.Number = 2
	ShapeDim       protowire.Number = 1
	DimValue       protowire.Number = 1
	DimParam       protowire.Number = 2
)

// AppendVarint appends a varint field.
func AppendVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// AppendBytes appends a length-delimited field.
func AppendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// AppendString appends a string field.
func AppendString(b []byte, num protowire.Number, v string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

// AppendFloat appends a float field.
func AppendFloat(b []byte, num protowire.Number, v float32) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, math.Float32bits(v))
}

// ErrMalformed reports bytes that are not a well-formed protobuf message.
var ErrMalformed = errors.New("malformed protobuf")

// Field is one encoded protobuf field: its number, wire type, the bytes of
// the whole field (tag included) and its value (Val for length-delimited
// fields, V for varints and fixed-size ones).
type Field struct {
	Num protowire.Number
	Typ protowire.Type
	Raw []byte
	Val []byte
	V   uint64
}

// Fields splits a message into its fields, without copying.
func Fields(b []byte) ([]Field, error) {
	var out []Field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(n))
		}
		f := Field{Num: num, Typ: typ}
		var m int
		switch typ {
		case protowire.VarintType:
			f.V, m = protowire.ConsumeVarint(b[n:])
		case protowire.Fixed32Type:
			var v uint32
			v, m = protowire.ConsumeFixed32(b[n:])
			f.V = uint64(v)
		case protowire.Fixed64Type:
			f.V, m = protowire.ConsumeFixed64(b[n:])
		case protowire.BytesType:
			f.Val, m = protowire.ConsumeBytes(b[n:])
		default:
			m = protowire.ConsumeFieldValue(num, typ, b[n:])
		}
		if m < 0 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(m))
		}
		f.Raw = b[:n+m]
		out = append(out, f)
		b = b[n+m:]
	}
	return out, nil
}

// Node is a parsed NodeProto: its encoding (Raw), and the parts readers
// use; Attrs holds each attribute's value field (i, f or t) by name, Ints
// each integer-list attribute.
type Node struct {
	Raw                  []byte
	Inputs, Outputs      []string
	Name, OpType, Domain string
	Attrs                map[string]Field
	Ints                 map[string][]int64
	// Subgraph is set when an attribute holds a graph (If, Loop, Scan, …):
	// such graphs may read the enclosing graph's values without naming
	// them among the node's inputs.
	Subgraph bool
}

// ParseNode parses a NodeProto without copying its encoding.
func ParseNode(b []byte) (*Node, error) {
	fs, err := Fields(b)
	if err != nil {
		return nil, err
	}
	n := &Node{Raw: b, Attrs: map[string]Field{}}
	for _, f := range fs {
		switch f.Num {
		case NodeInput:
			n.Inputs = append(n.Inputs, string(f.Val))
		case NodeOutput:
			n.Outputs = append(n.Outputs, string(f.Val))
		case NodeName:
			n.Name = string(f.Val)
		case NodeOpType:
			n.OpType = string(f.Val)
		case NodeDomain:
			n.Domain = string(f.Val)
		case NodeAttribute:
			afs, err := Fields(f.Val)
			if err != nil {
				return nil, err
			}
			var name string
			var value Field
			var ints []int64
			for _, af := range afs {
				switch af.Num {
				case AttrName:
					name = string(af.Val)
				case AttrI, AttrF, AttrT:
					value = af
				case AttrG, AttrGraphs:
					n.Subgraph = true
				case AttrInts:
					if ints, err = AppendInt64s(ints, af); err != nil {
						return nil, err
					}
				}
			}
			n.Attrs[name] = value
			if ints != nil {
				if n.Ints == nil {
					n.Ints = map[string][]int64{}
				}
				n.Ints[name] = ints
			}
		}
	}
	return n, nil
}

// AppendInt64s appends the values of one field of a repeated int64 (or
// int32) protobuf field, packed or not, to dst.
func AppendInt64s(dst []int64, f Field) ([]int64, error) {
	if f.Typ != protowire.BytesType {
		return append(dst, int64(f.V)), nil
	}
	for p := f.Val; len(p) > 0; {
		v, k := protowire.ConsumeVarint(p)
		if k < 0 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(k))
		}
		dst = append(dst, int64(v))
		p = p[k:]
	}
	return dst, nil
}

// ValueInfo is a parsed ValueInfoProto (a graph input or output): its
// name and, when its type is a tensor (Tensor), the element type (a
// TensorProto.DataType, which ORT's enum follows) and dimensions (-1 where
// symbolic; nil when no shape is given).
type ValueInfo struct {
	Name   string
	Tensor bool
	Elem   int
	Dims   []int64
}

// ParseValueInfo parses a ValueInfoProto. It reads what it can past a
// malformed part, and reports every part it could not read.
func ParseValueInfo(b []byte) (ValueInfo, error) {
	var v ValueInfo
	fs, err := Fields(b)
	for _, f := range fs {
		switch f.Num {
		case ValueInfoName:
			v.Name = string(f.Val)
		case ValueInfoType:
			err = errors.Join(err, v.parseType(f.Val))
		}
	}
	return v, err
}

// parseType reads a TypeProto's tensor_type into v.
func (v *ValueInfo) parseType(b []byte) error {
	types, err := Fields(b)
	for _, t := range types {
		if t.Num != TypeTensorType {
			continue
		}
		v.Tensor = true
		tensor, terr := Fields(t.Val)
		err = errors.Join(err, terr)
		for _, f := range tensor {
			switch f.Num {
			case TensorElemType:
				v.Elem = int(f.V)
			case TensorShape:
				dims, derr := Fields(f.Val)
				err = errors.Join(err, derr)
				for _, d := range dims {
					if d.Num != ShapeDim {
						continue
					}
					dim := int64(-1) // dim_param, or unknown
					parts, perr := Fields(d.Val)
					err = errors.Join(err, perr)
					for _, p := range parts {
						if p.Num == DimValue && p.Typ == protowire.VarintType {
							dim = int64(p.V)
						}
					}
					v.Dims = append(v.Dims, dim)
				}
			}
		}
	}
	return err
}

// DefaultDomain reports whether n is an operator of the default ONNX
// domain ("" or "ai.onnx").
func (n *Node) DefaultDomain() bool { return n.Domain == "" || n.Domain == "ai.onnx" }

// AttrInt is an integer attribute, or def when the node has none.
func (n *Node) AttrInt(name string, def int64) int64 {
	if f, ok := n.Attrs[name]; ok && f.Num == AttrI {
		return int64(f.V)
	}
	return def
}

// AttrFloat is a float attribute, or def when the node has none.
func (n *Node) AttrFloat(name string, def float32) float32 {
	if f, ok := n.Attrs[name]; ok && f.Num == AttrF {
		return math.Float32frombits(uint32(f.V))
	}
	return def
}

// AttrTensor is the encoded TensorProto of a tensor attribute (a Constant
// node's value), or nil.
func (n *Node) AttrTensor(name string) []byte {
	if f, ok := n.Attrs[name]; ok && f.Num == AttrT {
		return f.Val
	}
	return nil
}

// EncodeNode writes a NodeProto in an operator domain ("": the default),
// optional inputs at the end left out when empty.
func EncodeNode(domain, name, op string, inputs, outputs []string, attrs ...[]byte) []byte {
	for len(inputs) > 0 && inputs[len(inputs)-1] == "" {
		inputs = inputs[:len(inputs)-1]
	}
	var b []byte
	for _, in := range inputs {
		b = AppendString(b, NodeInput, in)
	}
	for _, out := range outputs {
		b = AppendString(b, NodeOutput, out)
	}
	b = AppendString(b, NodeName, name)
	b = AppendString(b, NodeOpType, op)
	for _, a := range attrs {
		b = AppendBytes(b, NodeAttribute, a)
	}
	if domain != "" {
		b = AppendString(b, NodeDomain, domain)
	}
	return b
}

// IntAttr encodes an integer AttributeProto.
func IntAttr(name string, v int64) []byte {
	b := AppendString(nil, AttrName, name)
	b = AppendVarint(b, AttrI, uint64(v))
	return AppendVarint(b, AttrType, AttrTypeInt)
}

// FloatAttr encodes a float AttributeProto.
func FloatAttr(name string, v float32) []byte {
	b := AppendString(nil, AttrName, name)
	b = AppendFloat(b, AttrF, v)
	return AppendVarint(b, AttrType, AttrTypeFloat)
}

// FreshName returns name, or name with a numeric suffix, that is not in
// names, and adds it there.
func FreshName(names map[string]bool, name string) string {
	s := name
	for k := 1; names[s]; k++ {
		s = name + "_" + strconv.Itoa(k)
	}
	names[s] = true
	return s
}

// OpsetImports returns the opset imports among a ModelProto's fields:
// domain ("" for the default) → version.
func OpsetImports(top []Field) (map[string]int64, error) {
	imports := map[string]int64{}
	for _, f := range top {
		if f.Num != ModelOpsetImport {
			continue
		}
		fs, err := Fields(f.Val)
		if err != nil {
			return nil, err
		}
		domain, version := "", int64(0)
		for _, g := range fs {
			switch g.Num {
			case OpsetDomain:
				domain = string(g.Val)
			case OpsetVersion:
				version = int64(g.V)
			}
		}
		imports[domain] = version
	}
	return imports, nil
}

// AppendOpsetImport appends an opset import to a ModelProto's bytes.
func AppendOpsetImport(model []byte, domain string, version uint64) []byte {
	op := AppendString(nil, OpsetDomain, domain)
	return AppendBytes(model, ModelOpsetImport, AppendVarint(op, OpsetVersion, version))
}
