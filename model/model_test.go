package model_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/internal/testfixture"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/testmodel"
	"github.com/rerank/rerank/model/wordpiece"
)

var (
	fixtureOnce sync.Once
	fixtureRT   *model.Runtime
	fixtureErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureRT != nil {
		fixtureRT.Close()
	}
	testfixture.Cleanup(false)
	os.Exit(code)
}

// fixture opens ONNX Runtime and writes the tiny model once per test binary.
func fixture(t testing.TB) (*model.Runtime, string) {
	t.Helper()
	lib, dir := testenv.ORTLib(t), testfixture.TinyModel(t)
	fixtureOnce.Do(func() { fixtureRT, fixtureErr = model.OpenRuntime(lib) })
	if fixtureErr != nil {
		t.Fatalf("opening ONNX Runtime: %v", fixtureErr)
	}
	return fixtureRT, dir
}

// modelDir copies the fixture model with another rerank.json.
func modelDir(t *testing.T, rerankJSON string) string {
	t.Helper()
	_, src := fixture(t)
	dir := t.TempDir()
	for _, f := range []string{model.ModelFile, model.TokenizerFile} {
		if err := os.Link(filepath.Join(src, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), []byte(rerankJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func load(t *testing.T, opts model.Options) *model.Model {
	t.Helper()
	rt, dir := fixture(t)
	m, err := rt.Load(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var words = strings.Fields(`the quick brown fox jumps over a lazy dog while paris remains capital of france and
 bm25 ranks passages by term frequency inverse document frequency cross encoders read query passage pairs jointly
 résumé naïve café 北京 straße über`)

func mixedPairs(n int, seed uint64) []wordpiece.Pair {
	r := rand.New(rand.NewPCG(seed, 7))
	pairs := make([]wordpiece.Pair, n)
	for i := range pairs {
		q := make([]string, 2+r.IntN(6))
		for k := range q {
			q[k] = words[r.IntN(len(words))]
		}
		// Long-tailed passage lengths, as in MS MARCO.
		plen := 5 + int(r.ExpFloat64()*40)
		p := make([]string, plen)
		for k := range p {
			p[k] = words[r.IntN(len(words))]
		}
		pairs[i] = wordpiece.Pair{A: strings.Join(q, " "), B: strings.Join(p, " ")}
	}
	return pairs
}

func TestScoresIndependentOfBatching(t *testing.T) {
	pairs := mixedPairs(40, 1)
	ctx := context.Background()
	big := load(t, model.Options{MaxBatchSize: 64, MaxBatchTokens: 1 << 20, MaxBatchCells: 1 << 30, MaxBatchPadding: -1})
	all, st, err := big.Score(ctx, pairs)
	if err != nil {
		t.Fatal(err)
	}
	if st.Batches != 1 || st.Pairs != 40 {
		t.Fatalf("one big batch expected, got %+v", st)
	}
	small := load(t, model.Options{MaxBatchSize: 7, MaxBatchTokens: 1 << 20, MaxBatchCells: 1 << 30, MaxBatchPadding: -1})
	// Shuffled, in batches of 7.
	perm := rand.New(rand.NewPCG(2, 3)).Perm(len(pairs))
	shuffled := make([]wordpiece.Pair, len(pairs))
	for i, p := range perm {
		shuffled[i] = pairs[p]
	}
	sh, st, err := small.Score(ctx, shuffled)
	if err != nil {
		t.Fatal(err)
	}
	if st.Batches != 6 {
		t.Fatalf("batches = %d, want 6", st.Batches)
	}
	distinct := map[float32]bool{}
	for i, p := range perm {
		alone, _, err := small.Score(ctx, pairs[p:p+1])
		if err != nil {
			t.Fatal(err)
		}
		if d := math.Abs(float64(alone[0] - all[p])); d > 1e-5 {
			t.Errorf("pair %d: alone %v vs one batch %v (diff %g)", p, alone[0], all[p], d)
		}
		if d := math.Abs(float64(sh[i] - all[p])); d > 1e-5 {
			t.Errorf("pair %d: shuffled batches %v vs one batch %v (diff %g)", p, sh[i], all[p], d)
		}
		distinct[all[p]] = true
	}
	if len(distinct) < 30 {
		t.Fatalf("only %d distinct scores for 40 pairs: the model does not read its input", len(distinct))
	}
}

func TestPlanRespectsLimitsAndSortingReducesPadding(t *testing.T) {
	m := load(t, model.Options{MaxBatchSize: 8, MaxBatchTokens: 600, MaxBatchCells: 20000})
	encs, err := m.Tokenize(mixedPairs(200, 4))
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, len(encs))
	for _, b := range m.Plan(encs) {
		longest := 0
		for _, i := range b {
			if seen[i] {
				t.Fatalf("pair %d planned twice", i)
			}
			seen[i] = true
			longest = max(longest, len(encs[i].IDs))
		}
		if len(b) > 8 || (len(b) > 1 && (len(b)*longest > 600 || len(b)*longest*longest > 20000)) {
			t.Fatalf("batch of %d × %d breaks the limits", len(b), longest)
		}
	}
	for i, s := range seen {
		if !s {
			t.Fatalf("pair %d not planned", i)
		}
	}
	ctx := context.Background()
	_, sorted, err := m.ScoreEncoded(ctx, encs)
	if err != nil {
		t.Fatal(err)
	}
	unsortedModel := load(t, model.Options{MaxBatchSize: 8, MaxBatchTokens: 600, MaxBatchCells: 20000, NoLengthSort: true})
	_, unsorted, err := unsortedModel.ScoreEncoded(ctx, encs)
	if err != nil {
		t.Fatal(err)
	}
	if sorted.RealTokens != unsorted.RealTokens || sorted.PaddingRatio() >= unsorted.PaddingRatio() {
		t.Fatalf("padding ratio sorted %.3f vs arrival order %.3f", sorted.PaddingRatio(), unsorted.PaddingRatio())
	}
	t.Logf("padded/real tokens: sorted %.3f, arrival order %.3f", sorted.PaddingRatio(), unsorted.PaddingRatio())
}

func TestScoreHonoursContext(t *testing.T) {
	m := load(t, model.Options{MaxBatchSize: 2})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := m.Score(ctx, mixedPairs(10, 5)); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	rt, dir := fixture(t)
	m, err := rt.Load(dir, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := m.Score(context.Background(), mixedPairs(1, 1)); !errors.Is(err, model.ErrClosed) {
		t.Fatalf("Score after Close: %v", err)
	}
}

func TestOutputMapping(t *testing.T) {
	rt, _ := fixture(t)
	pairs := mixedPairs(5, 9)
	plain := load(t, model.Options{})
	logits, _, err := plain.Score(context.Background(), pairs)
	if err != nil {
		t.Fatal(err)
	}
	m, err := rt.Load(modelDir(t, `{"name":"sig","output":{"sigmoid":true}}`), model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	probs, _, err := m.Score(context.Background(), pairs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pairs {
		want := 1 / (1 + math.Exp(-float64(logits[i])))
		if math.Abs(float64(probs[i])-want) > 1e-6 {
			t.Fatalf("pair %d: sigmoid %v, want %v", i, probs[i], want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	rt, _ := fixture(t)
	tests := []struct {
		name    string
		config  string
		want    error
		mention string
	}{
		{"logit out of range", `{"output":{"logit":3}}`, model.ErrModelMismatch, "output.logit 3"},
		{"unknown output", `{"output":{"name":"scores"}}`, model.ErrModelMismatch, `"scores"`},
		{"bad truncation", `{"truncation":"middle"}`, model.ErrInvalidConfig, "truncation"},
		{"bad max length", `{"max_length":2}`, model.ErrInvalidConfig, "max_length"},
		{"two problems, both reported", `{"max_length":2,"truncation":"middle"}`, model.ErrInvalidConfig, "truncation \"middle\""},
		{"bad name", `{"name":"a.b"}`, model.ErrInvalidConfig, "name"},
		{"bad json", `{`, model.ErrInvalidConfig, model.ConfigFile},
		// The tiny model has 512 position embeddings: longer inputs would
		// fail inside ONNX Runtime, taking their batch-mates with them.
		{"max length over positions", `{"max_length":1024}`, model.ErrInvalidConfig, "512 position embeddings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := modelDir(t, tt.config)
			_, err := rt.Load(dir, model.Options{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.mention) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("error %q should name %q and the model path", err, tt.mention)
			}
		})
	}
	if _, err := rt.Load(t.TempDir(), model.Options{}); err == nil || !strings.Contains(err.Error(), model.TokenizerFile) {
		t.Fatalf("empty directory: %v", err)
	}
	if _, err := model.OpenRuntime(filepath.Join(t.TempDir(), "nope.so")); !errors.Is(err, model.ErrRuntimeMissing) || !strings.Contains(err.Error(), model.EnvLibrary) {
		t.Fatalf("missing library: %v", err)
	}
}

func TestPositionsReadFromGraph(t *testing.T) {
	m := load(t, model.Options{})
	if m.Positions() != 512 {
		t.Fatalf("position embeddings read from the graph: %d, want the tiny model's 512", m.Positions())
	}
}

func TestParseDevice(t *testing.T) {
	for in, want := range map[string]string{"": "cpu", "cpu": "cpu", "cuda": "cuda:0", "cuda:3": "cuda:3"} {
		d, err := model.ParseDevice(in)
		if err != nil || d.String() != want {
			t.Errorf("ParseDevice(%q) = %v, %v", in, d, err)
		}
	}
	for _, in := range []string{"gpu", "cuda:-1", "cuda:x"} {
		if _, err := model.ParseDevice(in); err == nil {
			t.Errorf("ParseDevice(%q) accepted", in)
		}
	}
}

// Batch limits default by device; explicit values win.
func TestOptionsDefaultsByDevice(t *testing.T) {
	cuda, _ := model.ParseDevice("cuda")
	for _, tc := range []struct {
		name                string
		in                  model.Options
		size, tokens, cells int
	}{
		{"cpu", model.Options{}, model.DefaultMaxBatchSize, model.DefaultMaxBatchTokens, model.DefaultMaxBatchCells},
		{"cuda", model.Options{Device: cuda}, model.DefaultCUDAMaxBatchSize, model.DefaultCUDAMaxBatchTokens, model.DefaultCUDAMaxBatchCells},
		{"cuda explicit", model.Options{Device: cuda, MaxBatchSize: 8, MaxBatchTokens: 100, MaxBatchCells: 1000}, 8, 100, 1000},
	} {
		o := tc.in.WithDefaults()
		if o.MaxBatchSize != tc.size || o.MaxBatchTokens != tc.tokens || o.MaxBatchCells != tc.cells {
			t.Errorf("%s: limits %d/%d/%d, want %d/%d/%d", tc.name, o.MaxBatchSize, o.MaxBatchTokens, o.MaxBatchCells, tc.size, tc.tokens, tc.cells)
		}
		if o.IntraOpThreads < 1 || o.InterOpThreads != 1 || o.ConcurrentRuns != 1 {
			t.Errorf("%s: threads %d/%d runs %d", tc.name, o.IntraOpThreads, o.InterOpThreads, o.ConcurrentRuns)
		}
	}
}

// The CPU-only ONNX Runtime build cannot enable CUDA: loading must say so
// clearly, not crash.
func TestCUDAUnavailableIsClear(t *testing.T) {
	rt, dir := fixture(t)
	m, err := rt.Load(dir, model.Options{Device: model.Device{CUDA: true}})
	if err == nil { // a GPU machine with the CUDA provider: it must score
		defer m.Close()
		if _, _, err := m.Score(context.Background(), mixedPairs(3, 1)); err != nil {
			t.Fatalf("scoring on CUDA: %v", err)
		}
		return
	}
	if !errors.Is(err, model.ErrDeviceUnavailable) {
		t.Fatalf("got %v, want ErrDeviceUnavailable", err)
	}
	// The library the project ships (onnxruntime-node 1.29.0's) has the CUDA
	// provider bridge: without a GPU it fails looking for the provider, not
	// because CUDA is compiled out. The GPU bundle relies on that
	// (deploy/gpu/README.md); a CPU-only build would say "not enabled".
	if strings.Contains(err.Error(), "not enabled in this build") {
		t.Fatalf("the ONNX Runtime library is a CPU-only build: %v", err)
	}
}

func BenchmarkScoreL12(b *testing.B) {
	rt, _ := fixture(b)
	m, err := rt.Load(testfixture.L12Model(b), model.Options{MaxBatchSize: 32, MaxBatchTokens: 1 << 20, MaxBatchCells: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	// 32 pairs of ~128 tokens.
	pairs := make([]wordpiece.Pair, 32)
	for i := range pairs {
		p := make([]string, 110)
		for k := range p {
			p[k] = words[(i*7+k*3)%len(words)]
		}
		pairs[i] = wordpiece.Pair{A: "what is the capital of france", B: strings.Join(p, " ")}
	}
	encs, _ := m.Tokenize(pairs)
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := m.ScoreEncoded(context.Background(), encs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(pairs))/b.Elapsed().Seconds(), "pairs/s")
	b.ReportMetric(float64(len(encs[0].IDs)), "tokens/pair")
}

func BenchmarkPaddingRatio(b *testing.B) {
	for _, sorted := range []bool{true, false} {
		b.Run(fmt.Sprintf("sorted=%v", sorted), func(b *testing.B) {
			rt, dir := fixture(b)
			m, err := rt.Load(dir, model.Options{NoLengthSort: !sorted})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			encs, _ := m.Tokenize(mixedPairs(1000, 11))
			var st model.Stats
			for b.Loop() {
				_, st, err = m.ScoreEncoded(context.Background(), encs)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(st.PaddingRatio(), "padded/real")
			b.ReportMetric(float64(b.N*len(encs))/b.Elapsed().Seconds(), "pairs/s")
		})
	}
}

// exportDir generates the tiny model with labels logits as a Hugging Face
// export whose config.json has no sentence-transformers activation (as
// optimum writes it), plus rerank.json when given.
func exportDir(t *testing.T, labels int, rerankJSON string) string {
	t.Helper()
	dir := t.TempDir()
	spec := testmodel.Tiny
	spec.Labels = labels
	if err := testmodel.WriteDir(dir, spec, testenv.TokenizerJSON(t)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, model.HFConfigFile)
	var cfg map[string]any
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	delete(cfg, "sentence_transformers")
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if rerankJSON != "" {
		if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), []byte(rerankJSON), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func scoresOf(t *testing.T, dir string, pairs []wordpiece.Pair) ([]float32, *model.Model) {
	t.Helper()
	rt, _ := fixture(t)
	m, err := rt.Load(dir, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return score(t, m, pairs), m
}

// score is m's scores of pairs.
func score(t *testing.T, m *model.Model, pairs []wordpiece.Pair) []float32 {
	t.Helper()
	s, _, err := m.Score(context.Background(), pairs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A two-logit export is scored as sentence-transformers would: softmax of
// the relevant class, σ(l1 − l0), whose order differs from l1's alone.
func TestTwoLogitExportScoresSoftmax(t *testing.T) {
	pairs := mixedPairs(40, 3)
	dir := exportDir(t, 2, "")
	probs, m := scoresOf(t, dir, pairs)
	if m.Activation() != model.ActivationSoftmax {
		t.Fatalf("activation %q, want softmax for two labels", m.Activation())
	}
	l1, _ := scoresOf(t, exportDir(t, 2, `{"output":{"activation":"none"}}`), pairs)
	l0, _ := scoresOf(t, exportDir(t, 2, `{"output":{"activation":"none","logit":0}}`), pairs)
	inversions := 0
	for i := range pairs {
		want := 1 / (1 + math.Exp(float64(l0[i])-float64(l1[i])))
		if math.Abs(float64(probs[i])-want) > 1e-5 {
			t.Fatalf("pair %d: softmax score %v, want σ(l1 − l0) = %v", i, probs[i], want)
		}
		for j := range i {
			if (l1[i] > l1[j]) != (probs[i] > probs[j]) {
				inversions++
			}
		}
	}
	if inversions == 0 {
		t.Fatal("no pair of candidates is ordered differently by l1 and by softmax: the test proves nothing")
	}
	t.Logf("%d of %d candidate pairs ordered differently by the raw logit and the probability", inversions, len(pairs)*(len(pairs)-1)/2)
}

// A one-logit export without a sentence-transformers activation is scored
// with sigmoid; config.json's activation_fn and rerank.json override it.
func TestOneLogitExportActivation(t *testing.T) {
	pairs := mixedPairs(20, 5)
	sig, m := scoresOf(t, exportDir(t, 1, ""), pairs)
	if m.Activation() != model.ActivationSigmoid {
		t.Fatalf("activation %q, want sigmoid", m.Activation())
	}
	raw, mr := scoresOf(t, exportDir(t, 1, `{"output":{"sigmoid":false}}`), pairs)
	if mr.Activation() != model.ActivationNone {
		t.Fatalf("legacy sigmoid:false gave %q", mr.Activation())
	}
	for i := range pairs {
		if want := 1 / (1 + math.Exp(-float64(raw[i]))); math.Abs(float64(sig[i])-want) > 1e-6 {
			t.Fatalf("pair %d: %v, want σ(%v) = %v", i, sig[i], raw[i], want)
		}
	}
	// The generated models say Identity in config.json, as a
	// sentence-transformers export of a raw-logit model does.
	_, dir := fixture(t)
	if _, mg := scoresOf(t, dir, pairs[:1]); mg.Activation() != model.ActivationNone {
		t.Fatalf("activation_fn Identity gave %q", mg.Activation())
	}
}

// An optimum-style directory (no rerank.json) loads with what the export
// says; a max_length over config.json's positions is refused.
func TestExportDirectoryWithoutRerankJSON(t *testing.T) {
	dir := exportDir(t, 1, "")
	if err := os.Remove(filepath.Join(dir, model.ModelFile)); err != nil { // transformers.js layout: onnx/model.onnx only
		t.Fatal(err)
	}
	rt, _ := fixture(t)
	m, err := rt.Load(dir, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Name() != filepath.Base(dir) || m.Config().MaxLength != 512 || m.Positions() != 512 {
		t.Fatalf("name %q, max_length %d, positions %d", m.Name(), m.Config().MaxLength, m.Positions())
	}
	if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), []byte(`{"max_length":600}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Load(dir, model.Options{}); !errors.Is(err, model.ErrInvalidConfig) || !strings.Contains(err.Error(), "position embeddings") {
		t.Fatalf("max_length over the positions: %v", err)
	}
}

// TestPreparedGraphScoresTheSame: a model loaded with its weights mapped
// and its residual LayerNormalizations fused (the default) scores every
// pair within float rounding of the file loaded as it is; mapping alone
// changes no bit.
func TestPreparedGraphScoresTheSame(t *testing.T) {
	prep, asIs := load(t, model.Options{}), load(t, model.Options{LoadAsIs: true})
	if !prep.WeightsMapped() || prep.FusedNorms() != 4 || asIs.WeightsMapped() || asIs.FusedNorms() != 0 {
		t.Fatalf("mapped %v, fused %d by default; %v, %d as is", prep.WeightsMapped(), prep.FusedNorms(), asIs.WeightsMapped(), asIs.FusedNorms())
	}
	pairs := mixedPairs(24, 11)
	a, b := score(t, prep, pairs), score(t, asIs, pairs)
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-5 {
			t.Fatalf("pair %d: %v prepared, %v as is", i, a[i], b[i])
		}
	}
	// The graph mapped alone (its weights then external data into the
	// model file), loaded as it is, scores the same bits; loaded the
	// default way, its weights are external already and it is fused.
	_, src := fixture(t)
	dir := t.TempDir() // the fixture's files, linked
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			if err := os.Link(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	data, err := os.ReadFile(filepath.Join(src, model.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	g, mapped, fused, err := model.PrepareGraphForTest(filepath.Join(dir, model.ModelFile), data, true, false)
	if err != nil || mapped < 10 || fused != 0 {
		t.Fatal(err, mapped, fused)
	}
	if err := os.WriteFile(filepath.Join(dir, "external.onnx"), g, 0o644); err != nil {
		t.Fatal(err)
	}
	rt, _ := fixture(t)
	for _, opts := range []model.Options{{ModelFile: "external.onnx", LoadAsIs: true}, {ModelFile: "external.onnx"}} {
		ext, err := rt.Load(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer ext.Close()
		c := score(t, ext, pairs)
		if ext.WeightsMapped() || ext.FusedNorms() != map[bool]int{true: 0, false: 4}[opts.LoadAsIs] {
			t.Fatalf("%+v: mapped %v, fused %d", opts, ext.WeightsMapped(), ext.FusedNorms())
		}
		for i := range c {
			if opts.LoadAsIs && c[i] != b[i] || math.Abs(float64(c[i]-b[i])) > 1e-5 {
				t.Fatalf("%+v, pair %d: %v from external data, %v from the file", opts, i, c[i], b[i])
			}
		}
	}
}

// On CPU a call's pairs, sorted by length, are cut into runs of like
// lengths: no run pads more than MaxBatchPadding (1.25 by default) unless
// it is one pair; off, runs are cut by size alone.
func TestPlanBoundsPadding(t *testing.T) {
	pairs := mixedPairs(64, 9)
	for _, tc := range []struct {
		name    string
		opts    model.Options
		maxPad  float64
		maxRuns int
	}{
		{"default", model.Options{}, model.DefaultMaxBatchPadding, 64},
		{"tighter", model.Options{MaxBatchPadding: 1.05}, 1.05, 64},
		{"off", model.Options{MaxBatchPadding: -1, MaxBatchTokens: 1 << 20, MaxBatchCells: 1 << 30}, 0, 4},
	} {
		m := load(t, tc.opts)
		encs, err := m.Tokenize(pairs)
		if err != nil {
			t.Fatal(err)
		}
		plan := m.Plan(encs)
		seen := 0
		for _, run := range plan {
			longest, real := 0, 0
			for _, i := range run {
				longest = max(longest, len(encs[i].IDs))
				real += len(encs[i].IDs)
			}
			seen += len(run)
			if pad := float64(len(run)*longest) / float64(real); tc.maxPad > 0 && len(run) > 1 && pad > tc.maxPad {
				t.Errorf("%s: a run of %d pairs pads %.3f, over %.2f", tc.name, len(run), pad, tc.maxPad)
			}
		}
		if seen != len(pairs) || len(plan) > tc.maxRuns {
			t.Errorf("%s: %d runs holding %d pairs", tc.name, len(plan), seen)
		}
		if tc.maxPad == 0 && len(plan) != 4 {
			t.Errorf("off: %d runs of 64 pairs, want 4 of 16", len(plan))
		}
	}
}
