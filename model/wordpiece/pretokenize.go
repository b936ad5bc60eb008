package wordpiece

import "unicode/utf8"

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
