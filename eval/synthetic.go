package eval

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/rerank/rerank/schemas"
)

// Words for synthetic passages: common English with some rarer words, so the
// WordPiece tokenizer splits some of them as it does on real text (~1.3
// tokens a word).
var vocabulary = strings.Fields(`the of and to in is was for on that with as by at from his her an are
were which this be or have has had not but their its they one all been more when who also
there other into would up out first can time only new years after about over some them two
three used most city world people state year between many such during these under water
later part where known while both before since including university national century number
system called series high government around united family area music american company
population international development important government general history according against
several country however because although following different example research information
published recently capital france paris river population estimated residents centuries major
finance diplomacy commerce culture fashion gastronomy science evolution biology selection
species natural descent evidence diversity generations temperature vitamin deficiency bone
muscle fatigue treatment supplements hypertension caffeine coffee consumption cardiovascular
registered nurses median annual wage statistics hospitals agencies scattering wavelength
atmosphere molecules sunlight violet programming language readable syntax beginners tutorial
debugger transformer retrieval passage ranking relevance cross-encoder bm25 dense embedding
antidisestablishmentarianism photosynthesis electroencephalography thermodynamics
approximately significantly characteristics interdisciplinary neuroplasticity 2,102,650 1859
km² $81,220 25-hydroxyvitamin naïve café résumé`)

// passageWords draws a passage length like MS MARCO's: log-normal around
// 75 words with a long tail, clipped to [8, 400].
func passageWords(r *rand.Rand, mean float64) int {
	const sigma = 0.45
	mu := math.Log(mean) - sigma*sigma/2
	n := int(math.Exp(mu + sigma*r.NormFloat64()))
	return min(max(n, 8), 400)
}

func sentence(r *rand.Rand, n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = vocabulary[r.IntN(len(vocabulary))]
	}
	w[0] = strings.ToUpper(w[0][:1]) + w[0][1:]
	return strings.Join(w, " ") + "."
}

// SyntheticJob builds a job of n candidates from a fixed English word list,
// with passage lengths like MS MARCO's (log-normal around meanWords words)
// and BM25s decreasing with rank: meaningless text, but tokenized like real
// text. Benchmarks and `rerank quantize`'s agreement check use it when no
// job of the user's is given.
func SyntheticJob(r *rand.Rand, id string, n int, meanWords float64) *schemas.Job {
	j := &schemas.Job{ID: id, Query: strings.ToLower(strings.TrimSuffix(sentence(r, 3+r.IntN(7)), "."))}
	for i := range n {
		bm25 := 25 * math.Exp(-float64(i)/float64(n))
		j.Candidates = append(j.Candidates, schemas.Candidate{
			ID: fmt.Sprintf("p%d", i), Text: sentence(r, passageWords(r, meanWords)), BM25: &bm25})
	}
	return j
}
