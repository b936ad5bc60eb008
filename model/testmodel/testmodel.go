package testmodel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
)

// Spec describes a random-weight BERT cross-encoder.
type Spec struct {
	Name         string  // recorded in the ONNX metadata (the loader names a model after its directory)
	Layers       int     // encoder layers
	Hidden       int     // hidden size
	Heads        int     // attention heads; must divide Hidden
	FFN          int     // intermediate (feed-forward) size
	MaxPositions int     // position embeddings, the longest sequence the model takes
	TypeVocab    int     // token type (segment) embeddings
	Vocab        int     // word embeddings; every tokenizer id must be below it
	Seed         uint64  // PCG seed for every weight
	InitStd      float64 // standard deviation of weights and embeddings; biases use a tenth of it
	Labels       int     // classifier outputs (logits per pair); 0 means 1
}

// labels is the number of logits per pair.
func (s Spec) labels() int { return max(s.Labels, 1) }

// The presets' InitStd is far above BERT's 0.02 on purpose: with 0.02 a small
// random model's logit barely moves with its input (a spread of about 0.001
// for Tiny), while these values spread the logits of random pairs over about
// a unit (standard deviation 0.3 to 0.7 over seeds 1 to 3).

// Tiny is a 2-layer, 32-wide model (about 4 MB, nearly all of it the word
// embeddings) for unit tests.
var Tiny = Spec{
	Name:         "tiny",
	Layers:       2,
	Hidden:       32,
	Heads:        2,
	FFN:          128,
	MaxPositions: 512,
	TypeVocab:    2,
	Vocab:        30522,
	Seed:         20240601,
	InitStd:      0.3,
}

// MiniLML12 has the shape of cross-encoder/ms-marco-MiniLM-L-12-v2 (about
// 133 MB) for demos and benchmarks.
var MiniLML12 = Spec{
	Name:         "minilm-l12-h384-random",
	Layers:       12,
	Hidden:       384,
	Heads:        12,
	FFN:          1536,
	MaxPositions: 512,
	TypeVocab:    2,
	Vocab:        30522,
	Seed:         20240612,
	InitStd:      0.08,
}

