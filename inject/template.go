package inject

import (
	"fmt"
	"strings"
)

type field int

const (
	fieldLiteral field = iota
	fieldQuery
	fieldPassage
	fieldBM25
	fieldDPR
)

var fieldNames = map[string]field{"query": fieldQuery, "passage": fieldPassage, "bm25": fieldBM25, "dpr": fieldDPR}

type segment struct {
	f   field
	lit string
}

type template []segment

func compile(s string) (template, error) {
	if s == "" {
		return nil, fmt.Errorf("template is empty")
	}
	var t template
	for len(s) > 0 {
		open := strings.IndexByte(s, '{')
		if open < 0 {
			t = append(t, segment{lit: s})
			break
		}
		if open > 0 {
			t = append(t, segment{lit: s[:open]})
		}
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("unclosed '{' in %q", s)
		}
		name := s[open+1 : open+end]
		f, ok := fieldNames[name]
		if !ok {
			return nil, fmt.Errorf("unknown placeholder {%s} (known: {query}, {passage}, {bm25}, {dpr})", name)
		}
		t = append(t, segment{f: f})
		s = s[open+end+1:]
	}
	return t, nil
}

func (t template) uses(f field) bool {
	for _, s := range t {
		if s.f == f {
			return true
		}
	}
	return false
}

type values struct {
	query, passage, bm25, dpr string
}

func (t template) render(sb *strings.Builder, v *values) string {
	if len(t) == 1 {
		switch t[0].f {
		case fieldQuery:
			return v.query
		case fieldPassage:
			return v.passage
		}
	}
	sb.Reset()
	for _, s := range t {
		switch s.f {
		case fieldLiteral:
			sb.WriteString(s.lit)
		case fieldQuery:
			sb.WriteString(v.query)
		case fieldPassage:
			sb.WriteString(v.passage)
		case fieldBM25:
			sb.WriteString(v.bm25)
		case fieldDPR:
			sb.WriteString(v.dpr)
		}
	}
	return sb.String()
}
