package wordpiece

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rerank/rerank/internal/testenv"
)

var (
	bertOnce sync.Once
	bertTok  *Tokenizer
	bertErr  error
)

// bertTokenizer loads the BERT-uncased tokenizer.json once per test binary.
func bertTokenizer(tb testing.TB) *Tokenizer {
	tb.Helper()
	path := testenv.TokenizerJSON(tb)
	bertOnce.Do(func() { bertTok, bertErr = Load(path) })
	if bertErr != nil {
		tb.Fatalf("Load: %v", bertErr)
	}
	return bertTok
}

type parityCase struct {
	A          string   `json:"a"`
	B          string   `json:"b"`
	MaxLength  int      `json:"max_length"`
	Truncation string   `json:"truncation"`
	IDs        []int64  `json:"ids"`
	TypeIDs    []int64  `json:"type_ids"`
	Tokens     []string `json:"tokens"`
}

func loadParityCases(tb testing.TB) []parityCase {
	tb.Helper()
	path := filepath.Join("testdata", "bert-base-uncased-pairs.jsonl")
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("opening parity cases: %v", err)
	}
	defer f.Close()
	var cases []parityCase
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var c parityCase
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			tb.Fatalf("decoding parity case %d: %v", len(cases)+1, err)
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("reading parity cases: %v", err)
	}
	return cases
}

func (t *Tokenizer) tokenStrings(ids []int64) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		s, ok := t.IDToToken(id)
		if !ok {
			s = fmt.Sprintf("<%d?>", id)
		}
		out[i] = s
	}
	return out
}

// TestTokenizerParity checks every reference case (tokenizers.js with the Rust
// crate's truncation rule) for identical ids and type ids.
func TestTokenizerParity(t *testing.T) {
	tok := bertTokenizer(t)
	cases := loadParityCases(t)
	if len(cases) != 400 {
		t.Errorf("got %d parity cases, want 400", len(cases))
	}
	var enc Encoding
	pass := 0
	for i, c := range cases {
		err := tok.AppendPair(&enc, c.A, c.B, c.MaxLength, Truncation(c.Truncation))
		if err != nil {
			t.Errorf("case %d (%q | %q, %d, %s): %v", i+1, c.A, c.B, c.MaxLength, c.Truncation, err)
			continue
		}
		if slices.Equal(enc.IDs, c.IDs) && slices.Equal(enc.TypeIDs, c.TypeIDs) {
			pass++
			continue
		}
		got := tok.tokenStrings(enc.IDs)
		first := 0
		for first < min(len(got), len(c.Tokens)) && enc.IDs[first] == c.IDs[first] {
			first++
		}
		t.Errorf("case %d mismatch (max_length %d, %s)\n a: %q\n b: %q\n first difference at token %d\n want %d tokens %q\n  got %d tokens %q\n want type ids %v\n  got type ids %v",
			i+1, c.MaxLength, c.Truncation, c.A, c.B, first, len(c.Tokens), c.Tokens, len(got), got, c.TypeIDs, enc.TypeIDs)
	}
	t.Logf("parity: %d/%d cases identical", pass, len(cases))
}

