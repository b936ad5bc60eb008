package model

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rerank/rerank/internal/onnxpb"
)

// graphInfo is what Load reads from an ONNX file besides its interface.
type graphInfo struct {
	// positions is the number of position embeddings: the first dimension
	// of the initializer whose name ends in "position_embeddings.weight"
	// (the Hugging Face BERT export's name), or 0 when there is none.
	positions int
	// dynamicQuant is set when the graph quantizes activations at run time
	// with one scale per tensor (DynamicQuantizeLinear, DynamicQuantizeMatMul:
	// `rerank quantize`, onnxruntime's quantize_dynamic, transformers.js'
	// model_quantized.onnx): then a pair's scores depend on the other pairs
	// of its batch.
	dynamicQuant bool
	// inputs and outputs of the graph (inputs that are initializers, as
	// IR < 4 lists them, left out).
	inputs, outputs []onnxpb.ValueInfo
}

// readGraphInfo streams an ONNX file, skipping tensor data, so a model of
// any size costs a few KiB of memory.
func readGraphInfo(path string) (graphInfo, error) {
	var info graphInfo
	f, err := os.Open(path)
	if err != nil {
		return info, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return info, err
	}
	r := &pbReader{f: f, br: bufio.NewReaderSize(f, 64<<10)}
	inits := map[string]bool{}
	err = r.fields(st.Size(), func(num protowire.Number, typ protowire.Type, n int64) (bool, error) {
		if num != onnxpb.ModelGraph || typ != protowire.BytesType {
			return false, nil
		}
		return true, r.fields(r.pos+n, func(num protowire.Number, typ protowire.Type, n int64) (bool, error) {
			switch {
			case typ != protowire.BytesType:
				return false, nil
			case num == onnxpb.GraphNode:
				return true, r.fields(r.pos+n, func(num protowire.Number, typ protowire.Type, n int64) (bool, error) {
					if num != onnxpb.NodeOpType || n > 256 {
						return false, nil
					}
					op, err := r.bytes(n)
					if op == "DynamicQuantizeLinear" || op == "DynamicQuantizeMatMul" {
						info.dynamicQuant = true
					}
					return true, err
				})
			case num == onnxpb.GraphInitializer:
				name, dims, err := r.tensorHead(r.pos + n)
				if err == nil && info.positions == 0 && positionTable(name) && len(dims) == 2 {
					info.positions = int(dims[0])
				}
				inits[name] = true
				return true, err
			case (num == onnxpb.GraphInput || num == onnxpb.GraphOutput) && n <= 1<<16:
				b, err := r.bytes(n)
				if err != nil {
					return true, err
				}
				v, err := onnxpb.ParseValueInfo([]byte(b))
				if num == onnxpb.GraphInput {
					info.inputs = append(info.inputs, v)
				} else {
					info.outputs = append(info.outputs, v)
				}
				return true, err
			}
			return false, nil
		})
	})
	if err != nil {
		return info, fmt.Errorf("reading the graph: %w", err)
	}
	info.inputs = slices.DeleteFunc(info.inputs, func(v onnxpb.ValueInfo) bool { return inits[v.Name] })
	return info, nil
}

// positionTable reports whether an initializer is BERT's position
// embeddings (fp32, or the _quantized copy some quantizers write).
func positionTable(name string) bool {
	return strings.HasSuffix(name, "position_embeddings.weight") || strings.HasSuffix(name, "position_embeddings.weight_quantized")
}

// bytes reads n bytes as a string.
func (r *pbReader) bytes(n int64) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r.br, b); err != nil {
		return "", err
	}
	r.pos += n
	return string(b), nil
}

// pbReader walks protobuf messages in a file without loading them.
type pbReader struct {
	f   *os.File
	br  *bufio.Reader
	pos int64
}

var errBadProto = errors.New("malformed protobuf")

func (r *pbReader) varint() (uint64, error) {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		b, err := r.br.ReadByte()
		if err != nil {
			return 0, err
		}
		r.pos++
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, errBadProto
}

