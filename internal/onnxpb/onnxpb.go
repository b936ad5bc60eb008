// Package onnxpb holds the field numbers and enum values of onnx.proto
// (onnx/onnx, IR version 8) that this project reads and writes, and the
// protowire helpers it writes fields with. model/testmodel writes ONNX
// graphs with it, model/quantize rewrites them, and model reads a graph's
// inputs, outputs and initializers without loading it; All and Fields
// split a message for the last two. What its readers keep of a message is
// bounded by the message's size (ErrLimit), for a model file is untrusted
// input.
//
// It may import only google.golang.org/protobuf/encoding/protowire.
package onnxpb

import (
	"errors"
	"fmt"
	"iter"
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

// ErrLimit reports a well-formed message that holds more than a reader of
// this package keeps: more fields than Fields records for its size, a node
// of more inputs and outputs than ParseNode keeps for its size, or a tensor
// of more than MaxRank dimensions. Readers of a model file, which is
// untrusted input, are thus bounded in memory by the file's size.
var ErrLimit = errors.New("protobuf message over a reader's limit")

// MaxRank is the most dimensions ParseValueInfo (and this project's other
// readers) take in a tensor. ONNX sets no maximum, but ONNX Runtime's
// kernels stop far below it (most at 8 or so), and a BERT cross-encoder's
// tensors have 4 at most; a shape of 2-byte dims must not cost 8 bytes each
// without end.
const MaxRank = 64

// fieldsFree and fieldBytes bound Fields: it keeps at most fieldsFree +
// len(b)/fieldBytes records. A Field is 64 bytes, so a message of n bytes
// costs at most 4n bytes plus 4 KiB (instead of up to 32n for one of 2-byte
// fields). The messages this project indexes with Fields, ModelProto and
// GraphProto, hold far fewer: a GraphProto's fields are nodes, tensors and
// value infos of 16 bytes and more in any real export (names alone take
// that), and its weights' bytes count too.
const (
	fieldsFree = 64
	fieldBytes = 16
)

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

// next consumes the first field of b: it and its length, or ErrMalformed.
func next(b []byte) (Field, int, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return Field{}, 0, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(n))
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
		return Field{}, 0, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(m))
	}
	f.Raw = b[:n+m]
	return f, n + m, nil
}

// All yields the fields of a message in order, without copying or
// allocating; at a malformed field it yields a zero Field and an
// ErrMalformed error, and stops. Unlike Fields it takes messages of any
// number of fields: use it where one pass in order is enough.
func All(b []byte) iter.Seq2[Field, error] {
	return func(yield func(Field, error) bool) {
		for len(b) > 0 {
			f, n, err := next(b)
			if err != nil {
				yield(Field{}, err)
				return
			}
			if !yield(f, nil) {
				return
			}
			b = b[n:]
		}
	}
}

// Fields splits a message into its fields, without copying, for readers
// that index them. It returns ErrMalformed for bytes that are not a
// message, and ErrLimit for a message of more than 64 + len(b)/16 fields
// (so its records take at most 4 bytes per byte of b, plus 4 KiB); it
// allocates no record in either case. All reads a message of many small
// fields.
func Fields(b []byte) ([]Field, error) {
	count := 0
	for _, err := range All(b) {
		if err != nil {
			return nil, err
		}
		count++
	}
	if most := fieldsFree + len(b)/fieldBytes; count > most {
		return nil, fmt.Errorf("%w: %d fields in a message of %d bytes (at most %d)", ErrLimit, count, len(b), most)
	}
	out := make([]Field, 0, count)
	for f := range All(b) {
		out = append(out, f)
	}
	return out, nil
}

// Node is a parsed NodeProto: its encoding (Raw), and the parts readers
// use. Its attributes are read from Raw when asked for (AttrInt,
// AttrFloat, AttrTensor, AttrInts): a node keeps no record per attribute.
type Node struct {
	Raw                  []byte
	Inputs, Outputs      []string
	Name, OpType, Domain string
	// NumAttrs is the number of its attributes.
	NumAttrs int
	// Subgraph is set when an attribute holds a graph (If, Loop, Scan, …):
	// such graphs may read the enclosing graph's values without naming
	// them among the node's inputs.
	Subgraph bool
}

