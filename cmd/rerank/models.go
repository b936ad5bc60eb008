package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/simulated"
	"github.com/rerank/rerank/pipeline"
)

// demoModelDir is where `make demo-model` writes the demo model.
const demoModelDir = ".cache/models/demo"

// modelSpec is one --model NAME=DIR (or DIR alone: the name comes from
// rerank.json or the directory). NAME=DIR/onnx/model_quantized.onnx picks
// one graph of an export directory.
type modelSpec struct{ name, dir, file string }

func parseModelSpecs(values []string) ([]modelSpec, error) {
	if len(values) == 0 {
		dir := model.FindUp(demoModelDir)
		if dir == "" {
			return nil, fmt.Errorf("no --model given and the demo model is not at %s (under the working directory or the binary's, or their parents): run `make demo-model`, or pass --model NAME=DIR for an exported model directory", demoModelDir)
		}
		return []modelSpec{{name: "demo", dir: dir}}, nil
	}
	var out []modelSpec
	for _, v := range values {
		name, dir, ok := strings.Cut(v, "=")
		if !ok {
			name, dir = "", v
		}
		if name != "" && !model.ValidName(name) {
			return nil, fmt.Errorf("model name %q: use 1-64 letters, digits, '-' or '_'", name)
		}
		spec := modelSpec{name: name, dir: dir}
		if strings.HasSuffix(dir, ".onnx") {
			spec.file = filepath.Base(dir)
			spec.dir = filepath.Dir(dir)
			if filepath.Base(spec.dir) == "onnx" {
				spec.file = filepath.Join("onnx", spec.file)
				spec.dir = filepath.Dir(spec.dir)
			}
		}
		out = append(out, spec)
	}
	return out, nil
}

// loadedModels are the models of a process, closed together.
type loadedModels struct {
	rt     *model.Runtime
	models []*model.Model
	served []pipeline.Model
}

func (l *loadedModels) Close() {
	for _, m := range l.models {
		m.Close()
	}
	if l.rt != nil {
		l.rt.Close()
	}
}

// loadModels opens ONNX Runtime and every model directory, and resolves
// each model's injection config from its rerank.json.
func loadModels(libPath string, specs []modelSpec, opts model.Options) (*loadedModels, error) {
	rt, err := model.OpenRuntime(libPath)
	if err != nil {
		return nil, err
	}
	l := &loadedModels{rt: rt}
	seen := map[string]bool{}
	for _, s := range specs {
		o := opts
		o.ModelFile = s.file
		m, err := rt.Load(s.dir, o)
		if err != nil {
			l.Close()
			return nil, err
		}
		l.models = append(l.models, m)
		name := s.name
		if name == "" {
			name = m.Name()
		}
		if seen[name] {
			l.Close()
			return nil, fmt.Errorf("model name %q used twice", name)
		}
		seen[name] = true
		ic, err := inject.Resolve("", m.Config().Raw)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("loading model %s (%s): %w", name, s.dir, err)
		}
		l.served = append(l.served, pipeline.Model{Name: name, Scorer: m, Inject: ic, BatchPairs: m.Options().MaxBatchSize})
	}
	return l, nil
}

// simulatedModels serves the --test-simulated-model specs (NAME:PER_PAIR:PER_CALL):
// stand-in models that wait instead of computing (model/simulated), for
// scale tests and benchmarks. No ONNX Runtime is opened.
func simulatedModels(specs []string, batchPairs int) (*loadedModels, error) {
	l := &loadedModels{}
	seen := map[string]bool{}
	for _, spec := range specs {
		name, cost, err := simulated.ParseSpec(spec)
		if err != nil {
			return nil, err
		}
		if !model.ValidName(name) {
			return nil, fmt.Errorf("simulated model name %q: use 1-64 letters, digits, '-' or '_'", name)
		}
		if seen[name] {
			return nil, fmt.Errorf("model name %q used twice", name)
		}
		seen[name] = true
		ic, err := inject.Resolve("", nil)
		if err != nil {
			return nil, err
		}
		if batchPairs <= 0 {
			batchPairs = model.DefaultMaxBatchSize
		}
		l.served = append(l.served, pipeline.Model{Name: name, Scorer: simulated.New(cost), Inject: ic, BatchPairs: batchPairs})
	}
	return l, nil
}
