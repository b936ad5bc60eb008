package wordpiece

import (
	"testing"
	"unicode"
)

// TestRuneFlags checks the precomputed Unicode classes against the unicode
// package for every code point.
func TestRuneFlags(t *testing.T) {
	initRuneFlags()
	for r := rune(0); r <= unicode.MaxRune; r++ {
		var want uint8
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs) || !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z) {
			want |= flagOther
		}
		if unicode.Is(unicode.White_Space, r) {
			want |= flagSpace
		}
		if unicode.IsPunct(r) {
			want |= flagPunct
		}
		if unicode.Is(unicode.Mn, r) {
			want |= flagMn
		}
		if isCJK(r) {
			want |= flagCJK
		}
		if got := runeFlags(r); got != want {
			t.Fatalf("runeFlags(%U) = %05b, want %05b", r, got, want)
		}
	}
}
