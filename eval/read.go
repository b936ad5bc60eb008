package eval

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Set is a set of ids (query ids or passage ids).
type Set map[string]struct{}

// Add adds id.
func (s Set) Add(id string) { s[id] = struct{}{} }

// Has reports whether id is in s; a nil Set holds everything.
func (s Set) Has(id string) bool {
	if s == nil {
		return true
	}
	_, ok := s[id]
	return ok
}

// Entry is one retrieved passage of a run.
type Entry struct {
	Doc   string
	Score float64
}

// Run is a ranked run: for each query, its entries in trec_eval order (score
// descending, ties broken by docno descending; the file's rank column is
// ignored, as trec_eval ignores it).
type Run struct {
	Order   []string           // query ids in order of first appearance
	Entries map[string][]Entry // per query, trec_eval order
	Lines   int                // lines read
}

// Depth returns the query's entries cut to depth (all when depth <= 0).
func (r *Run) Depth(qid string, depth int) []Entry {
	e := r.Entries[qid]
	if depth > 0 && len(e) > depth {
		e = e[:depth]
	}
	return e
}

// Qrels holds relevance judgments: query id → docno → relevance level.
type Qrels map[string]map[string]int

// maxLine bounds one line of any input file (a passage is at most 64 KiB on
// the wire; lines longer than this are certainly not a TSV or TREC file).
const maxLine = 16 << 20

func newScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	return sc
}

// Open opens path for reading, decompressing it when its name ends in .gz.
func Open(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, ".gz") {
		return f, nil
	}
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return gzipFile{zr, f}, nil
}

type gzipFile struct {
	*gzip.Reader
	f *os.File
}

func (g gzipFile) Close() error {
	err := g.Reader.Close()
	if cerr := g.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// TSVStats describes one pass over a TSV file.
type TSVStats struct {
	Lines int // non-empty lines scanned
	Kept  int // lines whose id was wanted
}

// ReadTSV streams "id<TAB>text" lines (MS MARCO's queries.*.tsv and
// collection.tsv) and keeps the text of the ids in want only (everything
// when want is nil). Lines of ids not wanted are never copied, so a
// collection far larger than memory can be read. The text is everything
// after the first tab, with invalid UTF-8 replaced by U+FFFD. An id wanted
// twice is an error.
func ReadTSV(r io.Reader, want Set) (map[string]string, TSVStats, error) {
	var st TSVStats
	n := 0
	if want != nil {
		n = len(want)
	}
	out := make(map[string]string, n)
	sc := newScanner(r)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSuffix(sc.Bytes(), []byte{'\r'})
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		st.Lines++
		tab := bytes.IndexByte(b, '\t')
		if tab < 0 {
			return nil, st, fmt.Errorf("line %d: want id<TAB>text, found no tab", line)
		}
		id := b[:tab]
		if want != nil {
			if _, ok := want[string(id)]; !ok { // no allocation for ids not wanted
				continue
			}
		}
		key := string(id)
		if _, dup := out[key]; dup {
			return nil, st, fmt.Errorf("line %d: id %q appears twice", line, key)
		}
		out[key] = strings.ToValidUTF8(string(b[tab+1:]), "\uFFFD")
		st.Kept++
	}
	if err := sc.Err(); err != nil {
		return nil, st, fmt.Errorf("line %d: %w", line+1, err)
	}
	return out, st, nil
}

// ReadRun reads a TREC run ("qid Q0 docno rank score tag", whitespace
// separated) keeping the queries in want (all when want is nil), sorts each
// query's entries in trec_eval order and cuts them to depth (no cut when
// depth <= 0). Like trec_eval it rejects a docno retrieved twice for one
// query; it also rejects scores that are not finite numbers.
func ReadRun(r io.Reader, want Set, depth int) (*Run, error) {
	run := &Run{Entries: map[string][]Entry{}}
	sc := newScanner(r)
	qids := map[string]string{} // interned query ids
	for sc.Scan() {
		run.Lines++
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 {
			continue
		}
		if len(f) < 6 {
			return nil, fmt.Errorf("line %d: want 6 fields \"qid Q0 docno rank score tag\" (a TREC run), got %d; MS MARCO's 3-column \"qid pid rank\" runs carry no scores: write the run in TREC format (Pyserini: --output-format trec)", run.Lines, len(f))
		}
		qid, ok := qids[string(f[0])]
		if !ok {
			if !want.Has(string(f[0])) {
				continue
			}
			qid = string(f[0])
			qids[qid] = qid
			run.Order = append(run.Order, qid)
		}
		score, err := strconv.ParseFloat(string(f[4]), 64)
		if err != nil || math.IsNaN(score) || math.IsInf(score, 0) {
			return nil, fmt.Errorf("line %d: score %q is not a finite number", run.Lines, f[4])
		}
		run.Entries[qid] = append(run.Entries[qid], Entry{Doc: string(f[2]), Score: score})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", run.Lines+1, err)
	}
	seen := map[string]struct{}{}
	for _, qid := range run.Order {
		e := run.Entries[qid]
		clear(seen)
		for _, x := range e {
			if _, dup := seen[x.Doc]; dup {
				return nil, fmt.Errorf("query %s: docno %s retrieved twice (trec_eval rejects such runs too)", qid, x.Doc)
			}
			seen[x.Doc] = struct{}{}
		}
		SortTrec(e)
		if depth > 0 && len(e) > depth {
			e = slices.Clip(e[:depth])
		}
		run.Entries[qid] = e
	}
	return run, nil
}

// SortTrec sorts entries as trec_eval ranks them: by score descending, ties
// broken by docno descending (byte-wise, as strcmp compares).
func SortTrec(e []Entry) {
	slices.SortFunc(e, compareTrec)
}

func compareTrec(a, b Entry) int {
	switch {
	case a.Score > b.Score:
		return -1
	case a.Score < b.Score:
		return 1
	}
	return strings.Compare(b.Doc, a.Doc)
}

// ReadQrels reads qrels ("qid iter docno rel", whitespace separated). Like
// trec_eval it rejects a docno judged twice for one query.
func ReadQrels(r io.Reader) (Qrels, error) {
	q := Qrels{}
	sc := newScanner(r)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("line %d: want 4 fields \"qid iter docno rel\", got %d", line, len(f))
		}
		rel, err := strconv.Atoi(f[3])
		if err != nil {
			return nil, fmt.Errorf("line %d: relevance %q is not an integer", line, f[3])
		}
		m := q[f[0]]
		if m == nil {
			m = map[string]int{}
			q[f[0]] = m
		}
		if _, dup := m[f[2]]; dup {
			return nil, fmt.Errorf("line %d: query %s judges docno %s twice", line, f[0], f[2])
		}
		m[f[2]] = rel
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	return q, nil
}
