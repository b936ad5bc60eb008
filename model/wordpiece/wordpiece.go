package wordpiece

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
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

// Pair is one cross-encoder input: text A (the query side) and text B (the
// passage), encoded by EncodePair as [CLS] A [SEP] B [SEP]. It lives here,
// the lowest package that reads it, so that inject renders and model
// tokenizes one type.
type Pair struct {
	A string `json:"text_a"`
	B string `json:"text_b"`
}

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

// Load reads and parses a tokenizer.json file (see Parse).
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer %s: %w", path, err)
	}
	return t, nil
}

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