// nodeFree is the number of inputs and outputs that ParseNode takes from a
// node of any size.
const nodeFree = 16

// ParseNode parses a NodeProto without copying its encoding; it checks
// that its attributes are well-formed. A node of more than
// nodeFree + len(b)/4 inputs and outputs is an ErrLimit error: what
// ParseNode keeps of b then takes at most 4 bytes of string headers per
// byte of b, plus the names (at most len(b)) and 256 bytes, whatever b
// holds.
func ParseNode(b []byte) (*Node, error) {
	n := &Node{Raw: b}
	ins, outs := 0, 0
	for f, err := range All(b) {
		if err != nil {
			return nil, err
		}
		switch f.Num {
		case NodeInput:
			ins++
		case NodeOutput:
			outs++
		case NodeAttribute:
			n.NumAttrs++
			if err := n.checkAttr(f.Val); err != nil {
				return nil, err
			}
		}
	}
	if most := nodeFree + len(b)/4; ins+outs > most {
		return nil, fmt.Errorf("%w: a node of %d inputs and outputs in %d bytes (at most %d)", ErrLimit, ins+outs, len(b), most)
	}
	if ins > 0 {
		n.Inputs = make([]string, 0, ins)
	}
	if outs > 0 {
		n.Outputs = make([]string, 0, outs)
	}
	for f := range All(b) {
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
		}
	}
	return n, nil
}

// checkAttr checks that an AttributeProto, and its integer lists, are
// well-formed, and notes a subgraph.
func (n *Node) checkAttr(b []byte) error {
	for af, err := range All(b) {
		if err != nil {
			return err
		}
		switch af.Num {
		case AttrG, AttrGraphs:
			n.Subgraph = true
		case AttrInts:
			if af.Typ != protowire.BytesType {
				continue
			}
			for p := af.Val; len(p) > 0; {
				_, k := protowire.ConsumeVarint(p)
				if k < 0 {
					return fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(k))
				}
				p = p[k:]
			}
		}
	}
	return nil
}

// attr is the last attribute of n named name (ParseNode checked them all),
// or nil.
func (n *Node) attr(name string) []byte {
	var last []byte
	for f := range All(n.Raw) {
		if f.Num != NodeAttribute {
			continue
		}
		var attrName []byte
		for af := range All(f.Val) {
			if af.Num == AttrName {
				attrName = af.Val
			}
		}
		if string(attrName) == name {
			last = f.Val
		}
	}
	return last
}

// attrValue is the value field (i, f or t) of the attribute named name: of
// its last such field; the zero Field when there is none.
func (n *Node) attrValue(name string) Field {
	var value Field
	for af := range All(n.attr(name)) {
		switch af.Num {
		case AttrI, AttrF, AttrT:
			value = af
		}
	}
	return value
}

// AttrInts is an integer-list attribute (a new slice), or nil when the
// node has none of that name.
func (n *Node) AttrInts(name string) []int64 {
	var ints []int64
	for af := range All(n.attr(name)) {
		if af.Num == AttrInts {
			ints, _ = AppendInt64s(ints, af) // well-formed: ParseNode checked
		}
	}
	return ints
}

// AppendDims appends the values of one TensorProto.dims field, packed or
// not, to dst, like AppendInt64s; past MaxRank values in all it returns an
// ErrLimit error, having allocated for no more than MaxRank.
func AppendDims(dst []int64, f Field) ([]int64, error) {
	if f.Typ != protowire.BytesType {
		if len(dst) >= MaxRank {
			return nil, fmt.Errorf("%w: a tensor of more than %d dimensions", ErrLimit, MaxRank)
		}
		return append(dst, int64(f.V)), nil
	}
	for p := f.Val; len(p) > 0; {
		v, k := protowire.ConsumeVarint(p)
		if k < 0 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(k))
		}
		if len(dst) >= MaxRank {
			return nil, fmt.Errorf("%w: a tensor of more than %d dimensions", ErrLimit, MaxRank)
		}
		dst = append(dst, int64(v))
		p = p[k:]
	}
	return dst, nil
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
// symbolic; nil when no shape is given; at most MaxRank).
type ValueInfo struct {
	Name   string
	Tensor bool
	Elem   int
	Dims   []int64
}