// Lookup returns the preset named name (Tiny or MiniLML12).
func Lookup(name string) (Spec, bool) {
	for _, s := range []Spec{Tiny, MiniLML12} {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// maxModelBytes keeps a model under protobuf's 2 GiB message limit, which
// ONNX Runtime enforces for models without external data.
const maxModelBytes = 2<<30 - 1<<20

// Validate reports whether s describes a model that can be generated.
func (s Spec) Validate() error {
	var errs []error
	check := func(field string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s = %d, want %d..%d", field, v, lo, hi))
		}
	}
	if s.Name == "" {
		errs = append(errs, errors.New("Name is empty"))
	}
	check("Layers", s.Layers, 1, 1<<10)
	check("Hidden", s.Hidden, 1, 1<<16)
	check("Heads", s.Heads, 1, 1<<16)
	check("FFN", s.FFN, 1, 1<<18)
	check("MaxPositions", s.MaxPositions, 1, 1<<20)
	check("TypeVocab", s.TypeVocab, 1, 1<<16)
	check("Vocab", s.Vocab, 1, 1<<24)
	check("Labels", s.labels(), 1, 16)
	if s.Heads > 0 && s.Hidden%s.Heads != 0 {
		errs = append(errs, fmt.Errorf("Hidden %d is not a multiple of Heads %d", s.Hidden, s.Heads))
	}
	if !(s.InitStd > 0) || math.IsInf(s.InitStd, 0) {
		errs = append(errs, fmt.Errorf("InitStd = %v, want a positive finite number", s.InitStd))
	}
	if len(errs) == 0 {
		if n := 4 * s.Params(); n > maxModelBytes {
			errs = append(errs, fmt.Errorf("weights take %d bytes, over ONNX's 2 GiB limit", n))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testmodel: spec %q: %w", s.Name, err)
	}
	return nil
}

// Params is the number of weights (float32 values) in the model.
func (s Spec) Params() int64 {
	h, f := int64(s.Hidden), int64(s.FFN)
	emb := (int64(s.Vocab)+int64(s.MaxPositions)+int64(s.TypeVocab))*h + 2*h
	layer := 4*(h*h+h) + 2*h + (h*f + f) + (f*h + h) + 2*h
	return emb + int64(s.Layers)*layer + (h*h + h) + (h + 1)
}

// ONNXSize is the exact number of bytes WriteONNX writes for s.
func (s Spec) ONNXSize() (int64, error) {
	if err := s.Validate(); err != nil {
		return 0, err
	}
	return encode(s).size(), nil
}

// WriteONNX writes the model.onnx bytes for s to w. It streams the weights,
// so it holds well under a megabyte of them at a time; the same Spec gives the
// same bytes.
func WriteONNX(w io.Writer, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := encode(s).write(w, s.Seed); err != nil {
		return fmt.Errorf("testmodel: writing %s: %w", s.Name, err)
	}
	return nil
}

// WriteONNXFile writes the model.onnx bytes for s to the file path,
// replacing it (new weights under a served model's name, for tests that
// swap them).
func WriteONNXFile(path string, s Spec) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	if err := WriteONNX(f, s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Files written by WriteDir.
const (
	ModelFile           = "model.onnx"
	ONNXModelFile       = "onnx/model.onnx" // where transformers.js looks
	TokenizerFile       = "tokenizer.json"
	TokenizerConfigFile = "tokenizer_config.json"
	ConfigFile          = "config.json"
	RerankFile          = "rerank.json"
)

// WriteDir lays out a model directory for s exactly as a Hugging Face ONNX
// export does: model.onnx, onnx/model.onnx (a hard link to it, or a copy
// where links fail), tokenizer.json (copied from the file tokenizerJSON),
// tokenizer_config.json and config.json (a Hugging Face BertConfig, with the
// sentence-transformers activation and a note that the weights are random).
// No rerank.json: the loader needs none. It creates dir if needed and
// replaces those files if they exist, each by renaming a complete temporary
// file.
func WriteDir(dir string, s Spec, tokenizerJSON string) error {
	if err := s.Validate(); err != nil {
		return err
	}
	tok, err := os.ReadFile(tokenizerJSON)
	if err != nil {
		return fmt.Errorf("testmodel: reading tokenizer: %w", err)
	}
	if err := checkTokenizer(tok, s.Vocab); err != nil {
		return fmt.Errorf("testmodel: tokenizer %s: %w", tokenizerJSON, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(ONNXModelFile)), 0o755); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}

	model := filepath.Join(dir, ModelFile)
	if err := writeFileAtomic(model, func(w io.Writer) error { return WriteONNX(w, s) }); err != nil {
		return err
	}
	if err := linkOrCopy(model, filepath.Join(dir, ONNXModelFile)); err != nil {
		return err
	}
	// An older layout wrote rerank.json, which would now override the
	// export's own settings.
	if err := os.Remove(filepath.Join(dir, RerankFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testmodel: %w", err)
	}

	files := []struct {
		name string
		data []byte
	}{
		{TokenizerFile, tok},
		{TokenizerConfigFile, mustJSON(tokenizerConfig(s))},
		{ConfigFile, mustJSON(bertConfig(s))},
	}
	for _, f := range files {
		err := writeFileAtomic(filepath.Join(dir, f.name), func(w io.Writer) error {
			_, err := w.Write(f.data)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// checkTokenizer makes sure that every id the tokenizer can produce has a
// word embedding (Gather fails on ids out of range).
func checkTokenizer(data []byte, vocab int) error {
	var tj struct {
		Model struct {
			Vocab json.RawMessage `json:"vocab"`
		} `json:"model"`
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
		} `json:"added_tokens"`
	}
	if err := json.Unmarshal(data, &tj); err != nil {
		return fmt.Errorf("parsing: %w", err)
	}
	var ids map[string]int // WordPiece and BPE vocabularies; others are not checked
	if len(tj.Model.Vocab) > 0 && tj.Model.Vocab[0] == '{' {
		if err := json.Unmarshal(tj.Model.Vocab, &ids); err != nil {
			return fmt.Errorf("parsing model.vocab: %w", err)
		}
	}
	for _, t := range tj.AddedTokens {
		if ids == nil {
			ids = map[string]int{}
		}
		ids[t.Content] = t.ID
	}
	for tokStr, id := range ids {
		if id < 0 || id >= vocab {
			return fmt.Errorf("token %q has id %d, outside the model's vocabulary of %d", tokStr, id, vocab)
		}
	}
	return nil
}

func mustJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		panic(err) // only fixed struct types are encoded
	}
	return buf.Bytes()
}

// RandomWeightsNote is config.json's rerank_generated.note.
const RandomWeightsNote = "random weights: scores are meaningless; for tests, demos and benchmarks only"

type generatedJSON struct {
	RandomWeights bool   `json:"random_weights"`
	Seed          uint64 `json:"seed"`
	Note          string `json:"note"`
}

// sentence-transformers' CrossEncoder settings in config.json. The
// generated models keep raw logits (Identity), as the demo always showed.
type sentenceTransformersJSON struct {
	ActivationFn string `json:"activation_fn"`
	Version      string `json:"version"`
}

// maxLength is 512, or fewer where the model has fewer positions.
func maxLength(s Spec) int {
	return min(512, s.MaxPositions)
}

// config.json: a Hugging Face BertConfig for BertForSequenceClassification.
type bertConfigJSON struct {
	Architectures             []string                 `json:"architectures"`
	ModelType                 string                   `json:"model_type"`
	AttentionProbsDropoutProb float64                  `json:"attention_probs_dropout_prob"`
	ClassifierDropout         *float64                 `json:"classifier_dropout"`
	HiddenAct                 string                   `json:"hidden_act"`
	HiddenDropoutProb         float64                  `json:"hidden_dropout_prob"`
	HiddenSize                int                      `json:"hidden_size"`
	ID2Label                  map[string]string        `json:"id2label"`
	InitializerRange          float64                  `json:"initializer_range"`
	IntermediateSize          int                      `json:"intermediate_size"`
	Label2ID                  map[string]int           `json:"label2id"`
	LayerNormEps              float64                  `json:"layer_norm_eps"`
	MaxPositionEmbeddings     int                      `json:"max_position_embeddings"`
	NumAttentionHeads         int                      `json:"num_attention_heads"`
	NumHiddenLayers           int                      `json:"num_hidden_layers"`
	NumLabels                 int                      `json:"num_labels"`
	PadTokenID                int                      `json:"pad_token_id"`
	PositionEmbeddingType     string                   `json:"position_embedding_type"`
	TorchDtype                string                   `json:"torch_dtype"`
	TypeVocabSize             int                      `json:"type_vocab_size"`
	UseCache                  bool                     `json:"use_cache"`
	VocabSize                 int                      `json:"vocab_size"`
	SentenceTransformers      sentenceTransformersJSON `json:"sentence_transformers"`
	Generated                 generatedJSON            `json:"rerank_generated"`
}

func bertConfig(s Spec) bertConfigJSON {
	return bertConfigJSON{
		Architectures:             []string{"BertForSequenceClassification"},
		ModelType:                 "bert",
		AttentionProbsDropoutProb: 0.1,
		HiddenAct:                 "gelu",
		HiddenDropoutProb:         0.1,
		HiddenSize:                s.Hidden,
		ID2Label:                  labelMap(s),
		InitializerRange:          s.InitStd,
		IntermediateSize:          s.FFN,
		Label2ID:                  labelIDs(s),
		LayerNormEps:              layerNormEps,
		MaxPositionEmbeddings:     s.MaxPositions,
		NumAttentionHeads:         s.Heads,
		NumHiddenLayers:           s.Layers,
		NumLabels:                 s.labels(),
		PadTokenID:                0,
		PositionEmbeddingType:     "absolute",
		TorchDtype:                "float32",
		TypeVocabSize:             s.TypeVocab,
		UseCache:                  true,
		VocabSize:                 s.Vocab,
		SentenceTransformers:      sentenceTransformersJSON{ActivationFn: "torch.nn.modules.linear.Identity", Version: "4.1.0"},
		Generated:                 generatedJSON{RandomWeights: true, Seed: s.Seed, Note: RandomWeightsNote},
	}
}

func labelMap(s Spec) map[string]string {
	m := map[string]string{}
	for i := range s.labels() {
		m[fmt.Sprint(i)] = fmt.Sprintf("LABEL_%d", i)
	}
	return m
}

func labelIDs(s Spec) map[string]int {
	m := map[string]int{}
	for i := range s.labels() {
		m[fmt.Sprintf("LABEL_%d", i)] = i
	}
	return m
}

type tokenizerConfigJSON struct {
	DoLowerCase    bool   `json:"do_lower_case"`
	ModelMaxLength int    `json:"model_max_length"`
	TokenizerClass string `json:"tokenizer_class"`
	ClsToken       string `json:"cls_token"`
	SepToken       string `json:"sep_token"`
	PadToken       string `json:"pad_token"`
	UnkToken       string `json:"unk_token"`
	MaskToken      string `json:"mask_token"`
}

func tokenizerConfig(s Spec) tokenizerConfigJSON {
	return tokenizerConfigJSON{
		DoLowerCase:    true,
		ModelMaxLength: maxLength(s),
		TokenizerClass: "BertTokenizer",
		ClsToken:       "[CLS]",
		SepToken:       "[SEP]",
		PadToken:       "[PAD]",
		UnkToken:       "[UNK]",
		MaskToken:      "[MASK]",
	}
}

// writeFileAtomic writes path through a temporary file in the same
// directory, renamed into place once complete.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("testmodel: writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	return nil
}

// linkOrCopy makes dst a hard link to src, or a copy of it where the file
// system refuses links.
func linkOrCopy(src, dst string) error {
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testmodel: %w", err)
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return writeFileAtomic(dst, func(w io.Writer) error {
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(w, in)
		return err
	})
}
