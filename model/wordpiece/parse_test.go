package wordpiece

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rerank/rerank/internal/testenv"
)

// mutateJSON decodes the BERT tokenizer.json, applies edit and re-encodes it.
func mutateJSON(t *testing.T, edit func(m map[string]any)) []byte {
	t.Helper()
	data, err := os.ReadFile(testenv.TokenizerJSON(t))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseRejects(t *testing.T) {
	sub := func(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }
	cases := []struct {
		name string
		edit func(m map[string]any)
		want error
	}{
		{"BPE model", func(m map[string]any) { sub(m, "model")["type"] = "BPE" }, ErrUnsupported},
		{"Unigram model", func(m map[string]any) { sub(m, "model")["type"] = "Unigram" }, ErrUnsupported},
		{"no model", func(m map[string]any) { m["model"] = nil }, ErrUnsupported},
		{"Sequence normalizer", func(m map[string]any) {
			m["normalizer"] = map[string]any{"type": "Sequence", "normalizers": []any{m["normalizer"]}}
		}, ErrUnsupported},
		{"no normalizer", func(m map[string]any) { m["normalizer"] = nil }, ErrUnsupported},
		{"Whitespace pre-tokenizer", func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "Whitespace"} }, ErrUnsupported},
		{"no pre-tokenizer", func(m map[string]any) { m["pre_tokenizer"] = nil }, ErrUnsupported},
		{"RobertaProcessing", func(m map[string]any) {
			m["post_processor"] = map[string]any{"type": "RobertaProcessing", "sep": []any{"</s>", 2}, "cls": []any{"<s>", 0}}
		}, ErrUnsupported},
		{"template without type ids", func(m map[string]any) {
			pair := sub(m, "post_processor")["pair"].([]any)
			pair[3].(map[string]any)["Sequence"].(map[string]any)["type_id"] = 0
		}, ErrUnsupported},
		{"unk not in vocab", func(m map[string]any) { sub(m, "model")["unk_token"] = "[NOPE]" }, ErrInvalid},
		{"negative id", func(m map[string]any) { sub(sub(m, "model"), "vocab")["zzz"] = -1 }, ErrInvalid},
		{"huge id", func(m map[string]any) { sub(sub(m, "model"), "vocab")["zzz"] = 1 << 30 }, ErrInvalid},
		{"huge added id", func(m map[string]any) {
			m["added_tokens"] = append(m["added_tokens"].([]any), map[string]any{"id": 1 << 30, "content": "<x>"})
		}, ErrInvalid},
		{"negative max chars", func(m map[string]any) { sub(m, "model")["max_input_chars_per_word"] = -1 }, ErrInvalid},
		{"empty vocab", func(m map[string]any) { sub(m, "model")["vocab"] = map[string]any{} }, ErrInvalid},
		{"no [PAD]", func(m map[string]any) {
			delete(sub(sub(m, "model"), "vocab"), "[PAD]")
			m["added_tokens"] = m["added_tokens"].([]any)[1:]
		}, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(mutateJSON(t, c.edit))
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "parsing tokenizer.json") {
				t.Errorf("error %q lacks the parsing prefix", err)
			}
		})
	}

	var syn *json.SyntaxError
	if _, err := Parse([]byte(`{"model": `)); !errors.As(err, &syn) && err == nil {
		t.Errorf("truncated JSON: err = %v", err)
	}
	if _, err := Parse([]byte(`[1,2]`)); err == nil {
		t.Errorf("JSON array accepted")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestParseAccepts(t *testing.T) {
	ref := bertTokenizer(t)
	cases := []struct {
		name string
		edit func(m map[string]any)
	}{
		{"presets ignored", func(m map[string]any) {
			m["truncation"] = map[string]any{"max_length": 5, "strategy": "OnlySecond", "direction": "Left", "stride": 0}
			m["padding"] = map[string]any{"strategy": map[string]any{"Fixed": 7}, "direction": "Left", "pad_id": 5, "pad_type_id": 1, "pad_token": "[X]"}
		}},
		{"BertProcessing", func(m map[string]any) {
			m["post_processor"] = map[string]any{"type": "BertProcessing", "sep": []any{"[SEP]", 102}, "cls": []any{"[CLS]", 101}}
		}},
		{"no post-processor", func(m map[string]any) { m["post_processor"] = nil }},
		{"explicit strip_accents", func(m map[string]any) { m["normalizer"].(map[string]any)["strip_accents"] = true }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := Parse(mutateJSON(t, c.edit))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range loadParityCases(t)[:50] {
				got, err1 := tok.EncodePair(p.A, p.B, p.MaxLength, Truncation(p.Truncation))
				want, err2 := ref.EncodePair(p.A, p.B, p.MaxLength, Truncation(p.Truncation))
				if err1 != nil || err2 != nil || !slices.Equal(got.IDs, want.IDs) || !slices.Equal(got.TypeIDs, want.TypeIDs) {
					t.Fatalf("differs from the reference tokenizer on %q | %q", p.A, p.B)
				}
			}
		})
	}
}

