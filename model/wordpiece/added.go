package wordpiece

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"
)

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
