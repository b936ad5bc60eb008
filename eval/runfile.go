package eval

import (
	"io"
	"strconv"
)

// scoreBits picks how a query's scores are written: when every one is
// exactly a float32 (a model's logits are), each is written in the shortest
// form that identifies its float32 ("0.1" rather than
// "0.10000000149011612"); otherwise in the shortest form that reads back as
// the same float64. Either way, reading the scores back (trec_eval uses
// atof) keeps their order and their ties: distinct float32s have distinct
// shortest forms of at most 9 significant digits, which stay distinct and
// in order as float64s.
func scoreBits(ranked []Entry) int {
	for _, e := range ranked {
		if float64(float32(e.Score)) != e.Score {
			return 64
		}
	}
	return 32
}

// WriteRun writes one query's ranked entries as TREC run lines
// "qid Q0 docno rank score tag", ranks from 1 in the order given.
func WriteRun(w io.Writer, qid string, ranked []Entry, tag string) error {
	bits := scoreBits(ranked)
	var buf []byte
	for i, e := range ranked {
		buf = buf[:0]
		buf = append(buf, qid...)
		buf = append(buf, " Q0 "...)
		buf = append(buf, e.Doc...)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, int64(i+1), 10)
		buf = append(buf, ' ')
		buf = strconv.AppendFloat(buf, e.Score, 'g', -1, bits)
		buf = append(buf, ' ')
		buf = append(buf, tag...)
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// AsWritten returns a copy of ranked with each score replaced by the value
// that reading WriteRun's output gives (what trec_eval evaluates).
func AsWritten(ranked []Entry) []Entry {
	bits := scoreBits(ranked)
	out := make([]Entry, len(ranked))
	for i, e := range ranked {
		s := strconv.FormatFloat(e.Score, 'g', -1, bits)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil { // cannot happen for finite scores
			v = e.Score
		}
		out[i] = Entry{Doc: e.Doc, Score: v}
	}
	return out
}
