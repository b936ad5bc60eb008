package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Files names an evaluation's inputs. DPRRun is optional.
type Files struct {
	Queries    string // qid<TAB>text
	Collection string // pid<TAB>text
	Run        string // TREC run of the first stage; its scores become bm25
	DPRRun     string // TREC run whose scores become dpr
	Qrels      string // qid 0 pid rel
}

// LoadStats describes what Load read and kept.
type LoadStats struct {
	RunLines, RunQueries int
	Judged               int // queries in the qrels
	Selected             int // queries to re-rank
	Candidates           int // query-passage pairs to re-rank
	Passages             int // distinct passages those pairs reference
	Queries              TSVStats
	Collection           TSVStats // Lines scanned, Kept = passages held in memory
	DPRMissing           int      // candidates the DPR run does not score
}

// Load reads an evaluation's inputs in the order that keeps memory small:
// qrels, then the run (cut to depth), then only the selected queries' texts
// from the queries file, then one streaming pass over the collection that
// keeps the passages those queries retrieve and nothing else. status, when
// set, receives short progress messages. Files ending in .gz are
// decompressed on the fly.
func Load(ctx context.Context, f Files, opts Options, status func(string)) (*Input, *LoadStats, error) {
	opts = opts.withDefaults()
	if status == nil {
		status = func(string) {}
	}
	st := &LoadStats{}
	in := &Input{}
	var err error

	status("reading qrels " + filepath.Base(f.Qrels))
	err = readFile(ctx, f.Qrels, nil, func(r io.Reader) error {
		in.Qrels, err = ReadQrels(r)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	st.Judged = len(in.Qrels)

	err = readFile(ctx, f.Run, status, func(r io.Reader) error {
		in.Run, err = ReadRun(r, nil, opts.Depth)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	st.RunLines, st.RunQueries = in.Run.Lines, len(in.Run.Order)

	selected := SelectQueries(in.Run, in.Qrels, opts.RerankUnjudged, opts.MaxQueries)
	if len(selected) == 0 {
		return nil, nil, fmt.Errorf("no query of the run (%d queries) has qrels (%d queries): are they the same query set?", len(in.Run.Order), len(in.Qrels))
	}
	st.Selected = len(selected)
	wantQ := Set{}
	wantP := Set{}
	for _, qid := range selected {
		wantQ.Add(qid)
		for _, e := range in.Run.Depth(qid, opts.Depth) {
			wantP.Add(e.Doc)
			st.Candidates++
		}
	}
	st.Passages = len(wantP)

	if f.DPRRun != "" {
		err = readFile(ctx, f.DPRRun, status, func(r io.Reader) error {
			in.DPR, err = ReadRun(r, wantQ, 0) // every score: the candidates come from the other run
			return err
		})
		if err != nil {
			return nil, nil, err
		}
		for _, qid := range selected {
			scored := Set{}
			for _, e := range in.DPR.Entries[qid] {
				scored.Add(e.Doc)
			}
			for _, e := range in.Run.Depth(qid, opts.Depth) {
				if !scored.Has(e.Doc) {
					st.DPRMissing++
				}
			}
		}
	}

	err = readFile(ctx, f.Queries, status, func(r io.Reader) error {
		in.Queries, st.Queries, err = ReadTSV(r, wantQ)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if missing := missingIDs(wantQ, in.Queries); len(missing) > 0 {
		return nil, nil, fmt.Errorf("%s: %d of the run's queries are missing (first: %s)", f.Queries, len(missing), strings.Join(missing, ", "))
	}

	err = readFile(ctx, f.Collection, status, func(r io.Reader) error {
		in.Texts, st.Collection, err = ReadTSV(r, wantP)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if missing := missingIDs(wantP, in.Texts); len(missing) > 0 {
		return nil, nil, fmt.Errorf("%s: %d passages that the run retrieves are missing (first: %s)", f.Collection, len(wantP)-len(in.Texts), strings.Join(missing, ", "))
	}
	return in, st, nil
}

// missingIDs lists up to five ids of want that got has no entry for, sorted.
func missingIDs(want Set, got map[string]string) []string {
	var out []string
	for id := range want {
		if _, ok := got[id]; !ok {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out[:min(5, len(out))]
}

// readFile opens path and passes it to read, stopping when ctx ends and
// reporting how far it got through status (when set) about once a second.
func readFile(ctx context.Context, path string, status func(string), read func(io.Reader) error) error {
	if path == "" {
		return errors.New("a required input file is not set")
	}
	rc, err := Open(path)
	if err != nil {
		return err
	}
	defer rc.Close()
	var size int64
	if fi, err := os.Stat(path); err == nil && !strings.HasSuffix(path, ".gz") {
		size = fi.Size()
	}
	pr := &progressReader{ctx: ctx, r: rc, name: filepath.Base(path), size: size, status: status}
	pr.report(true)
	if err := read(pr); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

type progressReader struct {
	ctx    context.Context
	r      io.Reader
	name   string
	size   int64
	n      int64
	last   time.Time
	status func(string)
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.n += int64(n)
	p.report(false)
	return n, err
}

func (p *progressReader) report(force bool) {
	if p.status == nil || (!force && time.Since(p.last) < time.Second) {
		return
	}
	p.last = time.Now()
	if p.size > 0 {
		p.status(fmt.Sprintf("reading %s: %.0f%% of %s", p.name, 100*float64(p.n)/float64(p.size), FormatBytes(p.size)))
	} else {
		p.status(fmt.Sprintf("reading %s: %s", p.name, FormatBytes(p.n)))
	}
}

// FormatBytes writes n bytes with the largest binary unit (B, KiB, MiB,
// GiB) that keeps a digit before the point.
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
