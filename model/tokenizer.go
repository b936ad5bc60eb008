package model

// A BERT WordPiece tokenizer that reads a Hugging Face tokenizer.json and
// reproduces the `tokenizers` pipeline exactly for BERT-style models:
//
//	added tokens (matched in the raw text) → BertNormalizer → BertPreTokenizer
//	→ WordPiece → pair truncation → [CLS] a [SEP] b [SEP]
//
// It exists because github.com/sugarme/tokenizer mis-tokenizes accented text,
// corrupts type ids with its zero padding direction, truncates pairs wrongly
// and calls log.Fatal, and because it is far too slow for the re-ranker's hot
// path (see BenchmarkTokenizePairs / BenchmarkSugarmeTokenizePairs).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Sentinel errors. Every error returned by this file wraps one of them (or an
// I/O or JSON error), so callers can test with errors.Is.
var (
	// ErrUnsupportedTokenizer: tokenizer.json describes something other than
	// a BERT WordPiece tokenizer (another model, normalizer, pre-tokenizer or
	// post-processor), which this package refuses rather than tokenizing wrongly.
	ErrUnsupportedTokenizer = errors.New("unsupported tokenizer: not a BERT WordPiece tokenizer")
	// ErrInvalidTokenizer: tokenizer.json is a BERT WordPiece tokenizer but is
	// malformed (missing [UNK]/[CLS]/[SEP]/[PAD], negative ids, ...).
	ErrInvalidTokenizer = errors.New("invalid tokenizer")
	// ErrBadTruncation: a Truncation other than LongestFirst or OnlySecond.
	ErrBadTruncation = errors.New("bad truncation strategy")
	// ErrBadMaxLength: a max length below 3, which cannot hold the three
	// special tokens of a pair.
	ErrBadMaxLength = errors.New("bad max length")
	// ErrSequenceTooShort: OnlySecond truncation cannot reach max length
	// because text A alone (plus at least one token of text B) does not fit.
	// Hugging Face fails the same way (TruncationError::SequenceTooShort).
	ErrSequenceTooShort = errors.New("sequence to truncate too short to respect the provided max_length")
)

// Truncation is how EncodePair shortens a pair that exceeds its max length.
type Truncation string

const (
	// LongestFirst (the Hugging Face default for pairs) cuts the longer text
	// first; see truncatedLengths for the exact rule.
	LongestFirst Truncation = "longest_first"
	// OnlySecond cuts only text B (the passage) and keeps text A (the query)
	// whole; it fails with ErrSequenceTooShort when A leaves no room for B.
	OnlySecond Truncation = "only_second"
)

// Valid reports whether t is one of the supported strategies. The zero value
// is not valid: callers choose explicitly.
func (t Truncation) Valid() bool { return t == LongestFirst || t == OnlySecond }

// Encoding is an encoded pair, without padding: IDs are the token ids and
// TypeIDs the segment ids (0 for [CLS] a [SEP], 1 for b [SEP]). The attention
// mask is all ones over len(IDs).
type Encoding struct {
	IDs     []int64
	TypeIDs []int64
}

// Len returns the number of tokens.
func (e *Encoding) Len() int { return len(e.IDs) }

// Tokenizer is a BERT WordPiece tokenizer loaded from a tokenizer.json. It is
// immutable after loading and safe for concurrent use by many goroutines.
type Tokenizer struct {
	vocab       map[string]int32 // word-initial pieces (the whole vocabulary)
	cont        map[string]int32 // continuation pieces, keyed without the "##" prefix
	maxVocabLen int              // longest key of vocab, in bytes
	maxContLen  int              // longest key of cont, in bytes
	idToToken   []string
	added       map[string]int32 // added tokens by their declared content

	unkID, clsID, sepID, padID int32
	vocabSize                  int
	maxChars                   int // WordPiece max_input_chars_per_word

	cleanText, chinese, stripAccents, lowercase bool

	asciiDrop  [utf8.RuneSelf]bool  // dropped by clean_text
	asciiMap   [utf8.RuneSelf]byte  // after clean_text and lowercase
	asciiPunct [utf8.RuneSelf]int32 // id of a lone ASCII punctuation char

	raw  *addedSet // added tokens matched in the raw text (normalized: false)
	norm *addedSet // added tokens matched in the normalized text (normalized: true)
}

