package quantize

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Files of a model directory that Dir reads and writes (the layout the
// model package loads).
const (
	modelFile     = "model.onnx"
	exportFile    = "onnx/model.onnx"
	rerankFile    = "rerank.json"
	quantizedName = "int8"
)

// Info is what Dir records under "quantization" in the rerank.json it
// writes.
type Info struct {
	Type        string      `json:"type"` // "int8"
	Granularity Granularity `json:"granularity"`
	Activations Activations `json:"activations"`
	Calibration string      `json:"calibration,omitempty"` // what the static ranges were measured on
	Smooth      float64     `json:"smooth,omitempty"`
	OpTypes     []string    `json:"op_types"`
	Exclude     string      `json:"exclude,omitempty"`
	EdgeLayers  bool        `json:"edge_layers_fp32,omitempty"`
	Quantized   int         `json:"quantized_nodes"`
	Attentions  int         `json:"fused_attentions,omitempty"` // self-attention blocks written as one QAttention
	Source      string      `json:"source"`                     // the input directory, as given
	SourceGraph string      `json:"source_graph"`               // the graph file, relative to it
	SourceSHA   string      `json:"source_sha256"`              // of that graph file
}

// Dir quantizes the model directory in into a new model directory out:
// model.onnx (the int8 graph), every other top-level file of in copied
// (tokenizer, config.json, …), and rerank.json with in's settings, the
// graph file reset to model.onnx and an Info under "quantization". out
// must not be in.
func Dir(in, out string, opts Options) (Report, Info, error) {
	var info Info
	src, err := filepath.Abs(in)
	if err != nil {
		return Report{}, info, err
	}
	dst, err := filepath.Abs(out)
	if err != nil {
		return Report{}, info, err
	}
	if src == dst {
		return Report{}, info, errors.New("quantize: the output directory is the input directory")
	}
	data, graphRel, settings, err := readGraph(in)
	if err != nil {
		return Report{}, info, err
	}
	q, rep, err := Graph(data, opts)
	if err != nil {
		return rep, info, fmt.Errorf("quantize: %s: %w", graphRel, err)
	}
	if len(rep.Quantized) == 0 {
		return rep, info, fmt.Errorf("quantize: %s: %w: no weight MatMul or Gemm to quantize", graphRel, ErrUnsupported)
	}
	sum := sha256.Sum256(data)
	smooth := opts.Smooth
	if rep.Smoothed == 0 {
		smooth = 0
	}
	info = Info{Type: quantizedName, Granularity: opts.Granularity, Activations: opts.Activations, Calibration: opts.Calibration, Smooth: smooth, OpTypes: opts.OpTypes, EdgeLayers: opts.KeepEdgeLayers,
		Quantized: len(rep.Quantized), Attentions: rep.Attentions, Source: in, SourceGraph: filepath.ToSlash(graphRel), SourceSHA: hex.EncodeToString(sum[:])}
	if opts.Exclude != nil {
		info.Exclude = opts.Exclude.String()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return rep, info, fmt.Errorf("quantize: %w", err)
	}
	if err := writeAtomic(filepath.Join(out, modelFile), q); err != nil {
		return rep, info, err
	}
	if err := copyFiles(in, out); err != nil {
		return rep, info, err
	}
	delete(settings, "model_file")
	settings["quantization"] = info
	js, err := json.MarshalIndent(settings, "", "  ")
	if err != nil {
		return rep, info, err
	}
	return rep, info, writeAtomic(filepath.Join(out, rerankFile), append(js, '\n'))
}

// ReadGraph returns the fp32 graph of model directory dir (the one Dir
// quantizes) and its path relative to dir.
func ReadGraph(dir string) ([]byte, string, error) {
	data, rel, _, err := readGraph(dir)
	return data, rel, err
}

func readGraph(dir string) ([]byte, string, map[string]any, error) {
	settings, err := readSettings(dir)
	if err != nil {
		return nil, "", nil, err
	}
	rel, err := sourceGraph(dir, settings)
	if err != nil {
		return nil, "", nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		return nil, "", nil, fmt.Errorf("quantize: reading the graph: %w", err)
	}
	return data, rel, settings, nil
}

// readSettings reads in's rerank.json as a generic object ({} when absent).
func readSettings(dir string) (map[string]any, error) {
	settings := map[string]any{}
	b, err := os.ReadFile(filepath.Join(dir, rerankFile))
	if errors.Is(err, os.ErrNotExist) {
		return settings, nil
	}
	if err != nil {
		return nil, fmt.Errorf("quantize: %w", err)
	}
	if err := json.Unmarshal(b, &settings); err != nil {
		return nil, fmt.Errorf("quantize: %s: %w", rerankFile, err)
	}
	if _, ok := settings["quantization"]; ok {
		return nil, fmt.Errorf("quantize: %s: %w: the model is already quantized", rerankFile, ErrUnsupported)
	}
	return settings, nil
}

// sourceGraph is the fp32 graph of a model directory: rerank.json's
// model_file, else model.onnx, else onnx/model.onnx.
func sourceGraph(dir string, settings map[string]any) (string, error) {
	if f, ok := settings["model_file"].(string); ok && f != "" {
		if filepath.IsAbs(f) {
			return "", fmt.Errorf("quantize: model_file %q: want a path inside the model directory", f)
		}
		return f, nil
	}
	for _, f := range []string{modelFile, exportFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return f, nil
		}
	}
	return "", fmt.Errorf("quantize: %s has no %s or %s", dir, modelFile, exportFile)
}

// copyFiles copies the regular top-level files of in, except graphs and
// rerank.json, into out.
func copyFiles(in, out string) error {
	ents, err := os.ReadDir(in)
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || name == rerankFile || strings.HasSuffix(name, ".onnx") || strings.HasSuffix(name, ".onnx_data") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(in, name))
		if err != nil {
			return fmt.Errorf("quantize: %w", err)
		}
		if err := writeAtomic(filepath.Join(out, name), b); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("quantize: writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("quantize: writing %s: %w", path, err)
	}
	return os.Rename(f.Name(), path)
}
