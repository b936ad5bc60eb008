package model

import (
	"errors"
	"path/filepath"
	"strconv"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rerank/rerank/internal/onnxpb"
)

// mapThreshold is the smallest initializer whose bytes onnxruntime maps
// from the model file instead of copying (smaller ones stay inline).
const mapThreshold = 4096

// errNothingToMap reports a graph with no inline initializer worth mapping.
var errNothingToMap = errors.New("no large inline initializer")

// mappedGraph returns the ONNX model in file (its bytes) with the raw data
// of every large inline initializer replaced by an external-data reference
// to the same bytes in the same file (location: the file's name, offset and
// length). Created from these few hundred kilobytes with the file's folder
// as the external-data folder, an onnxruntime session maps the weights
// from the file instead of reading and copying them several times: for the
// 133 MB L12 model, session creation took 0.4–0.5 s instead of 1.1–1.4 s
// here (BENCHMARKS.md, cold start). The scores are the same bits.
func mappedGraph(file string, data []byte) ([]byte, error) {
	top, err := onnxpb.Fields(data)
	if err != nil {
		return nil, err
	}
	location := filepath.Base(file)
	out := make([]byte, 0, 1<<20)
	mapped := 0
	at := 0 // offset of the current top-level field in data
	for _, f := range top {
		if f.Num != onnxpb.ModelGraph || f.Typ != protowire.BytesType {
			out = append(out, f.Raw...)
			at += len(f.Raw)
			continue
		}
		gAt := at + len(f.Raw) - len(f.Val)
		gf, err := onnxpb.Fields(f.Val)
		if err != nil {
			return nil, err
		}
		var g []byte
		for _, x := range gf {
			if x.Num != onnxpb.GraphInitializer {
				g = append(g, x.Raw...)
				gAt += len(x.Raw)
				continue
			}
			t, ok, err := mapTensor(x, gAt+len(x.Raw)-len(x.Val), location)
			if err != nil {
				return nil, err
			}
			if ok {
				mapped++
				g = onnxpb.AppendBytes(g, onnxpb.GraphInitializer, t)
			} else {
				g = append(g, x.Raw...)
			}
			gAt += len(x.Raw)
		}
		out = onnxpb.AppendBytes(out, onnxpb.ModelGraph, g)
		at += len(f.Raw)
	}
	if mapped == 0 {
		return nil, errNothingToMap
	}
	return out, nil
}

// mapTensor rewrites one TensorProto, whose bytes start at offset at of the
// file, to refer to its raw data in place; ok is false for a tensor to
// leave as it is (small, already external, or without raw data).
func mapTensor(x onnxpb.Field, at int, location string) ([]byte, bool, error) {
	tf, err := onnxpb.Fields(x.Val)
	if err != nil {
		return nil, false, err
	}
	rawAt, rawLen := -1, 0
	for _, y := range tf {
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
	for _, y := range tf {
		if y.Num != onnxpb.TensorRawData {
			t = append(t, y.Raw...)
		}
	}
	entry := func(k, v string) []byte {
		return onnxpb.AppendString(onnxpb.AppendString(nil, 1, k), 2, v) // StringStringEntryProto
	}
	t = onnxpb.AppendBytes(t, onnxpb.TensorExternalData, entry("location", location))
	t = onnxpb.AppendBytes(t, onnxpb.TensorExternalData, entry("offset", strconv.Itoa(rawAt)))
	t = onnxpb.AppendBytes(t, onnxpb.TensorExternalData, entry("length", strconv.Itoa(rawLen)))
	t = onnxpb.AppendVarint(t, onnxpb.TensorDataLocation, 1) // EXTERNAL
	return t, true, nil
}

// newSession creates the session of the graph file path, its weights
// mapped from the file where it can (mappedGraph, mapped true), else read.
func newSession(path string, inputs, outputs []string, opts Options, so *ort.SessionOptions) (s *ort.DynamicAdvancedSession, mapped bool, err error) {
	if !opts.ReadWeights {
		if g, err := readMapped(path); err == nil {
			dir, err := filepath.Abs(filepath.Dir(path))
			if err == nil {
				err = so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", dir)
			}
			if err == nil {
				if s, err := ort.NewDynamicAdvancedSessionWithONNXData(g, inputs, outputs, so); err == nil {
					return s, true, nil
				}
			}
		}
	}
	// Already external, nothing large, or not mappable here: the plain way
	// (which also reports what is wrong with a broken file).
	s, err = ort.NewDynamicAdvancedSession(path, inputs, outputs, so)
	return s, false, err
}

// readMapped maps the file at path and returns its mappedGraph.
func readMapped(path string) ([]byte, error) {
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	defer unmap()
	return mappedGraph(path, data)
}
