package model

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rerank/rerank/internal/onnxpb"
	"github.com/rerank/rerank/model/testmodel"
)

// initializers returns a model's initializers by name: their fields.
func initializers(t *testing.T, model []byte) map[string][]onnxpb.Field {
	t.Helper()
	out := map[string][]onnxpb.Field{}
	top, err := onnxpb.Fields(model)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range top {
		if f.Num != onnxpb.ModelGraph {
			continue
		}
		gf, err := onnxpb.Fields(f.Val)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gf {
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
	}
	return out
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
	data, unmap, err := mapFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	g, err := mappedGraph(file, data)
	if err != nil {
		t.Fatal(err)
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
	if external < 10 {
		t.Fatalf("%d tensors mapped", external)
	}
	// A model with nothing to map is left to the plain load.
	small := onnxpb.AppendBytes(nil, onnxpb.ModelGraph, onnxpb.AppendString(nil, onnxpb.GraphName, "g"))
	if _, err := mappedGraph(file, small); err != errNothingToMap {
		t.Fatalf("err = %v, want %v", err, errNothingToMap)
	}
	if _, err := mappedGraph(file, []byte{0xff}); err == nil {
		t.Fatal("garbage mapped")
	}
}
