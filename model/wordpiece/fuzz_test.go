package wordpiece

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// refTruncate is the reference truncation of tools/tokref/ref.mjs (the
// generator of the parity data), with the Rust crate's max_length == 3 case.
func refTruncate(n1, n2, budget int, onlySecond bool) (int, int, bool) {
	if n1+n2 <= budget {
		return n1, n2, true
	}
	if budget == 0 {
		return 0, 0, true
	}
	if onlySecond {
		keep := n2 - (n1 + n2 - budget)
		if keep <= 0 {
			return 0, 0, false
		}
		return n1, keep, true
	}
	a, b, swap := n1, n2, false
	if a > b {
		a, b, swap = b, a, true
	}
	if a > budget {
		b = a
	} else {
		b = max(a, budget-a)
	}
	if a+b > budget {
		a = budget / 2
		b = a + budget%2
	}
	if swap {
		return b, a, true
	}
	return a, b, true
}

// FuzzTokenizePair feeds arbitrary bytes (invalid UTF-8 included) and max
// lengths: nothing may panic, and every result must be the reference pair
// assembly of the two texts tokenized on their own.
func FuzzTokenizePair(f *testing.F) {
	tok := bertTokenizer(f)
	for _, c := range loadParityCases(f)[:40] {
		f.Add(c.A, c.B, c.MaxLength, c.Truncation == string(OnlySecond))
	}
	f.Add("", "", 3, false)
	f.Add("42 [SEP] what", "[SEP][SEP]", 4, true)
	f.Add("\xff\xfe\x00", "é\u0301\u037e北京", 5, false)
	f.Add(strings.Repeat("x", 120), "a\u200bb", 2, false)
	f.Add("[SE", "P]", -1, true)
	f.Fuzz(func(t *testing.T, a, b string, maxLength int, onlySecond bool) {
		trunc := LongestFirst
		if onlySecond {
			trunc = OnlySecond
		}
		ta, tb := tok.Tokenize(a), tok.Tokenize(b)
		for _, id := range append(slices.Clone(ta), tb...) {
			if id < 0 || id >= int64(tok.VocabSize()) {
				t.Fatalf("id %d out of range", id)
			}
		}
		if again := tok.Tokenize(a); !slices.Equal(again, ta) {
			t.Fatalf("Tokenize(%q) not deterministic", a)
		}
		if got := tok.Tokenize(strings.ToValidUTF8(a, "\uFFFD")); !slices.Equal(got, ta) {
			t.Fatalf("invalid UTF-8 must read as U+FFFD: %q", a)
		}

		enc, err := tok.EncodePair(a, b, maxLength, trunc)
		if maxLength < 3 {
			if !errors.Is(err, ErrBadMaxLength) {
				t.Fatalf("max length %d: err = %v, want ErrBadMaxLength", maxLength, err)
			}
			return
		}
		n1, n2, ok := refTruncate(len(ta), len(tb), maxLength-3, onlySecond)
		if !ok {
			if !errors.Is(err, ErrSequenceTooShort) {
				t.Fatalf("want ErrSequenceTooShort, got %v (a %d tokens, b %d, max %d)", err, len(ta), len(tb), maxLength)
			}
			return
		}
		if err != nil {
			t.Fatalf("EncodePair(%q, %q, %d, %s): %v", a, b, maxLength, trunc, err)
		}
		ids, types := enc.IDs, enc.TypeIDs
		if len(ids) > maxLength || len(ids) < 3 || len(types) != len(ids) {
			t.Fatalf("len %d (types %d), max length %d", len(ids), len(types), maxLength)
		}
		if ids[0] != tok.CLSID() || ids[len(ids)-1] != tok.SEPID() {
			t.Fatalf("ids %v do not start with [CLS] and end with [SEP]", ids)
		}
		want := []int64{tok.CLSID()}
		want = append(want, ta[:n1]...)
		want = append(want, tok.SEPID())
		want = append(want, tb[:n2]...)
		want = append(want, tok.SEPID())
		if !slices.Equal(ids, want) {
			t.Fatalf("EncodePair(%q, %q, %d, %s)\n got %v\nwant %v", a, b, maxLength, trunc, ids, want)
		}
		for i, ty := range types {
			if wantTy := int64(min(1, max(0, i-n1-1))); ty != wantTy {
				t.Fatalf("type ids %v: want 0 × %d then 1s", types, n1+2)
			}
		}
	})
}
