package wordpiece

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// maxVocabID bounds token ids (real vocabularies have at most a few hundred
// thousand entries), so that a corrupt file cannot make the id → token table
// huge.
const maxVocabID = 1 << 24

type tokenizerFile struct {
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Model         json.RawMessage  `json:"model"`
	// truncation, padding and decoder are deliberately ignored.
}

type addedTokenJSON struct {
	ID         int64  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"` // absent: true, as in Hugging Face
	Special    bool   `json:"special"`
}

type wordPieceJSON struct {
	Type                    string           `json:"type"`
	UnkToken                *string          `json:"unk_token"`
	ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
	MaxInputCharsPerWord    *int             `json:"max_input_chars_per_word"`
	Vocab                   map[string]int64 `json:"vocab"`
}

type bertNormalizerJSON struct {
	Type               string `json:"type"`
	CleanText          *bool  `json:"clean_text"`
	HandleChineseChars *bool  `json:"handle_chinese_chars"`
	StripAccents       *bool  `json:"strip_accents"`
	Lowercase          *bool  `json:"lowercase"`
}

type typeOnly struct {
	Type string `json:"type"`
}

func isNull(m json.RawMessage) bool {
	s := strings.TrimSpace(string(m))
	return s == "" || s == "null"
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("parsing tokenizer.json: %w: "+format, append([]any{ErrUnsupported}, args...)...)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("parsing tokenizer.json: %w: "+format, append([]any{ErrInvalid}, args...)...)
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// Parse parses the contents of a tokenizer.json. It accepts only a
// WordPiece model with a BertNormalizer, a BertPreTokenizer and a BERT-shaped
// post-processor (TemplateProcessing "[CLS] $A [SEP] $B:1 [SEP]:1",
// BertProcessing or none); anything else fails with ErrUnsupported.
// The file's own truncation and padding presets are ignored.
func Parse(data []byte) (*Tokenizer, error) {
	var f tokenizerFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parsing tokenizer.json: %w", err)
	}
	t := &Tokenizer{}

	// Model.
	if isNull(f.Model) {
		return nil, unsupported("no model")
	}
	var mt typeOnly
	if err := json.Unmarshal(f.Model, &mt); err != nil {
		return nil, fmt.Errorf("parsing tokenizer.json model: %w", err)
	}
	if mt.Type != "WordPiece" {
		return nil, unsupported("model type %q, want WordPiece", mt.Type)
	}
	var m wordPieceJSON
	if err := json.Unmarshal(f.Model, &m); err != nil {
		return nil, fmt.Errorf("parsing tokenizer.json model: %w", err)
	}
	if len(m.Vocab) == 0 {
		return nil, invalid("empty WordPiece vocabulary")
	}
	unk, prefix, maxChars := "[UNK]", "##", 100
	if m.UnkToken != nil {
		unk = *m.UnkToken
	}
	if m.ContinuingSubwordPrefix != nil {
		prefix = *m.ContinuingSubwordPrefix
	}
	if m.MaxInputCharsPerWord != nil {
		maxChars = *m.MaxInputCharsPerWord
	}
	if maxChars < 0 {
		return nil, invalid("max_input_chars_per_word %d is negative", maxChars)
	}
	t.maxChars = maxChars
	t.vocab = make(map[string]int32, len(m.Vocab))
	t.cont = make(map[string]int32, len(m.Vocab)/4)
	maxID := int64(-1)
	for tok, id := range m.Vocab {
		if id < 0 || id > math.MaxInt32 {
			return nil, invalid("vocabulary id %d of %q out of range", id, tok)
		}
		t.vocab[tok] = int32(id)
		t.maxVocabLen = max(t.maxVocabLen, len(tok))
		if rest, ok := strings.CutPrefix(tok, prefix); ok && rest != "" {
			t.cont[rest] = int32(id)
			t.maxContLen = max(t.maxContLen, len(rest))
		}
		maxID = max(maxID, id)
	}
	unkID, ok := t.vocab[unk]
	if !ok {
		return nil, invalid("unk_token %q is not in the vocabulary", unk)
	}
	t.unkID = unkID

	// Normalizer.
	if isNull(f.Normalizer) {
		return nil, unsupported("no normalizer, want BertNormalizer")
	}
	var n bertNormalizerJSON
	if err := json.Unmarshal(f.Normalizer, &n); err != nil {
		return nil, fmt.Errorf("parsing tokenizer.json normalizer: %w", err)
	}
	if n.Type != "BertNormalizer" {
		return nil, unsupported("normalizer type %q, want BertNormalizer", n.Type)
	}
	t.cleanText = boolOr(n.CleanText, true)
	t.chinese = boolOr(n.HandleChineseChars, true)
	t.lowercase = boolOr(n.Lowercase, true)
	t.stripAccents = boolOr(n.StripAccents, t.lowercase) // null follows lowercase

	// Pre-tokenizer.
	if isNull(f.PreTokenizer) {
		return nil, unsupported("no pre_tokenizer, want BertPreTokenizer")
	}
	var pt typeOnly
	if err := json.Unmarshal(f.PreTokenizer, &pt); err != nil {
		return nil, fmt.Errorf("parsing tokenizer.json pre_tokenizer: %w", err)
	}
	if pt.Type != "BertPreTokenizer" {
		return nil, unsupported("pre_tokenizer type %q, want BertPreTokenizer", pt.Type)
	}

	initRuneFlags()
	t.initASCII()

	// Added tokens.
	var raw, normd []addedToken
	t.added = make(map[string]int32, len(f.AddedTokens))
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.ID > math.MaxInt32 {
			return nil, invalid("added token %q has id %d out of range", a.Content, a.ID)
		}
		maxID = max(maxID, a.ID)
		if a.Content == "" {
			continue // Hugging Face ignores empty added tokens
		}
		if _, dup := t.added[a.Content]; !dup {
			t.added[a.Content] = int32(a.ID)
		}
		at := addedToken{content: a.Content, id: int32(a.ID), singleWord: a.SingleWord, lstrip: a.LStrip, rstrip: a.RStrip}
		if boolOr(a.Normalized, true) {
			at.content = string(t.normalize(nil, a.Content, &scratch{}))
			if at.content == "" {
				continue
			}
			normd = append(normd, at)
		} else {
			raw = append(raw, at)
		}
	}
	t.raw = newAddedSet(raw)
	t.norm = newAddedSet(normd)
	lookup := func(tok string) (int32, bool) {
		if id, ok := t.added[tok]; ok {
			return id, true
		}
		id, ok := t.vocab[tok]
		return id, ok
	}

	// Special tokens, from the post-processor where it names them.
	cls, sep, err := parsePostProcessor(f.PostProcessor, lookup)
	if err != nil {
		return nil, err
	}
	t.clsID, t.sepID = cls, sep
	pad, ok := lookup("[PAD]")
	if !ok {
		return nil, invalid("no [PAD] token")
	}
	t.padID = pad

	if maxID >= maxVocabID {
		return nil, invalid("token id %d is implausibly large (limit %d)", maxID, maxVocabID-1)
	}
	t.vocabSize = int(maxID) + 1
	t.idToToken = make([]string, t.vocabSize)
	for tok, id := range t.vocab {
		t.idToToken[id] = tok
	}
	for _, a := range f.AddedTokens {
		if a.Content != "" {
			t.idToToken[a.ID] = a.Content
		}
	}
	for c := 0; c < utf8.RuneSelf; c++ {
		if asciiKind[c] == kindPunct {
			t.asciiPunct[c] = t.lookupWord([]byte{byte(c)})
		}
	}
	return t, nil
}

