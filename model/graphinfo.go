package model

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
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

// maxGraphIO is the most inputs, and the most outputs, readGraphInfo
// takes from a graph. A BERT cross-encoder has 2 or 3 inputs and 1 output;
// graphs of IR version < 4 (exports before 2019) list their initializers
// among their inputs too, about 200 in a BERT-base cross-encoder and 3
// times as many quantized. 4096 bounds what a crafted file of 2-byte input
// fields costs: a 64-byte record each, about 1 MiB allocated for each list
// with the slice's growth.
const maxGraphIO = 1 << 12

// readGraphInfo streams an ONNX file, skipping tensor data, so a model of
// any size costs a few KiB of memory (see graphInfoFrom).
func readGraphInfo(path string) (graphInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return graphInfo{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return graphInfo{}, err
	}
	info, err := graphInfoFrom(f, st.Size())
	if err != nil {
		return info, fmt.Errorf("reading the graph: %w", err)
	}
	return info, nil
}

// graphInfoFrom reads the graph info of the ONNX model of size bytes in r,
// skipping tensor data. The file is untrusted: what it costs is bounded by
// the reader's buffer (64 KiB), by the file's size (op types, names and
// value infos are read one at a time, 64 KiB at most) and by maxGraphIO
// and onnxpb.MaxRank; a file over one of these limits is an error wrapping
// onnxpb.ErrLimit, a malformed one is errBadProto (or the read error).
func graphInfoFrom(rs io.ReadSeeker, size int64) (graphInfo, error) {
	var info graphInfo
	r := &pbReader{f: rs, br: bufio.NewReaderSize(rs, 64<<10)}
	hasInits := false
	err := r.graphFields(size, func(num protowire.Number, n int64) (bool, error) {
		switch {
		case num == onnxpb.GraphNode:
			return true, r.fields(r.pos+n, func(num protowire.Number, typ protowire.Type, n int64) (bool, error) {
				if num != onnxpb.NodeOpType || n > 256 {
					return false, nil
				}
				op, err := r.bytes(n)
				if s := string(op); s == "DynamicQuantizeLinear" || s == "DynamicQuantizeMatMul" {
					info.dynamicQuant = true
				}
				return true, err
			})
		case num == onnxpb.GraphInitializer:
			hasInits = true
			name, dims, err := r.tensorHead(r.pos + n)
			if err == nil && info.positions == 0 && positionTable(name) && len(dims) == 2 && dims[0] > 0 && dims[0] <= math.MaxInt32 {
				info.positions = int(dims[0])
			}
			return true, err
		case (num == onnxpb.GraphInput || num == onnxpb.GraphOutput) && n <= 1<<16:
			list := &info.inputs
			if num == onnxpb.GraphOutput {
				list = &info.outputs
			}
			if len(*list) == maxGraphIO {
				return true, fmt.Errorf("%w: more than %d graph inputs or outputs", onnxpb.ErrLimit, maxGraphIO)
			}
			b, err := r.bytes(n)
			if err != nil {
				return true, err
			}
			v, err := onnxpb.ParseValueInfo(b)
			*list = append(*list, v)
			return true, err
		}
		return false, nil
	})
	if err != nil || !hasInits || len(info.inputs) == 0 {
		return info, err
	}
	// Inputs that are initializers (IR < 4 lists them) are left out: a
	// second pass over the initializers' names, checked against the inputs
	// (at most maxGraphIO) rather than kept, as many as there are.
	isInit := make(map[string]bool, len(info.inputs))
	for _, v := range info.inputs {
		isInit[v.Name] = false
	}
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return info, err
	}
	r.pos = 0
	r.br.Reset(rs)
	err = r.graphFields(size, func(num protowire.Number, n int64) (bool, error) {
		if num != onnxpb.GraphInitializer {
			return false, nil
		}
		name, _, err := r.tensorHead(r.pos + n)
		if _, ok := isInit[name]; ok {
			isInit[name] = true
		}
		return true, err
	})
	if err != nil {
		return info, err
	}
	info.inputs = slices.DeleteFunc(info.inputs, func(v onnxpb.ValueInfo) bool { return isInit[v.Name] })
	return info, nil
}