// LoadTokenizer reads and parses a tokenizer.json file.
func LoadTokenizer(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer: %w", err)
	}
	t, err := ParseTokenizer(data)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer %s: %w", path, err)
	}
	return t, nil
}

// ---------------------------------------------------------------- parsing

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
	return fmt.Errorf("parsing tokenizer.json: %w: "+format, append([]any{ErrUnsupportedTokenizer}, args...)...)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("parsing tokenizer.json: %w: "+format, append([]any{ErrInvalidTokenizer}, args...)...)
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// ParseTokenizer parses the contents of a tokenizer.json. It accepts only a
// WordPiece model with a BertNormalizer, a BertPreTokenizer and a BERT-shaped
// post-processor (TemplateProcessing "[CLS] $A [SEP] $B:1 [SEP]:1",
// BertProcessing or none); anything else fails with ErrUnsupportedTokenizer.
// The file's own truncation and padding presets are ignored.
func ParseTokenizer(data []byte) (*Tokenizer, error) {
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

// ---------------------------------------------------------------- accessors

// PadID returns the id of [PAD].
func (t *Tokenizer) PadID() int64 { return int64(t.padID) }

// CLSID returns the id of [CLS].
func (t *Tokenizer) CLSID() int64 { return int64(t.clsID) }

// SEPID returns the id of [SEP].
func (t *Tokenizer) SEPID() int64 { return int64(t.sepID) }

// UnkID returns the id of the unknown token.
func (t *Tokenizer) UnkID() int64 { return int64(t.unkID) }

// VocabSize returns one more than the largest id the tokenizer can produce
// (vocabulary and added tokens): the size of the model's embedding table.
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// IDToToken returns the token string of id (continuation pieces keep their
// "##" prefix), for debugging.
func (t *Tokenizer) IDToToken(id int64) (string, bool) {
	if id < 0 || id >= int64(len(t.idToToken)) || t.idToToken[id] == "" {
		return "", false
	}
	return t.idToToken[id], true
}

// TokenToID returns the id of a vocabulary entry or added token.
func (t *Tokenizer) TokenToID(tok string) (int64, bool) {
	if id, ok := t.added[tok]; ok {
		return int64(id), true
	}
	id, ok := t.vocab[tok]
	return int64(id), ok
}

// ---------------------------------------------------------------- encoding

// scratch holds the per-call buffers; pooled so that a Tokenizer can be
// shared by goroutines without locks and without allocating per call.
type scratch struct {
	norm []byte    // normalized text of one piece
	run  []byte    // one non-ASCII run after clean_text and CJK padding
	nfd  []byte    // the same after NFD
	iter norm.Iter // NFD iterator; norm.Form.Append would allocate its buffer per call
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(sc *scratch) {
	const keep = 1 << 20 // do not pin buffers grown by a huge input
	if cap(sc.norm) > keep || cap(sc.run) > keep || cap(sc.nfd) > keep {
		return
	}
	scratchPool.Put(sc)
}

// Tokenize returns the ids of one text, without special tokens and without
// truncation.
func (t *Tokenizer) Tokenize(text string) []int64 {
	return t.AppendTokens(nil, text)
}

// AppendTokens appends the ids of text (no special tokens, no truncation) to
// dst and returns the extended slice.
func (t *Tokenizer) AppendTokens(dst []int64, text string) []int64 {
	sc := getScratch()
	dst = t.appendText(dst, text, sc, -1)
	putScratch(sc)
	return dst
}

// EncodePair encodes (a, b) as [CLS] a [SEP] b [SEP], truncated to at most
// maxLength tokens (special tokens included) with trunc. See AppendPair.
func (t *Tokenizer) EncodePair(a, b string, maxLength int, trunc Truncation) (Encoding, error) {
	var e Encoding
	err := t.AppendPair(&e, a, b, maxLength, trunc)
	return e, err
}

// AppendPair encodes (a, b) into dst, reusing dst's slices: the result is
// [CLS] a [SEP] b [SEP] with type ids 0 for "[CLS] a [SEP]" and 1 for
// "b [SEP]", and no padding.
//
// Each text is tokenized on its own (a literal added token such as "[SEP]" in
// the text becomes its id), then the content is truncated to maxLength-3 tokens
// exactly as Hugging Face does (see truncatedLengths). maxLength must be at
// least 3 (ErrBadMaxLength); with exactly 3 the result is [CLS] [SEP] [SEP]
// for either strategy, as in Hugging Face. OnlySecond fails with
// ErrSequenceTooShort when text A leaves no room for at least one token of B.
// On error dst is left empty.
func (t *Tokenizer) AppendPair(dst *Encoding, a, b string, maxLength int, trunc Truncation) error {
	dst.IDs, dst.TypeIDs = dst.IDs[:0], dst.TypeIDs[:0]
	if !trunc.Valid() {
		return fmt.Errorf("encoding pair: %w %q (want %q or %q)", ErrBadTruncation, string(trunc), LongestFirst, OnlySecond)
	}
	if maxLength < 3 {
		return fmt.Errorf("encoding pair: %w %d: a pair needs at least 3 for [CLS] and 2×[SEP]", ErrBadMaxLength, maxLength)
	}
	budget := maxLength - 3
	ids := append(dst.IDs, int64(t.clsID))
	n1, n2 := 0, 0
	if budget > 0 {
		sc := getScratch()
		ids = t.appendText(ids, a, sc, -1)
		na := len(ids) - 1
		// Tokenizing more of b than this cannot change the result (see
		// truncatedLengths): it only matters that b is longer than the cap.
		limit := max(budget, na) + 1
		if trunc == OnlySecond {
			limit = max(budget-na, 0) + 1
		}
		ids = t.appendText(ids, b, sc, limit)
		putScratch(sc)
		nb := len(ids) - 1 - na
		var err error
		if n1, n2, err = truncatedLengths(na, nb, budget, trunc); err != nil {
			dst.IDs = ids[:0]
			return fmt.Errorf("encoding pair (%s, max length %d, text A %d tokens): %w", trunc, maxLength, na, err)
		}
		// Move b's kept tokens behind a's kept tokens and the first [SEP].
		ids = append(ids, 0, 0)
		copy(ids[n1+2:], ids[1+na:1+na+n2])
	} else {
		ids = append(ids, 0, 0)
	}
	sep := int64(t.sepID)
	ids[n1+1] = sep
	ids[n1+2+n2] = sep
	ids = ids[:n1+n2+3]
	dst.IDs = ids

	types := dst.TypeIDs
	if cap(types) < len(ids) {
		types = make([]int64, len(ids), max(len(ids), cap(ids)))
	} else {
		types = types[:len(ids)]
	}
	for i := range n1 + 2 {
		types[i] = 0
	}
	for i := n1 + 2; i < len(types); i++ {
		types[i] = 1
	}
	dst.TypeIDs = types
	return nil
}

// truncatedLengths returns how many content tokens of a (n1) and b (n2) to
// keep within budget = max_length - 3, following Hugging Face
// (tokenizers/src/utils/truncation.rs):
//
//   - fits (n1+n2 <= budget) or budget == 0 (both cut to 0): as is.
//   - only_second: b loses n1+n2-budget tokens; if that leaves b no token
//     at all, ErrSequenceTooShort (Hugging Face raises the same).
//   - longest_first: with s the shorter and l the longer length, keep s
//     whole and cut l to max(s, budget-s); if that still overflows, the
//     shorter keeps budget/2 and the longer budget/2 + budget%2. On a tie a
//     counts as the shorter one.
func truncatedLengths(n1, n2, budget int, trunc Truncation) (int, int, error) {
	if n1+n2 <= budget {
		return n1, n2, nil
	}
	if budget <= 0 {
		return 0, 0, nil
	}
	switch trunc {
	case OnlySecond:
		remove := n1 + n2 - budget
		if n2 > remove {
			return n1, n2 - remove, nil
		}
		return 0, 0, fmt.Errorf("truncating only_second: text B has %d tokens, %d must go: %w", n2, remove, ErrSequenceTooShort)
	case LongestFirst:
		swap := n1 > n2
		s, l := n1, n2
		if swap {
			s, l = n2, n1
		}
		orig := l
		if s > budget {
			l = s
		} else {
			l = max(s, budget-s)
		}
		if s+l > budget {
			s = budget / 2
			l = s + budget%2
		}
		l = min(l, orig)
		if swap {
			return l, s, nil
		}
		return s, l, nil
	}
	return 0, 0, fmt.Errorf("truncating: %w %q", ErrBadTruncation, string(trunc))
}

// appendText tokenizes one text: split out the added tokens matched in the
// raw text, then normalize, pre-tokenize and WordPiece each piece between
// them. With limit >= 0 it may stop early once it has appended at least limit
// ids (the caller only needs to know that the text is that long).
func (t *Tokenizer) appendText(dst []int64, text string, sc *scratch, limit int) []int64 {
	base := len(dst)
	if t.raw == nil {
		dst, _ = t.appendPiece(dst, text, sc, base, limit)
		return dst
	}
	last, pos := 0, 0
	for pos < len(text) {
		start, idx := nextAdded(t.raw, text, pos)
		if idx < 0 {
			break
		}
		tok := &t.raw.toks[idx]
		end := start + len(tok.content)
		if tok.singleWord && !isSingleWord(text, start, end) {
			pos = end
			continue
		}
		if tok.lstrip {
			start = max(last, len(strings.TrimRightFunc(text[:start], isWhiteSpace)))
		}
		if tok.rstrip {
			end = len(text) - len(strings.TrimLeftFunc(text[end:], isWhiteSpace))
		}
		if start > last {
			var stop bool
			if dst, stop = t.appendPiece(dst, text[last:start], sc, base, limit); stop {
				return dst
			}
		}
		dst = append(dst, int64(tok.id))
		last, pos = end, end
		if limit >= 0 && len(dst)-base >= limit {
			return dst
		}
	}
	if last < len(text) {
		dst, _ = t.appendPiece(dst, text[last:], sc, base, limit)
	}
	return dst
}

// appendPiece normalizes a piece of text that holds no raw added token, splits
// out the normalized added tokens, and pre-tokenizes and WordPieces the rest.
func (t *Tokenizer) appendPiece(dst []int64, piece string, sc *scratch, base, limit int) ([]int64, bool) {
	sc.norm = t.normalize(sc.norm[:0], piece, sc)
	buf := sc.norm
	if t.norm == nil {
		return t.appendWords(dst, buf, base, limit)
	}
	last, pos := 0, 0
	for pos < len(buf) {
		start, idx := nextAdded(t.norm, buf, pos)
		if idx < 0 {
			break
		}
		tok := &t.norm.toks[idx]
		end := start + len(tok.content)
		if tok.singleWord && !isSingleWord(buf, start, end) {
			pos = end
			continue
		}
		if tok.lstrip {
			start = max(last, len(trimRightSpace(buf[:start])))
		}
		if tok.rstrip {
			end = len(buf) - len(trimLeftSpace(buf[end:]))
		}
		if start > last {
			var stop bool
			if dst, stop = t.appendWords(dst, buf[last:start], base, limit); stop {
				return dst, true
			}
		}
		dst = append(dst, int64(tok.id))
		last, pos = end, end
		if limit >= 0 && len(dst)-base >= limit {
			return dst, true
		}
	}
	if last < len(buf) {
		return t.appendWords(dst, buf[last:], base, limit)
	}
	return dst, false
}

// ---------------------------------------------------------------- normalizer

// normalize applies the BertNormalizer in Hugging Face's order: clean_text,
// handle_chinese_chars, strip_accents (NFD, drop Mn), lowercase. Invalid UTF-8
// bytes read as U+FFFD. The result is valid UTF-8.
func (t *Tokenizer) normalize(dst []byte, s string, sc *scratch) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if !t.asciiDrop[c] {
				dst = append(dst, t.asciiMap[c])
			}
			i++
			continue
		}
		// A run of non-ASCII bytes. NFD never reorders across the ASCII
		// characters around it (starters that do not decompose), so the run
		// can be normalized on its own.
		j := i + 1
		for j < len(s) && s[j] >= utf8.RuneSelf {
			j++
		}
		dst = t.normalizeRun(dst, s[i:j], sc)
		i = j
	}
	return dst
}