type templatePiece struct {
	SpecialToken *struct {
		ID     string `json:"id"`
		TypeID int    `json:"type_id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID     string `json:"id"`
		TypeID int    `json:"type_id"`
	} `json:"Sequence"`
}

type postProcessorJSON struct {
	Type          string          `json:"type"`
	Pair          []templatePiece `json:"pair"`
	SpecialTokens map[string]struct {
		IDs []int64 `json:"ids"`
	} `json:"special_tokens"`
	Sep []json.RawMessage `json:"sep"` // BertProcessing: ["[SEP]", 102]
	Cls []json.RawMessage `json:"cls"`
}

// parsePostProcessor returns the [CLS] and [SEP] ids, checking that the
// post-processor builds "[CLS] A [SEP] B [SEP]" with type ids 0 0 0 1 1.
func parsePostProcessor(raw json.RawMessage, lookup func(string) (int32, bool)) (cls, sep int32, err error) {
	if isNull(raw) {
		c, ok1 := lookup("[CLS]")
		s, ok2 := lookup("[SEP]")
		if !ok1 || !ok2 {
			return 0, 0, invalid("no post_processor and no [CLS]/[SEP] tokens")
		}
		return c, s, nil
	}
	var p postProcessorJSON
	if err := json.Unmarshal(raw, &p); err != nil {
		return 0, 0, fmt.Errorf("parsing tokenizer.json post_processor: %w", err)
	}
	switch p.Type {
	case "BertProcessing":
		id := func(pair []json.RawMessage, what string) (int32, error) {
			var v int64
			if len(pair) != 2 || json.Unmarshal(pair[1], &v) != nil || v < 0 || v > math.MaxInt32 {
				return 0, invalid("BertProcessing %s is not [token, id]", what)
			}
			return int32(v), nil
		}
		if cls, err = id(p.Cls, "cls"); err != nil {
			return 0, 0, err
		}
		if sep, err = id(p.Sep, "sep"); err != nil {
			return 0, 0, err
		}
		return cls, sep, nil
	case "TemplateProcessing":
		pp := p.Pair
		shape := len(pp) == 5 &&
			pp[0].SpecialToken != nil && pp[0].SpecialToken.TypeID == 0 &&
			pp[1].Sequence != nil && pp[1].Sequence.ID == "A" && pp[1].Sequence.TypeID == 0 &&
			pp[2].SpecialToken != nil && pp[2].SpecialToken.TypeID == 0 &&
			pp[3].Sequence != nil && pp[3].Sequence.ID == "B" && pp[3].Sequence.TypeID == 1 &&
			pp[4].SpecialToken != nil && pp[4].SpecialToken.TypeID == 1 &&
			pp[2].SpecialToken.ID == pp[4].SpecialToken.ID
		if !shape {
			return 0, 0, unsupported("TemplateProcessing pair template is not [CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1")
		}
		id := func(name string) (int32, error) {
			st, ok := p.SpecialTokens[name]
			if !ok || len(st.IDs) != 1 || st.IDs[0] < 0 || st.IDs[0] > math.MaxInt32 {
				return 0, unsupported("TemplateProcessing special token %q must map to exactly one id", name)
			}
			return int32(st.IDs[0]), nil
		}
		if cls, err = id(pp[0].SpecialToken.ID); err != nil {
			return 0, 0, err
		}
		if sep, err = id(pp[2].SpecialToken.ID); err != nil {
			return 0, 0, err
		}
		return cls, sep, nil
	default:
		return 0, 0, unsupported("post_processor type %q, want TemplateProcessing or BertProcessing", p.Type)
	}
}