// ParseValueInfo parses a ValueInfoProto. It reads what it can past a
// malformed part, and reports every part it could not read; a shape of
// more than MaxRank dimensions is an ErrLimit error, its first MaxRank
// kept.
func ParseValueInfo(b []byte) (ValueInfo, error) {
	var v ValueInfo
	var errs []error
	for f, err := range All(b) {
		if err != nil {
			errs = append(errs, err)
			break
		}
		switch f.Num {
		case ValueInfoName:
			v.Name = string(f.Val)
		case ValueInfoType:
			errs = append(errs, v.parseType(f.Val))
		}
	}
	return v, errors.Join(errs...)
}

// parseType reads a TypeProto's tensor_type into v.
func (v *ValueInfo) parseType(b []byte) error {
	var errs []error
	for t, err := range All(b) {
		if err != nil {
			errs = append(errs, err)
			break
		}
		if t.Num != TypeTensorType {
			continue
		}
		v.Tensor = true
		for f, err := range All(t.Val) {
			if err != nil {
				errs = append(errs, err)
				break
			}
			switch f.Num {
			case TensorElemType:
				v.Elem = int(f.V)
			case TensorShape:
				errs = append(errs, v.parseShape(f.Val))
			}
		}
	}
	return errors.Join(errs...)
}

// parseShape appends a TensorShapeProto's dimensions to v.Dims, at most
// MaxRank in all.
func (v *ValueInfo) parseShape(b []byte) error {
	var errs []error
	for d, err := range All(b) {
		if err != nil {
			errs = append(errs, err)
			break
		}
		if d.Num != ShapeDim {
			continue
		}
		if len(v.Dims) == MaxRank {
			errs = append(errs, fmt.Errorf("%w: %s has more than %d dimensions", ErrLimit, v.Name, MaxRank))
			break
		}
		dim := int64(-1) // dim_param, or unknown
		for p, err := range All(d.Val) {
			if err != nil {
				errs = append(errs, err)
				break
			}
			if p.Num == DimValue && p.Typ == protowire.VarintType {
				dim = int64(p.V)
			}
		}
		v.Dims = append(v.Dims, dim)
	}
	return errors.Join(errs...)
}

// DomainMicrosoft is the operator domain of ONNX Runtime's contrib
// operators (SkipLayerNormalization, QAttention, MatMulIntegerToFloat…).
const DomainMicrosoft = "com.microsoft"

// DefaultDomain reports whether n is an operator of the default ONNX
// domain ("" or "ai.onnx").
func (n *Node) DefaultDomain() bool { return n.Domain == "" || n.Domain == "ai.onnx" }

// AttrInt is an integer attribute, or def when the node has none.
func (n *Node) AttrInt(name string, def int64) int64 {
	if f := n.attrValue(name); f.Num == AttrI {
		return int64(f.V)
	}
	return def
}

// AttrFloat is a float attribute, or def when the node has none.
func (n *Node) AttrFloat(name string, def float32) float32 {
	if f := n.attrValue(name); f.Num == AttrF {
		return math.Float32frombits(uint32(f.V))
	}
	return def
}

// AttrTensor is the encoded TensorProto of a tensor attribute (a Constant
// node's value), or nil.
func (n *Node) AttrTensor(name string) []byte {
	if f := n.attrValue(name); f.Num == AttrT {
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
		domain, version := "", int64(0)
		for g, err := range All(f.Val) {
			if err != nil {
				return nil, err
			}
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
