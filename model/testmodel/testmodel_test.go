package testmodel_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/model/testmodel"
)

var (
	ortOnce sync.Once
	ortErr  error
	ortUp   bool
)

// initORT initializes the ONNX Runtime environment once for the package;
// TestMain destroys it.
func initORT(t testing.TB) {
	t.Helper()
	lib := testenv.ORTLib(t)
	ortOnce.Do(func() {
		ort.SetSharedLibraryPath(lib)
		ortErr = ort.InitializeEnvironment()
		ortUp = ortErr == nil
	})
	if ortErr != nil {
		t.Fatalf("initializing ONNX Runtime (%s): %v", lib, ortErr)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if ortUp {
		if err := ort.DestroyEnvironment(); err != nil {
			fmt.Fprintln(os.Stderr, "destroying ONNX Runtime environment:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

var (
	tinyOnce  sync.Once
	tinyBytes []byte
	tinyErr   error
)

// tinyModel returns the Tiny model's bytes, generated once.
func tinyModel(t testing.TB) []byte {
	t.Helper()
	tinyOnce.Do(func() {
		var buf bytes.Buffer
		tinyErr = testmodel.WriteONNX(&buf, testmodel.Tiny)
		tinyBytes = buf.Bytes()
	})
	if tinyErr != nil {
		t.Fatal(tinyErr)
	}
	return tinyBytes
}

func writeTemp(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSpecValidate(t *testing.T) {
	for _, s := range []testmodel.Spec{testmodel.Tiny, testmodel.MiniLML12} {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		if got, ok := testmodel.Lookup(s.Name); !ok || got != s {
			t.Errorf("Lookup(%q) = %+v, %v", s.Name, got, ok)
		}
	}
	if _, ok := testmodel.Lookup("nope"); ok {
		t.Error(`Lookup("nope") succeeded`)
	}
	bad := map[string]func(*testmodel.Spec){
		"no name":         func(s *testmodel.Spec) { s.Name = "" },
		"no layers":       func(s *testmodel.Spec) { s.Layers = 0 },
		"negative hidden": func(s *testmodel.Spec) { s.Hidden = -32 },
		"heads":           func(s *testmodel.Spec) { s.Heads = 3 },
		"zero heads":      func(s *testmodel.Spec) { s.Heads = 0 },
		"ffn":             func(s *testmodel.Spec) { s.FFN = 0 },
		"positions":       func(s *testmodel.Spec) { s.MaxPositions = 0 },
		"type vocab":      func(s *testmodel.Spec) { s.TypeVocab = 0 },
		"vocab":           func(s *testmodel.Spec) { s.Vocab = 0 },
		"std zero":        func(s *testmodel.Spec) { s.InitStd = 0 },
		"std NaN":         func(s *testmodel.Spec) { s.InitStd = math.NaN() },
		"std Inf":         func(s *testmodel.Spec) { s.InitStd = math.Inf(1) },
		"over 2 GiB":      func(s *testmodel.Spec) { s.Hidden, s.Heads, s.Vocab = 4096, 16, 1<<17 },
	}
	for name, mutate := range bad {
		s := testmodel.Tiny
		mutate(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, s)
		}
		if err := testmodel.WriteONNX(io.Discard, s); err == nil {
			t.Errorf("%s: WriteONNX accepted %+v", name, s)
		}
	}
}

func TestWriteONNXDeterministic(t *testing.T) {
	a := tinyModel(t)
	var b bytes.Buffer
	if err := testmodel.WriteONNX(&b, testmodel.Tiny); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b.Bytes()) {
		t.Fatal("two WriteONNX calls for Tiny gave different bytes")
	}
	size, err := testmodel.Tiny.ONNXSize()
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(a)) != size {
		t.Errorf("Tiny: wrote %d bytes, ONNXSize says %d", len(a), size)
	}
	if w := 4 * testmodel.Tiny.Params(); int64(len(a)) < w || int64(len(a)) > w+64<<10 {
		t.Errorf("Tiny: %d bytes for %d bytes of weights", len(a), w)
	}

	other := testmodel.Tiny
	other.Seed++
	var c bytes.Buffer
	if err := testmodel.WriteONNX(&c, other); err != nil {
		t.Fatal(err)
	}
	if len(c.Bytes()) != len(a) {
		t.Errorf("another seed changed the size: %d vs %d", c.Len(), len(a))
	}
	if bytes.Equal(a, c.Bytes()) {
		t.Error("another seed gave the same bytes")
	}
}

// failWriter fails after n bytes.
type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return w.n, io.ErrShortWrite
	}
	w.n -= len(p)
	return len(p), nil
}

func TestWriteONNXWriteError(t *testing.T) {
	if err := testmodel.WriteONNX(&failWriter{n: 1 << 20}, testmodel.Tiny); err == nil {
		t.Fatal("WriteONNX hid a write error")
	}
}

// Protobuf reading, enough to check the declared interface (ONNX Runtime
// reports symbolic dimensions as -1 without their names).

type valueInfo struct {
	name     string
	elemType uint64
	dims     []string // dim_param, or the decimal dim_value
}

type modelInfo struct {
	irVersion      uint64
	opsets         map[string]uint64
	inputs         []valueInfo
	outputs        []valueInfo
	nodes          int
	initializers   int
	producer       string
	graphName      string
	initializerMap map[string]bool
}

// fields calls fn for each field of the message b; fn gets the varint value
// or the bytes.
func fields(t testing.TB, b []byte, fn func(num protowire.Number, v uint64, data []byte)) {
	t.Helper()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				t.Fatalf("bad varint in field %d: %v", num, protowire.ParseError(n))
			}
			fn(num, v, nil)
			b = b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				t.Fatalf("bad bytes in field %d: %v", num, protowire.ParseError(n))
			}
			fn(num, 0, v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				t.Fatalf("bad field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
}

func parseValueInfo(t testing.TB, b []byte) valueInfo {
	var vi valueInfo
	fields(t, b, func(num protowire.Number, _ uint64, d []byte) {
		switch num {
		case 1:
			vi.name = string(d)
		case 2: // TypeProto
			fields(t, d, func(num protowire.Number, _ uint64, d []byte) {
				if num != 1 { // tensor_type
					return
				}
				fields(t, d, func(num protowire.Number, v uint64, d []byte) {
					switch num {
					case 1:
						vi.elemType = v
					case 2: // TensorShapeProto
						fields(t, d, func(num protowire.Number, _ uint64, d []byte) {
							if num != 1 {
								return
							}
							dim := "?"
							fields(t, d, func(num protowire.Number, v uint64, d []byte) {
								switch num {
								case 1:
									dim = fmt.Sprint(v)
								case 2:
									dim = string(d)
								}
							})
							vi.dims = append(vi.dims, dim)
						})
					}
				})
			})
		}
	})
	return vi
}

func parseModel(t testing.TB, b []byte) modelInfo {
	mi := modelInfo{opsets: map[string]uint64{}, initializerMap: map[string]bool{}}
	fields(t, b, func(num protowire.Number, v uint64, d []byte) {
		switch num {
		case 1:
			mi.irVersion = v
		case 2:
			mi.producer = string(d)
		case 8:
			var domain string
			var version uint64
			fields(t, d, func(num protowire.Number, v uint64, d []byte) {
				switch num {
				case 1:
					domain = string(d)
				case 2:
					version = v
				}
			})
			mi.opsets[domain] = version
		case 7:
			fields(t, d, func(num protowire.Number, _ uint64, d []byte) {
				switch num {
				case 1:
					mi.nodes++
				case 2:
					mi.graphName = string(d)
				case 5:
					mi.initializers++
					fields(t, d, func(num protowire.Number, _ uint64, d []byte) {
						if num == 8 {
							mi.initializerMap[string(d)] = true
						}
					})
				case 11:
					mi.inputs = append(mi.inputs, parseValueInfo(t, d))
				case 12:
					mi.outputs = append(mi.outputs, parseValueInfo(t, d))
				}
			})
		}
	})
	return mi
}

func TestDeclaredInterface(t *testing.T) {
	mi := parseModel(t, tinyModel(t))
	if mi.irVersion != 8 || mi.opsets[""] != 17 || len(mi.opsets) != 1 {
		t.Errorf("ir_version %d, opsets %v; want 8 and {\"\": 17}", mi.irVersion, mi.opsets)
	}
	if mi.producer != testmodel.Producer {
		t.Errorf("producer %q", mi.producer)
	}
	want := []valueInfo{
		{"input_ids", 7, []string{"batch_size", "sequence_length"}},
		{"attention_mask", 7, []string{"batch_size", "sequence_length"}},
		{"token_type_ids", 7, []string{"batch_size", "sequence_length"}},
	}
	if fmt.Sprint(mi.inputs) != fmt.Sprint(want) {
		t.Errorf("inputs %v\nwant   %v", mi.inputs, want)
	}
	wantOut := []valueInfo{{"logits", 1, []string{"batch_size", "1"}}}
	if fmt.Sprint(mi.outputs) != fmt.Sprint(wantOut) {
		t.Errorf("outputs %v, want %v", mi.outputs, wantOut)
	}
	for _, name := range []string{
		"bert.embeddings.word_embeddings.weight",
		"bert.encoder.layer.1.output.LayerNorm.bias",
		"bert.pooler.dense.weight",
		"classifier.weight",
	} {
		if !mi.initializerMap[name] {
			t.Errorf("no initializer %s", name)
		}
	}
	t.Logf("Tiny: %d nodes, %d initializers, %d bytes", mi.nodes, mi.initializers, len(tinyModel(t)))
}

func TestONNXRuntimeInterface(t *testing.T) {
	initORT(t)
	path := writeTemp(t, tinyModel(t))
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 3 || len(outs) != 1 {
		t.Fatalf("inputs %v, outputs %v", ins, outs)
	}
	for i, name := range []string{"input_ids", "attention_mask", "token_type_ids"} {
		in := ins[i]
		if in.Name != name || in.OrtValueType != ort.ONNXTypeTensor ||
			in.DataType != ort.TensorElementDataTypeInt64 || !slices.Equal(in.Dimensions, ort.NewShape(-1, -1)) {
			t.Errorf("input %d: %s, want int64 %s [-1, -1]", i, in.String(), name)
		}
	}
	out := outs[0]
	if out.Name != "logits" || out.OrtValueType != ort.ONNXTypeTensor ||
		out.DataType != ort.TensorElementDataTypeFloat || !slices.Equal(out.Dimensions, ort.NewShape(-1, 1)) {
		t.Errorf("output: %s, want float logits [-1, 1]", out.String())
	}

	meta, err := ort.GetModelMetadata(path)
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Destroy()
	if v, ok, err := meta.LookupCustomMetadataMap("rerank.random_weights"); err != nil || !ok || v != "true" {
		t.Errorf("metadata rerank.random_weights = %q, %v, %v", v, ok, err)
	}
}

// pair is one tokenized (query, passage) pair in BERT's layout.
type pair struct {
	ids, types []int64
}

// randomPair draws [CLS] q [SEP] p [SEP] with random word-piece ids.
func randomPair(r *rand.Rand, qLen, pLen int) pair {
	var p pair
	add := func(id, typ int64) {
		p.ids = append(p.ids, id)
		p.types = append(p.types, typ)
	}
	add(101, 0)
	for range qLen {
		add(1000+r.Int64N(29000), 0)
	}
	add(102, 0)
	for range pLen {
		add(1000+r.Int64N(29000), 1)
	}
	add(102, 1)
	return p
}

// scorer runs a model session on padded batches.
type scorer struct {
	s *ort.DynamicAdvancedSession
}

func newScorer(t testing.TB, path string) *scorer {
	return newScorerOpt(t, path, ort.GraphOptimizationLevelEnableAll)
}

func newScorerOpt(t testing.TB, path string, level ort.GraphOptimizationLevel) *scorer {
	t.Helper()
	opts, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
	if err := opts.SetGraphOptimizationLevel(level); err != nil {
		t.Fatal(err)
	}
	if err := opts.SetIntraOpNumThreads(2); err != nil {
		t.Fatal(err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewDynamicAdvancedSession(path,
		[]string{"input_ids", "attention_mask", "token_type_ids"}, []string{"logits"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Destroy() })
	return &scorer{s: s}
}

// score pads the pairs to the longest (id 0, mask 0, type 0) and returns
// the logits with their shape.
func (sc *scorer) score(t testing.TB, pairs []pair) ([]float32, ort.Shape) {
	t.Helper()
	seq := 0
	for _, p := range pairs {
		seq = max(seq, len(p.ids))
	}
	n := len(pairs) * seq
	ids, mask, types := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, p := range pairs {
		copy(ids[i*seq:], p.ids)
		copy(types[i*seq:], p.types)
		for j := range p.ids {
			mask[i*seq+j] = 1
		}
	}
	shape := ort.NewShape(int64(len(pairs)), int64(seq))
	var inputs []ort.Value
	for _, data := range [][]int64{ids, mask, types} {
		tensor, err := ort.NewTensor(shape, data)
		if err != nil {
			t.Fatal(err)
		}
		defer tensor.Destroy()
		inputs = append(inputs, tensor)
	}
	outputs := []ort.Value{nil}
	if err := sc.s.Run(inputs, outputs); err != nil {
		t.Fatal(err)
	}
	defer outputs[0].Destroy()
	logits, ok := outputs[0].(*ort.Tensor[float32])
	if !ok {
		t.Fatalf("logits are %T", outputs[0])
	}
	return slices.Clone(logits.GetData()), logits.GetShape()
}

func TestRunTiny(t *testing.T) {
	initORT(t)
	sc := newScorer(t, writeTemp(t, tinyModel(t)))
	r := rand.New(rand.NewPCG(1, 2))

	// A padded batch of different lengths against each pair alone.
	pairs := []pair{randomPair(r, 3, 10), randomPair(r, 6, 25), randomPair(r, 2, 4)}
	batch, shape := sc.score(t, pairs)
	if !slices.Equal(shape, ort.NewShape(3, 1)) {
		t.Fatalf("logits shape %v, want [3 1]", shape)
	}
	for i, v := range batch {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Errorf("logit %d = %v", i, v)
		}
	}
	if batch[0] == batch[1] && batch[1] == batch[2] {
		t.Errorf("all logits equal: %v", batch)
	}
	for i, p := range pairs {
		alone, shape := sc.score(t, []pair{p})
		if !slices.Equal(shape, ort.NewShape(1, 1)) {
			t.Fatalf("logits shape %v, want [1 1]", shape)
		}
		if d := math.Abs(float64(alone[0] - batch[i])); d > 1e-5 {
			t.Errorf("pair %d (%d tokens): %v alone, %v padded in a batch (diff %g)", i, len(p.ids), alone[0], batch[i], d)
		}
	}
	t.Logf("batch logits %v", batch)

	// Different inputs spread the scores.
	var many []pair
	for range 16 {
		many = append(many, randomPair(r, 1+r.IntN(8), 5+r.IntN(40)))
	}
	logits, _ := sc.score(t, many)
	lo, hi := slices.Min(logits), slices.Max(logits)
	t.Logf("16 random pairs: logits in [%.4f, %.4f]", lo, hi)
	if hi-lo < 0.1 {
		t.Errorf("logits of 16 random pairs span only %.4f (%v)", hi-lo, logits)
	}

	// ONNX Runtime's fusions (LayerNorm, GELU, attention) do not change the
	// results: compare with an unoptimized session.
	plain := newScorerOpt(t, writeTemp(t, tinyModel(t)), ort.GraphOptimizationLevelDisableAll)
	for _, batch := range [][]pair{pairs, many} {
		want, _ := plain.score(t, batch)
		got, _ := sc.score(t, batch)
		for i := range want {
			if d := math.Abs(float64(got[i] - want[i])); d > 1e-5 {
				t.Errorf("pair %d: %v optimized, %v unoptimized (diff %g)", i, got[i], want[i], d)
			}
		}
	}

	// The longest sequence the position embeddings allow.
	long := randomPair(r, 20, testmodel.Tiny.MaxPositions-23)
	if v, _ := sc.score(t, []pair{long}); math.IsNaN(float64(v[0])) {
		t.Errorf("512-token logit %v", v)
	}
}

func TestWriteDir(t *testing.T) {
	tokPath := testenv.TokenizerJSON(t)
	dir := filepath.Join(t.TempDir(), "tiny")
	for range 2 { // the second run replaces the files
		if err := testmodel.WriteDir(dir, testmodel.Tiny, tokPath); err != nil {
			t.Fatal(err)
		}
	}

	model, err := os.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(model, tinyModel(t)) {
		t.Error("model.onnx differs from WriteONNX's bytes")
	}
	st1, err1 := os.Stat(filepath.Join(dir, "model.onnx"))
	st2, err2 := os.Stat(filepath.Join(dir, "onnx", "model.onnx"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if !os.SameFile(st1, st2) {
		t.Log("onnx/model.onnx is a copy, not a hard link")
		if b, _ := os.ReadFile(filepath.Join(dir, "onnx", "model.onnx")); !bytes.Equal(b, model) {
			t.Error("onnx/model.onnx differs from model.onnx")
		}
	}
	tok, _ := os.ReadFile(tokPath)
	if b, _ := os.ReadFile(filepath.Join(dir, "tokenizer.json")); !bytes.Equal(b, tok) {
		t.Error("tokenizer.json is not a copy of the tokenizer")
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	wantNames := []string{"config.json", "model.onnx", "onnx", "tokenizer.json", "tokenizer_config.json"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("directory holds %v, want %v (an export directory: no rerank.json)", names, wantNames)
	}

	var cfg map[string]any
	readJSON(t, filepath.Join(dir, "config.json"), &cfg)
	for k, want := range map[string]any{
		"model_type": "bert", "hidden_size": 32.0, "num_hidden_layers": 2.0, "num_attention_heads": 2.0,
		"intermediate_size": float64(testmodel.Tiny.FFN), "max_position_embeddings": 512.0, "type_vocab_size": 2.0,
		"vocab_size": 30522.0, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "num_labels": 1.0, "pad_token_id": 0.0,
	} {
		if cfg[k] != want {
			t.Errorf("config.json %s = %v, want %v", k, cfg[k], want)
		}
	}
	if fmt.Sprint(cfg["architectures"]) != "[BertForSequenceClassification]" ||
		fmt.Sprint(cfg["id2label"]) != "map[0:LABEL_0]" {
		t.Errorf("config.json architectures %v, id2label %v", cfg["architectures"], cfg["id2label"])
	}
	wantGen := map[string]any{"random_weights": true, "seed": float64(testmodel.Tiny.Seed), "note": testmodel.RandomWeightsNote}
	if fmt.Sprint(cfg["rerank_generated"]) != fmt.Sprint(wantGen) ||
		fmt.Sprint(cfg["sentence_transformers"]) != "map[activation_fn:torch.nn.modules.linear.Identity version:4.1.0]" {
		t.Errorf("config.json rerank_generated %v, sentence_transformers %v", cfg["rerank_generated"], cfg["sentence_transformers"])
	}

	var tc map[string]any
	readJSON(t, filepath.Join(dir, "tokenizer_config.json"), &tc)
	if tc["do_lower_case"] != true || tc["model_max_length"] != 512.0 || tc["tokenizer_class"] != "BertTokenizer" ||
		tc["cls_token"] != "[CLS]" || tc["pad_token"] != "[PAD]" {
		t.Errorf("tokenizer_config.json = %v", tc)
	}

	// A tokenizer whose ids run past the model's vocabulary is refused.
	small := testmodel.Tiny
	small.Vocab = 1000
	if err := testmodel.WriteDir(t.TempDir(), small, tokPath); err == nil {
		t.Error("WriteDir accepted a tokenizer larger than the vocabulary")
	}
	if err := testmodel.WriteDir(t.TempDir(), testmodel.Tiny, filepath.Join(dir, "missing.json")); err == nil {
		t.Error("WriteDir accepted a missing tokenizer")
	}
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestMiniLML12 generates the 12-layer model, loads it and scores a batch.
func TestMiniLML12(t *testing.T) {
	initORT(t)
	s := testmodel.MiniLML12
	want, err := s.ONNXSize()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "model.onnx")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = testmodel.WriteONNX(f, s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	gen := time.Since(start)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != want || st.Size() < 125e6 || st.Size() > 140e6 {
		t.Errorf("%s: %d bytes, want %d (about 133 MB)", s.Name, st.Size(), want)
	}

	start = time.Now()
	sc := newScorer(t, path)
	load := time.Since(start)

	r := rand.New(rand.NewPCG(3, 4))
	pairs := []pair{randomPair(r, 5, 30), randomPair(r, 8, 60), randomPair(r, 3, 12), randomPair(r, 6, 45)}
	start = time.Now()
	batch, shape := sc.score(t, pairs)
	run := time.Since(start)
	if !slices.Equal(shape, ort.NewShape(4, 1)) {
		t.Fatalf("logits shape %v", shape)
	}
	lo, hi := slices.Min(batch), slices.Max(batch)
	if hi-lo < 0.1 || math.IsNaN(float64(lo)) || math.IsNaN(float64(hi)) {
		t.Errorf("logits %v", batch)
	}
	alone, _ := sc.score(t, pairs[2:3])
	if d := math.Abs(float64(alone[0] - batch[2])); d > 1e-4 {
		t.Errorf("padded %v vs alone %v (diff %g)", batch[2], alone[0], d)
	}
	t.Logf("%s: %d bytes, generated in %v, session created in %v, batch of 4 (max %d tokens) in %v: %v",
		s.Name, st.Size(), gen.Round(time.Millisecond), load.Round(time.Millisecond), len(pairs[1].ids),
		run.Round(time.Millisecond), batch)
}

func BenchmarkWriteONNX(b *testing.B) {
	for _, s := range []testmodel.Spec{testmodel.Tiny, testmodel.MiniLML12} {
		b.Run(s.Name, func(b *testing.B) {
			size, err := s.ONNXSize()
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			for b.Loop() {
				if err := testmodel.WriteONNX(io.Discard, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// weights reads the float initializers of a model.
func weights(t testing.TB, model []byte) map[string][]float64 {
	t.Helper()
	w := map[string][]float64{}
	fields(t, model, func(num protowire.Number, _ uint64, d []byte) {
		if num != 7 {
			return
		}
		fields(t, d, func(num protowire.Number, _ uint64, d []byte) {
			if num != 5 {
				return
			}
			var name string
			var dtype uint64
			var raw []byte
			fields(t, d, func(num protowire.Number, v uint64, d []byte) {
				switch num {
				case 2:
					dtype = v
				case 8:
					name = string(d)
				case 9:
					raw = d
				}
			})
			if dtype != 1 {
				return
			}
			vals := make([]float64, len(raw)/4)
			for i := range vals {
				vals[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
			}
			w[name] = vals
		})
	})
	return w
}

// referenceLogit computes BertForSequenceClassification's logit for one
// unpadded sequence in float64, straight from the weights.
func referenceLogit(s testmodel.Spec, w map[string][]float64, p pair) float64 {
	H, F, S := s.Hidden, s.FFN, len(p.ids)
	d := H / s.Heads
	linear := func(x []float64, prefix string, in, out int) []float64 {
		W, b := w[prefix+".weight"], w[prefix+".bias"]
		y := make([]float64, out)
		for o := range out {
			sum := b[o]
			for i := range in {
				sum += x[i] * W[i*out+o]
			}
			y[o] = sum
		}
		return y
	}
	layerNorm := func(x []float64, prefix string) []float64 {
		g, b := w[prefix+".weight"], w[prefix+".bias"]
		var mean, v float64
		for _, e := range x {
			mean += e
		}
		mean /= float64(len(x))
		for _, e := range x {
			v += (e - mean) * (e - mean)
		}
		v /= float64(len(x))
		y := make([]float64, len(x))
		for i, e := range x {
			y[i] = (e-mean)/math.Sqrt(v+1e-12)*g[i] + b[i]
		}
		return y
	}
	add := func(a, b []float64) []float64 {
		y := make([]float64, len(a))
		for i := range a {
			y[i] = a[i] + b[i]
		}
		return y
	}

	word, pos, typ := w["bert.embeddings.word_embeddings.weight"], w["bert.embeddings.position_embeddings.weight"],
		w["bert.embeddings.token_type_embeddings.weight"]
	x := make([][]float64, S)
	for t := range S {
		e := make([]float64, H)
		for i := range H {
			e[i] = word[int(p.ids[t])*H+i] + pos[t*H+i] + typ[int(p.types[t])*H+i]
		}
		x[t] = layerNorm(e, "bert.embeddings.LayerNorm")
	}
	for l := range s.Layers {
		pre := fmt.Sprintf("bert.encoder.layer.%d", l)
		q, k, v := make([][]float64, S), make([][]float64, S), make([][]float64, S)
		for t := range S {
			q[t] = linear(x[t], pre+".attention.self.query", H, H)
			k[t] = linear(x[t], pre+".attention.self.key", H, H)
			v[t] = linear(x[t], pre+".attention.self.value", H, H)
		}
		next := make([][]float64, S)
		for t := range S {
			ctx := make([]float64, H)
			for h := range s.Heads {
				scores := make([]float64, S)
				top := math.Inf(-1)
				for u := range S {
					for i := h * d; i < (h+1)*d; i++ {
						scores[u] += q[t][i] * k[u][i]
					}
					scores[u] /= math.Sqrt(float64(d))
					top = max(top, scores[u])
				}
				var z float64
				for u := range S {
					scores[u] = math.Exp(scores[u] - top)
					z += scores[u]
				}
				for u := range S {
					for i := h * d; i < (h+1)*d; i++ {
						ctx[i] += scores[u] / z * v[u][i]
					}
				}
			}
			a := layerNorm(add(linear(ctx, pre+".attention.output.dense", H, H), x[t]), pre+".attention.output.LayerNorm")
			u := linear(a, pre+".intermediate.dense", H, F)
			for i, e := range u {
				u[i] = e * 0.5 * (1 + math.Erf(e/math.Sqrt2))
			}
			next[t] = layerNorm(add(linear(u, pre+".output.dense", F, H), a), pre+".output.LayerNorm")
		}
		x = next
	}
	pooled := linear(x[0], "bert.pooler.dense", H, H)
	for i, e := range pooled {
		pooled[i] = math.Tanh(e)
	}
	return linear(pooled, "classifier", H, 1)[0]
}

// TestReferenceForward checks the graph against BERT's forward pass written
// out in Go: the ONNX model is the architecture config.json claims.
func TestReferenceForward(t *testing.T) {
	initORT(t)
	model := tinyModel(t)
	w := weights(t, model)
	sc := newScorerOpt(t, writeTemp(t, model), ort.GraphOptimizationLevelDisableAll)
	r := rand.New(rand.NewPCG(5, 6))
	for _, p := range []pair{randomPair(r, 4, 9), randomPair(r, 7, 33)} {
		got, _ := sc.score(t, []pair{p})
		want := referenceLogit(testmodel.Tiny, w, p)
		if d := math.Abs(float64(got[0]) - want); d > 1e-4 {
			t.Errorf("%d tokens: ONNX Runtime %v, reference %v (diff %g)", len(p.ids), got[0], want, d)
		} else {
			t.Logf("%d tokens: ONNX Runtime %v, reference %.7f", len(p.ids), got[0], want)
		}
	}
}
