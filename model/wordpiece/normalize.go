package wordpiece

import (
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

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

// normalizeRun is normalize for a run of non-ASCII bytes, through sc's
// buffers so that it allocates nothing once they have grown.
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

// initASCII fills the ASCII tables of the normalizer, which handles ASCII
// byte by byte without decoding runes.
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

// The Unicode classes the normalizer and the pre-tokenizer test, one bit each;
// precomputed for the BMP by initRuneFlags.
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