func (t *Tokenizer) normalizeRun(dst []byte, run string, sc *scratch) []byte {
	buf := sc.run[:0]
	for k := 0; k < len(run); {
		r, size := utf8.DecodeRuneInString(run[k:])
		k += size
		f := runeFlags(r)
		if t.cleanText {
			if r == utf8.RuneError || f&flagOther != 0 {
				continue
			}
			if f&flagSpace != 0 {
				buf = append(buf, ' ')
				continue
			}
		}
		if t.chinese && f&flagCJK != 0 {
			buf = append(buf, ' ')
			buf = utf8.AppendRune(buf, r)
			buf = append(buf, ' ')
			continue
		}
		buf = utf8.AppendRune(buf, r)
	}
	sc.run = buf
	if t.stripAccents {
		nfd := sc.nfd[:0]
		sc.iter.Init(norm.NFD, buf)
		for !sc.iter.Done() {
			nfd = append(nfd, sc.iter.Next()...)
		}
		sc.nfd = nfd
		buf = nfd
	}
	if !t.stripAccents && !t.lowercase {
		return append(dst, buf...)
	}
	for k := 0; k < len(buf); {
		c := buf[k]
		if c < utf8.RuneSelf {
			if t.lowercase && 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			k++
			continue
		}
		r, size := utf8.DecodeRune(buf[k:])
		k += size
		if t.stripAccents && runeFlags(r)&flagMn != 0 {
			continue
		}
		if t.lowercase {
			if r == 'İ' { // the one unconditional multi-rune lowercase mapping
				dst = append(dst, "i\u0307"...)
				continue
			}
			r = unicode.ToLower(r)
		}
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

func (t *Tokenizer) initASCII() {
	for c := 0; c < utf8.RuneSelf; c++ {
		b := byte(c)
		if t.cleanText {
			switch {
			case b == '\t' || b == '\n' || b == '\r':
				b = ' '
			case b < 0x20 || b == 0x7f: // Cc: dropped
				t.asciiDrop[c] = true
			}
		}
		if t.lowercase && 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		t.asciiMap[c] = b
	}
}

// ---------------------------------------------------------------- pre-tokenizer + WordPiece

const (
	kindWord = iota
	kindSpace
	kindPunct
)

// asciiKind classifies ASCII for the BertPreTokenizer: White_Space splits,
// ASCII punctuation (which includes symbols such as $ + < = > ^ ` | ~) is
// isolated.
var asciiKind = func() (k [utf8.RuneSelf]uint8) {
	for c := 0; c < utf8.RuneSelf; c++ {
		switch {
		case c == ' ' || ('\t' <= c && c <= '\r'):
			k[c] = kindSpace
		case 0x21 <= c && c <= 0x2f, 0x3a <= c && c <= 0x40, 0x5b <= c && c <= 0x60, 0x7b <= c && c <= 0x7e:
			k[c] = kindPunct
		}
	}
	return k
}()

// appendWords pre-tokenizes normalized text (split on whitespace, isolate each
// punctuation char) and appends each word's WordPiece ids. It reports whether
// it stopped early because limit was reached.
func (t *Tokenizer) appendWords(dst []int64, buf []byte, base, limit int) ([]int64, bool) {
	ws, nchars := -1, 0
	for i := 0; i < len(buf); {
		c := buf[i]
		size, kind := 1, uint8(kindWord)
		if c < utf8.RuneSelf {
			kind = asciiKind[c]
		} else {
			var r rune
			r, size = utf8.DecodeRune(buf[i:])
			if f := runeFlags(r); f&flagSpace != 0 {
				kind = kindSpace
			} else if f&flagPunct != 0 {
				kind = kindPunct
			}
		}
		if kind == kindWord {
			if ws < 0 {
				ws, nchars = i, 0
			}
			nchars++
			i += size
			continue
		}
		if ws >= 0 {
			dst = t.wordPiece(dst, buf[ws:i], nchars)
			ws = -1
			if limit >= 0 && len(dst)-base >= limit {
				return dst, true
			}
		}
		if kind == kindPunct {
			if c < utf8.RuneSelf {
				dst = append(dst, int64(t.asciiPunct[c]))
			} else {
				dst = t.wordPiece(dst, buf[i:i+size], 1)
			}
			if limit >= 0 && len(dst)-base >= limit {
				return dst, true
			}
		}
		i += size
	}
	if ws >= 0 {
		dst = t.wordPiece(dst, buf[ws:], nchars)
	}
	return dst, limit >= 0 && len(dst)-base >= limit
}

// lookupWord is WordPiece of one word as a single id ([UNK] unless the whole
// word is in the vocabulary); used for lone punctuation.
func (t *Tokenizer) lookupWord(w []byte) int32 {
	ids := t.wordPiece(nil, w, utf8.RuneCount(w))
	if len(ids) == 1 {
		return int32(ids[0])
	}
	return t.unkID
}

// wordPiece appends the WordPiece ids of one word of nchars characters:
// greedy longest-match-first, continuation pieces looked up without their
// prefix; a word longer than max_input_chars_per_word, or with any piece not
// in the vocabulary, becomes a single [UNK].
func (t *Tokenizer) wordPiece(dst []int64, w []byte, nchars int) []int64 {
	if nchars > t.maxChars {
		return append(dst, int64(t.unkID))
	}
	if id, ok := t.vocab[string(w)]; ok { // the common case: a whole word
		return append(dst, int64(id))
	}
	n0 := len(dst)
	for start := 0; start < len(w); {
		table, maxLen := t.vocab, t.maxVocabLen
		if start > 0 {
			table, maxLen = t.cont, t.maxContLen
		}
		end := min(len(w), start+maxLen)
		if start == 0 && end == len(w) {
			end-- // the whole word was looked up above
		}
		for end > start && end < len(w) && !utf8.RuneStart(w[end]) {
			end--
		}
		found := false
		for end > start {
			if id, ok := table[string(w[start:end])]; ok {
				dst = append(dst, int64(id))
				start, found = end, true
				break
			}
			end--
			for end > start && !utf8.RuneStart(w[end]) {
				end--
			}
		}
		if !found {
			return append(dst[:n0], int64(t.unkID))
		}
	}
	return dst
}

// ---------------------------------------------------------------- added tokens

type addedToken struct {
	content                    string
	id                         int32
	singleWord, lstrip, rstrip bool
}

// addedSet finds added tokens leftmost-longest, like Hugging Face's
// Aho-Corasick matcher; there are few tokens, so candidates are indexed by
// their first byte.
type addedSet struct {
	toks  []addedToken
	first [256][]int // token indexes by first byte, longest first
	only  int        // the single distinct first byte, or -1
}

func newAddedSet(toks []addedToken) *addedSet {
	if len(toks) == 0 {
		return nil
	}
	s := &addedSet{toks: toks, only: -1}
	seen := map[string]bool{}
	distinct := 0
	for i, a := range toks {
		if seen[a.content] {
			continue // the first declaration wins
		}
		seen[a.content] = true
		b := a.content[0]
		if s.first[b] == nil {
			distinct++
			s.only = int(b)
		}
		s.first[b] = append(s.first[b], i)
	}
	if distinct != 1 {
		s.only = -1
	}
	for b := range s.first {
		c := s.first[b]
		for i := 1; i < len(c); i++ { // insertion sort, longest first, stable
			for j := i; j > 0 && len(toks[c[j]].content) > len(toks[c[j-1]].content); j-- {
				c[j], c[j-1] = c[j-1], c[j]
			}
		}
	}
	return s
}

// nextAdded returns the position and index of the leftmost-longest added
// token of s at or after pos in text, or idx -1.
func nextAdded[T string | []byte](s *addedSet, text T, pos int) (start, idx int) {
	for pos < len(text) {
		if s.only >= 0 {
			k := indexByte(text[pos:], byte(s.only))
			if k < 0 {
				return -1, -1
			}
			pos += k
		}
		for _, i := range s.first[text[pos]] {
			c := s.toks[i].content
			if len(text)-pos >= len(c) && string(text[pos:pos+len(c)]) == c {
				return pos, i
			}
		}
		pos++
	}
	return -1, -1
}

func indexByte[T string | []byte](s T, c byte) int {
	switch v := any(s).(type) {
	case string:
		return strings.IndexByte(v, c)
	case []byte:
		return bytes.IndexByte(v, c)
	}
	return -1
}

// isSingleWord reports whether text[start:end] is not glued to a word
// character (regex \w) on either side, as Hugging Face's single_word requires.
func isSingleWord[T string | []byte](text T, start, end int) bool {
	if start > 0 {
		r, _ := decodeLastRune(text[:start])
		if isWordRune(r) {
			return false
		}
	}
	if end < len(text) {
		r, _ := decodeRune(text[end:])
		if isWordRune(r) {
			return false
		}
	}
	return true
}

func decodeRune[T string | []byte](s T) (rune, int) {
	switch v := any(s).(type) {
	case string:
		return utf8.DecodeRuneInString(v)
	case []byte:
		return utf8.DecodeRune(v)
	}
	return utf8.RuneError, 1
}

func decodeLastRune[T string | []byte](s T) (rune, int) {
	switch v := any(s).(type) {
	case string:
		return utf8.DecodeLastRuneInString(v)
	case []byte:
		return utf8.DecodeLastRune(v)
	}
	return utf8.RuneError, 1
}

func isWordRune(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) ||
		unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Nl, r) || r == 0x200C || r == 0x200D
}