func TestLoadFacts(t *testing.T) {
	tok := bertTokenizer(t)
	if got := tok.VocabSize(); got != 30522 {
		t.Errorf("VocabSize = %d, want 30522", got)
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{{"PadID", tok.PadID(), 0}, {"UnkID", tok.UnkID(), 100}, {"CLSID", tok.CLSID(), 101}, {"SEPID", tok.SEPID(), 102}} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if s, ok := tok.IDToToken(2003); !ok || s != "is" {
		t.Errorf("IDToToken(2003) = %q, %v; want \"is\"", s, ok)
	}
	if id, ok := tok.TokenToID("[SEP]"); !ok || id != 102 {
		t.Errorf("TokenToID([SEP]) = %d, %v", id, ok)
	}
	if _, ok := tok.IDToToken(-1); ok {
		t.Errorf("IDToToken(-1) ok")
	}
}

// tokensOf maps token strings to ids, failing on unknown strings.
func tokensOf(t *testing.T, tok *Tokenizer, toks ...string) []int64 {
	t.Helper()
	ids := make([]int64, len(toks))
	for i, s := range toks {
		id, ok := tok.TokenToID(s)
		if !ok {
			t.Fatalf("token %q not in the vocabulary", s)
		}
		ids[i] = id
	}
	return ids
}

func TestTokenize(t *testing.T) {
	tok := bertTokenizer(t)
	long := strings.Repeat("a", 101)
	cases := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"only spaces", " \t\r\n ", nil},
		{"simple", "Hello, World!", []string{"hello", ",", "world", "!"}},
		{"literal sep", "42 [SEP] what is x", []string{"42", "[SEP]", "what", "is", "x"}},
		{"literal sep glued", "a[SEP]b", []string{"a", "[SEP]", "b"}},
		{"literal specials", "[UNK] [MASK] [PAD] [CLS]", []string{"[UNK]", "[MASK]", "[PAD]", "[CLS]"}},
		{"lowercase sep is text", "[sep]", []string{"[", "sep", "]"}},
		{"accents", "Café résumé naïve", []string{"cafe", "resume", "naive"}},
		{"accent uppercase", "ÉCOLE", []string{"ecole"}},
		{"eszett kept", "Straße", []string{"st", "##raße"}},
		{"cjk", "北京is中国", []string{"北", "京", "is", "中", "国"}},
		{"katakana not split", "タワー", []string{"タ", "##ワ", "##ー"}},
		{"punctuation", "don't (x) a.b", []string{"don", "'", "t", "(", "x", ")", "a", ".", "b"}},
		{"ascii symbols are punctuation", "a+b=c$", []string{"a", "+", "b", "=", "c", "$"}},
		{"unicode punctuation", "«x»—y", []string{"«", "x", "»", "—", "y"}},
		{"greek question mark decomposes to ;", "a\u037eb", []string{"a", ";", "b"}},
		{"control chars dropped", "ab\x00c\x07d\u200be\ufffdf", []string{"abc", "##de", "##f"}},
		{"whitespace kinds", "a\tb\nc\rd\u00a0e\u3000f", []string{"a", "b", "c", "d", "e", "f"}},
		{"overlong word", long + " ok", []string{"[UNK]", "ok"}},
		{"100 chars ok", strings.Repeat("a", 100)[:0] + "x", []string{"x"}},
		{"unknown char word", "🙂🚀 ok", []string{"[UNK]", "ok"}},
		{"subwords", "unaffable", []string{"una", "##ffa", "##ble"}},
		{"digits", "2,102,650", []string{"2", ",", "102", ",", "650"}},
		{"invalid utf8 dropped", "ab\xffcd", []string{"abc", "##d"}},
		{"fullwidth", "ＦＵＬＬ", nil}, // filled below from the reference behaviour: lowercased fullwidth letters
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := tok.Tokenize(c.in)
			if c.name == "fullwidth" {
				// NFD does not fold width; lowercase maps Ｆ to ｆ.
				if strs := tok.tokenStrings(got); len(strs) == 0 || !strings.HasPrefix(strs[0], "ｆ") && strs[0] != "[UNK]" {
					t.Errorf("Tokenize(%q) = %q", c.in, strs)
				}
				return
			}
			want := tokensOf(t, tok, c.want...)
			if !slices.Equal(got, want) {
				t.Errorf("Tokenize(%q) = %q, want %q", c.in, tok.tokenStrings(got), c.want)
			}
		})
	}
}