func (r *pbReader) skip(n int64) error {
	if n < 0 {
		return errBadProto
	}
	if n <= int64(r.br.Buffered()) {
		_, err := r.br.Discard(int(n))
		r.pos += n
		return err
	}
	r.pos += n
	if _, err := r.f.Seek(r.pos, io.SeekStart); err != nil {
		return err
	}
	r.br.Reset(r.f)
	return nil
}

// fields reads the fields of a message ending at end. For each
// length-delimited field, visit is called with its length; it returns
// whether it consumed the field's bytes itself. Every other field, and
// every field visit leaves, is skipped.
func (r *pbReader) fields(end int64, visit func(num protowire.Number, typ protowire.Type, n int64) (bool, error)) error {
	for r.pos < end {
		tag, err := r.varint()
		if err != nil {
			return err
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		switch typ {
		case protowire.VarintType:
			if _, err := r.varint(); err != nil {
				return err
			}
		case protowire.Fixed32Type:
			err = r.skip(4)
		case protowire.Fixed64Type:
			err = r.skip(8)
		case protowire.BytesType:
			var n uint64
			if n, err = r.varint(); err != nil {
				return err
			}
			if int64(n) < 0 || r.pos+int64(n) > end {
				return errBadProto
			}
			start := r.pos
			used, verr := visit(num, typ, int64(n))
			if verr != nil {
				return verr
			}
			if !used {
				err = r.skip(int64(n))
			} else if r.pos != start+int64(n) {
				err = r.skip(start + int64(n) - r.pos)
			}
		default:
			return errBadProto
		}
		if err != nil {
			return err
		}
	}
	if r.pos != end {
		return errBadProto
	}
	return nil
}

// tensorHead reads a TensorProto's name and dims, skipping its data.
func (r *pbReader) tensorHead(end int64) (name string, dims []int64, err error) {
	for r.pos < end {
		tag, err := r.varint()
		if err != nil {
			return "", nil, err
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		switch {
		case num == onnxpb.TensorDims && typ == protowire.VarintType:
			v, err := r.varint()
			if err != nil {
				return "", nil, err
			}
			dims = append(dims, int64(v))
		case typ == protowire.VarintType:
			if _, err := r.varint(); err != nil {
				return "", nil, err
			}
		case typ == protowire.Fixed32Type:
			err = r.skip(4)
		case typ == protowire.Fixed64Type:
			err = r.skip(8)
		case typ == protowire.BytesType:
			n, err := r.varint()
			if err != nil {
				return "", nil, err
			}
			if int64(n) < 0 || r.pos+int64(n) > end {
				return "", nil, errBadProto
			}
			switch {
			case num == onnxpb.TensorDims: // packed
				stop := r.pos + int64(n)
				for r.pos < stop {
					v, err := r.varint()
					if err != nil {
						return "", nil, err
					}
					dims = append(dims, int64(v))
				}
			case num == onnxpb.TensorName && n <= 4096:
				if name, err = r.bytes(int64(n)); err != nil {
					return "", nil, err
				}
			default:
				if err := r.skip(int64(n)); err != nil {
					return "", nil, err
				}
			}
		default:
			return "", nil, errBadProto
		}
		if err != nil {
			return "", nil, err
		}
	}
	return name, dims, nil
}

// ortInfo gives the inputs and outputs in ONNX Runtime's types.
func (g graphInfo) ortInfo() (ins, outs []ort.InputOutputInfo) {
	conv := func(vs []onnxpb.ValueInfo) []ort.InputOutputInfo {
		out := make([]ort.InputOutputInfo, len(vs))
		for i, v := range vs {
			out[i] = ort.InputOutputInfo{Name: v.Name, OrtValueType: ort.ONNXTypeUnknown,
				DataType: ort.TensorElementDataType(v.Elem), Dimensions: ort.Shape(v.Dims)}
			if v.Tensor {
				out[i].OrtValueType = ort.ONNXTypeTensor
			}
		}
		return out
	}
	return conv(g.inputs), conv(g.outputs)
}