func isWhiteSpace(r rune) bool { return unicode.Is(unicode.White_Space, r) }

func trimRightSpace(b []byte) []byte {
	for len(b) > 0 {
		r, size := utf8.DecodeLastRune(b)
		if !isWhiteSpace(r) {
			break
		}
		b = b[:len(b)-size]
	}
	return b
}

func trimLeftSpace(b []byte) []byte {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if !isWhiteSpace(r) {
			break
		}
		b = b[size:]
	}
	return b
}

// ---------------------------------------------------------------- Unicode classes

const (
	flagOther = 1 << iota // Cc, Cf, Co, Cs or unassigned (Cn): dropped by clean_text
	flagSpace             // White_Space
	flagPunct             // Unicode P*
	flagMn                // Mn: dropped by strip_accents
	flagCJK               // padded with spaces by handle_chinese_chars
)

var (
	bmpFlags     [0x10000]uint8 // flags of U+0000..U+FFFF
	runeFlagOnce sync.Once
)

func initRuneFlags() {
	runeFlagOnce.Do(func() {
		const assigned = 0x80
		set := func(tab *unicode.RangeTable, f uint8) {
			for _, r := range tab.R16 {
				for c := int(r.Lo); c <= int(r.Hi); c += int(r.Stride) {
					bmpFlags[c] |= f
				}
			}
		}
		for _, tab := range []*unicode.RangeTable{unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z} {
			set(tab, assigned)
		}
		for _, tab := range []*unicode.RangeTable{unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs} {
			set(tab, flagOther|assigned)
		}
		set(unicode.White_Space, flagSpace)
		set(unicode.P, flagPunct)
		set(unicode.Mn, flagMn)
		for c := range bmpFlags {
			if bmpFlags[c]&assigned == 0 {
				bmpFlags[c] |= flagOther
			}
			bmpFlags[c] &^= assigned
			if isCJK(rune(c)) {
				bmpFlags[c] |= flagCJK
			}
		}
	})
}

func runeFlags(r rune) uint8 {
	if r < 0x10000 {
		return bmpFlags[r]
	}
	var f uint8
	switch {
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs), !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z):
		f |= flagOther
	case unicode.Is(unicode.P, r):
		f |= flagPunct
	case unicode.Is(unicode.Mn, r):
		f |= flagMn
	}
	if isCJK(r) {
		f |= flagCJK
	}
	return f
}

// isCJK reports the CJK ideograph ranges of the Rust BertNormalizer
// (normalizers/bert.rs), including its 0x2B920 lower bound for the range that
// Google's BERT starts at 0x2B820.
func isCJK(r rune) bool {
	switch {
	case 0x4E00 <= r && r <= 0x9FFF,
		0x3400 <= r && r <= 0x4DBF,
		0x20000 <= r && r <= 0x2A6DF,
		0x2A700 <= r && r <= 0x2B73F,
		0x2B740 <= r && r <= 0x2B81F,
		0x2B920 <= r && r <= 0x2CEAF,
		0xF900 <= r && r <= 0xFAFF,
		0x2F800 <= r && r <= 0x2FA1F:
		return true
	}
	return false
}