// TestTokenizeSameAs checks inputs that must tokenize exactly like a cleaner
// spelling of themselves.
func TestTokenizeSameAs(t *testing.T) {
	tok := bertTokenizer(t)
	for _, c := range [][2]string{
		{"co\u00adop", "coop"},                             // soft hyphen (Cf) dropped
		{"zero\u200bwidth\u200djoiner", "zerowidthjoiner"}, // ZWSP, ZWJ dropped
		{"a\x00b\x1bc\x7fd", "abcd"},                       // C0 controls and DEL dropped
		{"a\u0085b", "ab"},                                 // NEL is Cc: dropped, not a space
		{"a\vb\fc", "abc"},                                 // VT and FF are Cc: dropped
		{"a\u2028b\u2029c\u202fd", "a b c d"},              // Unicode separators are spaces
		{"Ｆ", "ｆ"},                                         // no width folding: NFD, not NFKD
		{"ÀÉÎÕÜÇÑ", "aeioucn"},                             // strip accents after NFD, lowercase
		{"e\u0301", "e"},                                   // combining accent alone
		{"İstanbul", "istanbul"},                           // dotted capital I
		{"\ufb01", "\ufb01"},                               // ligature kept (NFD does not decompose it)
		{"ＡＢＣ", "ａｂｃ"},
		{"デス", "テス"},                    // dakuten (Mn after NFD) stripped
		{"\xff\xfe", ""},                // invalid UTF-8 reads as U+FFFD: dropped
		{"\U0001F970", "[UNK]"},         // emoji: not in vocabulary
		{"\U000E0001x", "x"},            // language tag (Cf) dropped
		{"\U0010FFFDx", "x"},            // private use (Co) dropped
		{"\U000E0080x", "x"},            // unassigned (Cn) dropped
		{"\U00020000x", "\U00020000 x"}, // supplementary CJK ideographs are split
		{"\uF900x", "\u8C48 x"},         // CJK compatibility ideograph: split, then NFD
	} {
		got, want := tok.Tokenize(c[0]), tok.Tokenize(c[1])
		if !slices.Equal(got, want) {
			t.Errorf("Tokenize(%+q) = %q, want %q like Tokenize(%+q)", c[0], tok.tokenStrings(got), tok.tokenStrings(want), c[1])
		}
	}
}

func TestTokenizeMaxChars(t *testing.T) {
	tok := bertTokenizer(t)
	// 100 characters is allowed (then WordPiece splits it), 101 is [UNK].
	w100 := strings.Repeat("ab", 50)
	if got := tok.Tokenize(w100); len(got) < 2 || slices.Contains(got, tok.UnkID()) {
		t.Errorf("100-char word: %q", tok.tokenStrings(got))
	}
	if got := tok.Tokenize(w100 + "a"); !slices.Equal(got, []int64{tok.UnkID()}) {
		t.Errorf("101-char word: %q, want [UNK]", tok.tokenStrings(got))
	}
	// Characters, not bytes: 100 × "é" (200 bytes, 100 chars after NFD+strip) is fine.
	if got := tok.Tokenize(strings.Repeat("é", 100)); slices.Contains(got, tok.UnkID()) {
		t.Errorf("100 × é: %q", tok.tokenStrings(got))
	}
}

func TestAppendTokensReuse(t *testing.T) {
	tok := bertTokenizer(t)
	buf := make([]int64, 0, 64)
	buf = tok.AppendTokens(buf, "hello")
	buf = tok.AppendTokens(buf, "world")
	if want := tokensOf(t, tok, "hello", "world"); !slices.Equal(buf, want) {
		t.Errorf("AppendTokens = %v, want %v", buf, want)
	}
}