// graphFields calls visit for each length-delimited field of the graphs of
// the ModelProto that ends at end, as fields does.
func (r *pbReader) graphFields(end int64, visit func(num protowire.Number, n int64) (bool, error)) error {
	return r.fields(end, func(num protowire.Number, typ protowire.Type, n int64) (bool, error) {
		if num != onnxpb.ModelGraph {
			return false, nil
		}
		return true, r.fields(r.pos+n, func(num protowire.Number, typ protowire.Type, n int64) (bool, error) {
			return visit(num, n)
		})
	})
}

// positionTable reports whether an initializer is BERT's position
// embeddings (fp32, or the _quantized copy some quantizers write).
func positionTable(name string) bool {
	return strings.HasSuffix(name, "position_embeddings.weight") || strings.HasSuffix(name, "position_embeddings.weight_quantized")
}

// bytes reads the next n bytes.
func (r *pbReader) bytes(n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r.br, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	r.pos += n
	return b, nil
}

// pbReader walks protobuf messages in a file without loading them.
type pbReader struct {
	f   io.ReadSeeker
	br  *bufio.Reader
	pos int64
}

// errBadProto reports a model file that is not a well-formed ONNX
// protobuf.
var errBadProto = errors.New("malformed protobuf")

func (r *pbReader) varint() (uint64, error) {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		b, err := r.br.ReadByte()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // fields reads only before a message's end
		}
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

// length reads the length of a length-delimited field, which must end by
// end.
func (r *pbReader) length(end int64) (int64, error) {
	n, err := r.varint()
	if err != nil {
		return 0, err
	}
	if n > uint64(max(end-r.pos, 0)) {
		return 0, errBadProto
	}
	return int64(n), nil
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
			var n int64
			if n, err = r.length(end); err != nil {
				return err
			}
			start := r.pos
			used, verr := visit(num, typ, n)
			if verr != nil {
				return verr
			}
			if !used {
				err = r.skip(n)
			} else if r.pos != start+n {
				err = r.skip(start + n - r.pos)
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

// tensorHead reads a TensorProto's name and dims (at most onnxpb.MaxRank),
// skipping its data.
func (r *pbReader) tensorHead(end int64) (name string, dims []int64, err error) {
	dim := func(v uint64) error {
		if len(dims) == onnxpb.MaxRank {
			return fmt.Errorf("%w: a tensor of more than %d dimensions", onnxpb.ErrLimit, onnxpb.MaxRank)
		}
		dims = append(dims, int64(v))
		return nil
	}
	for r.pos < end {
		tag, err := r.varint()
		if err != nil {
			return "", nil, err
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		switch {
		case num == onnxpb.TensorDims && typ == protowire.VarintType:
			v, err := r.varint()
			if err == nil {
				err = dim(v)
			}
			if err != nil {
				return "", nil, err
			}
		case typ == protowire.VarintType:
			if _, err := r.varint(); err != nil {
				return "", nil, err
			}
		case typ == protowire.Fixed32Type:
			err = r.skip(4)
		case typ == protowire.Fixed64Type:
			err = r.skip(8)
		case typ == protowire.BytesType:
			n, err := r.length(end)
			if err != nil {
				return "", nil, err
			}
			switch {
			case num == onnxpb.TensorDims: // packed
				stop := r.pos + n
				for r.pos < stop {
					v, err := r.varint()
					if err == nil {
						err = dim(v)
					}
					if err != nil {
						return "", nil, err
					}
				}
			case num == onnxpb.TensorName && n <= 4096:
				b, err := r.bytes(n)
				if err != nil {
					return "", nil, err
				}
				name = string(b)
			default:
				if err := r.skip(n); err != nil {
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
