package model

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of onnx.proto that graphInfo reads.
const (
	onnxModelGraph       protowire.Number = 7 // ModelProto.graph
	onnxGraphInitializer protowire.Number = 5 // GraphProto.initializer
	onnxTensorDims       protowire.Number = 1 // TensorProto.dims
	onnxTensorName       protowire.Number = 8 // TensorProto.name
)

// maxPositions reads the number of position embeddings from an ONNX file:
// the first dimension of the initializer whose name ends in
// "position_embeddings.weight" (the Hugging Face BERT export's name). It
// streams the file, skipping tensor data, so a model of any size costs a
// few KiB of memory. It returns 0 when the graph has no such initializer.
func maxPositions(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	r := &pbReader{f: f, br: bufio.NewReaderSize(f, 64<<10)}
	var found int64
	err = r.fields(st.Size(), func(num protowire.Number, typ protowire.Type, n int64) (bool, error) {
		if num != onnxModelGraph || typ != protowire.BytesType {
			return false, nil
		}
		return true, r.fields(r.pos+n, func(num protowire.Number, typ protowire.Type, n int64) (bool, error) {
			if num != onnxGraphInitializer || typ != protowire.BytesType || found > 0 {
				return false, nil
			}
			name, dims, err := r.tensorHead(r.pos + n)
			if err == nil && strings.HasSuffix(name, "position_embeddings.weight") && len(dims) == 2 {
				found = dims[0]
			}
			return true, err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("reading the graph's initializers: %w", err)
	}
	return int(found), nil
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
		case num == onnxTensorDims && typ == protowire.VarintType:
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
			case num == onnxTensorDims: // packed
				stop := r.pos + int64(n)
				for r.pos < stop {
					v, err := r.varint()
					if err != nil {
						return "", nil, err
					}
					dims = append(dims, int64(v))
				}
			case num == onnxTensorName && n <= 4096:
				b := make([]byte, n)
				if _, err := io.ReadFull(r.br, b); err != nil {
					return "", nil, err
				}
				r.pos += int64(n)
				name = string(b)
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