func TestEncodePair(t *testing.T) {
	tok := bertTokenizer(t)
	words := func(n int, w string) string { return strings.TrimSpace(strings.Repeat(w+" ", n)) }
	type want struct {
		na, nb int // kept content tokens of a and b
	}
	cases := []struct {
		name      string
		a, b      string
		maxLength int
		trunc     Truncation
		want      want
	}{
		{"fits", "what is x", "x is y", 512, LongestFirst, want{3, 3}},
		{"both empty", "", "", 512, LongestFirst, want{0, 0}},
		{"empty a", "", "x is y", 512, LongestFirst, want{0, 3}},
		{"empty b", "what is x", "", 512, OnlySecond, want{3, 0}},
		{"exact fit", words(5, "dog"), words(5, "cat"), 13, LongestFirst, want{5, 5}},
		{"longest_first b longer", words(3, "dog"), words(50, "cat"), 16, LongestFirst, want{3, 10}},
		{"longest_first a longer", words(50, "dog"), words(3, "cat"), 16, LongestFirst, want{10, 3}},
		{"longest_first shorter whole, longer gets budget-s", words(5, "dog"), words(50, "cat"), 16, LongestFirst, want{5, 8}},
		{"longest_first shorter over half the budget", words(8, "dog"), words(50, "cat"), 16, LongestFirst, want{6, 7}},
		{"longest_first both long, odd budget", words(40, "dog"), words(50, "cat"), 16, LongestFirst, want{6, 7}},
		{"longest_first both long, a longer, odd budget", words(50, "dog"), words(40, "cat"), 16, LongestFirst, want{7, 6}},
		{"longest_first tie, odd budget", words(40, "dog"), words(40, "cat"), 16, LongestFirst, want{6, 7}},
		{"longest_first both long, even budget", words(40, "dog"), words(50, "cat"), 15, LongestFirst, want{6, 6}},
		{"longest_first a longer than budget, b short", words(100, "dog"), words(2, "cat"), 13, LongestFirst, want{8, 2}},
		{"only_second", words(3, "dog"), words(50, "cat"), 16, OnlySecond, want{3, 10}},
		{"only_second leaves one", words(12, "dog"), words(50, "cat"), 16, OnlySecond, want{12, 1}},
		{"max_length 3", words(3, "dog"), words(3, "cat"), 3, LongestFirst, want{0, 0}},
		{"max_length 3 only_second", words(3, "dog"), words(3, "cat"), 3, OnlySecond, want{0, 0}},
		{"max_length 4", words(3, "dog"), words(3, "cat"), 4, LongestFirst, want{0, 1}},
		{"max_length 4 a longer", words(4, "dog"), words(3, "cat"), 4, LongestFirst, want{1, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc, err := tok.EncodePair(c.a, c.b, c.maxLength, c.trunc)
			if err != nil {
				t.Fatalf("EncodePair: %v", err)
			}
			ta, tb := tok.Tokenize(c.a), tok.Tokenize(c.b)
			wantIDs := []int64{tok.CLSID()}
			wantIDs = append(wantIDs, ta[:c.want.na]...)
			wantIDs = append(wantIDs, tok.SEPID())
			wantIDs = append(wantIDs, tb[:c.want.nb]...)
			wantIDs = append(wantIDs, tok.SEPID())
			if !slices.Equal(enc.IDs, wantIDs) {
				t.Errorf("ids = %q\nwant %q", tok.tokenStrings(enc.IDs), tok.tokenStrings(wantIDs))
			}
			wantTypes := make([]int64, len(wantIDs))
			for i := c.want.na + 2; i < len(wantTypes); i++ {
				wantTypes[i] = 1
			}
			if !slices.Equal(enc.TypeIDs, wantTypes) {
				t.Errorf("type ids = %v, want %v", enc.TypeIDs, wantTypes)
			}
			if len(enc.IDs) > c.maxLength {
				t.Errorf("len %d > max length %d", len(enc.IDs), c.maxLength)
			}
		})
	}
}

func TestEncodePairLiteralSEP(t *testing.T) {
	tok := bertTokenizer(t)
	enc, err := tok.EncodePair("42 [SEP] what is x", "x is a letter.", 512, LongestFirst)
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{101, 4413, 102, 2054, 2003, 1060, 102, 1060, 2003, 1037, 3661, 1012, 102}
	if !slices.Equal(enc.IDs, want) {
		t.Errorf("ids = %v (%q), want %v", enc.IDs, tok.tokenStrings(enc.IDs), want)
	}
	wantTypes := []int64{0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1}
	if !slices.Equal(enc.TypeIDs, wantTypes) {
		t.Errorf("type ids = %v, want %v", enc.TypeIDs, wantTypes)
	}
}