// tinyTokenizer builds a small WordPiece tokenizer.json for the options the
// BERT file does not exercise.
func tinyTokenizer(t *testing.T, normalizer string, addedExtra string) *Tokenizer {
	t.Helper()
	js := `{
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "[PAD]", "special": true, "normalized": false},
    {"id": 1, "content": "[UNK]", "special": true, "normalized": false},
    {"id": 2, "content": "[CLS]", "special": true, "normalized": false},
    {"id": 3, "content": "[SEP]", "special": true, "normalized": false}` + addedExtra + `
  ],
  "normalizer": ` + normalizer + `,
  "pre_tokenizer": {"type": "BertPreTokenizer"},
  "post_processor": null,
  "decoder": null,
  "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "@@", "max_input_chars_per_word": 8,
    "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "@@s": 6, "Hello": 7, "héllo": 8,
      "北京": 9, "北": 10, "京": 11, "a": 12, "@@tok": 13, "b": 14, "x": 15, "@@x": 16, "\u0000": 17, "i̇": 18, "tok": 19}}
}`
	tok, err := Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTinyTokenizerOptions(t *testing.T) {
	const (
		uncased  = `{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}`
		cased    = `{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": false}`
		casedSA  = `{"type": "BertNormalizer", "lowercase": false, "strip_accents": true}`
		lowerKA  = `{"type": "BertNormalizer", "lowercase": true, "strip_accents": false}`
		noCJK    = `{"type": "BertNormalizer", "handle_chinese_chars": false}`
		noClean  = `{"type": "BertNormalizer", "clean_text": false}`
		extraTok = `,
    {"id": 20, "content": "<m>", "lstrip": true, "rstrip": true, "normalized": false},
    {"id": 21, "content": "tok", "single_word": true, "normalized": false},
    {"id": 22, "content": "SPÉCIAL", "normalized": true},
    {"id": 23, "content": ""}`
	)
	cases := []struct {
		name, normalizer, added, in string
		want                        []int64
	}{
		{"continuation prefix @@", uncased, "", "worlds", []int64{5, 6}},
		{"max chars 8", uncased, "", "xxxxxxxx xxxxxxxxx", []int64{15, 16, 16, 16, 16, 16, 16, 16, 1}},
		{"uncased", uncased, "", "Héllo", []int64{4}},
		{"cased keeps case and accents", cased, "", "Hello héllo Héllo", []int64{7, 8, 1}},
		{"cased with strip_accents", casedSA, "", "Héllo", []int64{7}},
		{"lowercase without strip_accents", lowerKA, "", "HÉLLO", []int64{8}},
		{"lowercase İ without strip_accents", lowerKA, "", "İ", []int64{18}},
		{"no CJK splitting", noCJK, "", "北京", []int64{9}},
		{"CJK splitting", uncased, "", "北京", []int64{10, 11}},
		{"no clean_text keeps NUL", noClean, "", "\x00", []int64{17}},
		{"no clean_text, tab still splits", noClean, "", "a\tb", []int64{12, 14}},
		{"lstrip/rstrip token", uncased, extraTok, "a <m> b", []int64{12, 20, 14}},
		{"single_word matched alone", uncased, extraTok, "a tok b", []int64{12, 21, 14}},
		{"single_word not matched inside a word", uncased, extraTok, "atok", []int64{12, 13}},
		{"normalized added token", uncased, extraTok, "a Spécial b", []int64{12, 22, 14}},
		{"normalized added token glued", uncased, extraTok, "xspecialx", []int64{15, 22, 15}},
		{"raw token beats normalization", uncased, extraTok, "[SEP]x[sep]", []int64{3, 15, 1, 1, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := tinyTokenizer(t, c.normalizer, c.added)
			if got := tok.Tokenize(c.in); !slices.Equal(got, c.want) {
				t.Errorf("Tokenize(%q) = %v %q, want %v", c.in, got, tok.tokenStrings(got), c.want)
			}
		})
	}
}

func TestTinyTokenToID(t *testing.T) {
	tok := tinyTokenizer(t, `{"type": "BertNormalizer"}`, `,
    {"id": 22, "content": "SPÉCIAL", "normalized": true}`)
	if id, ok := tok.TokenToID("SPÉCIAL"); !ok || id != 22 {
		t.Errorf("TokenToID(SPÉCIAL) = %d, %v", id, ok)
	}
	if s, ok := tok.IDToToken(22); !ok || s != "SPÉCIAL" {
		t.Errorf("IDToToken(22) = %q, %v", s, ok)
	}
	if tok.VocabSize() != 23 {
		t.Errorf("VocabSize = %d, want 23", tok.VocabSize())
	}
}