func TestEncodePairErrors(t *testing.T) {
	tok := bertTokenizer(t)
	cases := []struct {
		name      string
		a, b      string
		maxLength int
		trunc     Truncation
		want      error
	}{
		{"bad truncation", "a", "b", 512, "only_first", ErrBadTruncation},
		{"empty truncation", "a", "b", 512, "", ErrBadTruncation},
		{"max_length 2", "a", "b", 2, LongestFirst, ErrBadMaxLength},
		{"max_length 0", "a", "b", 0, LongestFirst, ErrBadMaxLength},
		{"max_length negative", "a", "b", -5, OnlySecond, ErrBadMaxLength},
		{"only_second a fills budget", "dog dog dog dog dog", "cat cat", 8, OnlySecond, ErrSequenceTooShort},
		{"only_second a over budget", "dog dog dog dog dog dog", "cat", 8, OnlySecond, ErrSequenceTooShort},
		{"only_second a over budget, empty b", "dog dog dog dog dog dog", "", 8, OnlySecond, ErrSequenceTooShort},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc := Encoding{IDs: []int64{1, 2, 3}, TypeIDs: []int64{0, 0, 0}}
			err := tok.AppendPair(&enc, c.a, c.b, c.maxLength, c.trunc)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if len(enc.IDs) != 0 || len(enc.TypeIDs) != 0 {
				t.Errorf("dst not reset on error: %v %v", enc.IDs, enc.TypeIDs)
			}
		})
	}
	// a fitting exactly with an empty b is fine under only_second.
	if _, err := tok.EncodePair("dog dog dog dog dog", "", 8, OnlySecond); err != nil {
		t.Errorf("only_second, a fills budget, empty b: %v", err)
	}
}

func TestTruncationValid(t *testing.T) {
	for tr, want := range map[Truncation]bool{LongestFirst: true, OnlySecond: true, "": false, "only_first": false, "LongestFirst": false} {
		if got := tr.Valid(); got != want {
			t.Errorf("Truncation(%q).Valid() = %v", tr, got)
		}
	}
}

func TestAppendPairReusesBuffers(t *testing.T) {
	tok := bertTokenizer(t)
	var enc Encoding
	if err := tok.AppendPair(&enc, "what is the capital of france", strings.Repeat("paris is the capital of france. ", 20), 512, LongestFirst); err != nil {
		t.Fatal(err)
	}
	ids, types := &enc.IDs[:1][0], &enc.TypeIDs[:1][0]
	allocs := testing.AllocsPerRun(100, func() {
		if err := tok.AppendPair(&enc, "how big is paris", "paris is the capital and most populous city of france.", 512, LongestFirst); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 && !raceEnabled() { // the race detector makes sync.Pool drop items
		t.Errorf("AppendPair with a warm Encoding: %v allocs/op, want 0", allocs)
	}
	if &enc.IDs[0] != ids || &enc.TypeIDs[0] != types {
		t.Errorf("AppendPair did not reuse the Encoding's arrays")
	}
}

func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}

func TestConcurrentUse(t *testing.T) {
	tok := bertTokenizer(t)
	cases := loadParityCases(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var enc Encoding
			for i := g; i < len(cases); i += 3 {
				c := cases[i]
				if err := tok.AppendPair(&enc, c.A, c.B, c.MaxLength, Truncation(c.Truncation)); err != nil {
					errs <- err
					return
				}
				if !slices.Equal(enc.IDs, c.IDs) || !slices.Equal(enc.TypeIDs, c.TypeIDs) {
					errs <- fmt.Errorf("goroutine %d: case %d differs", g, i+1)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
