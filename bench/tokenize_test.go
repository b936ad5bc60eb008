package main

// The tokenizer benchmarks: ours (model/wordpiece) and the library it
// replaces, github.com/sugarme/tokenizer, on the same pairs. Run them side by
// side with `go test ./bench -run '^$' -bench TokenizePairs`.

import (
	"strings"
	"testing"

	"github.com/rerank/rerank/internal/testenv"
	"github.com/rerank/rerank/model/wordpiece"
	sugarme "github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/pretrained"
)

// benchQueries and benchPassages make realistic re-ranking pairs: a query of
// about 8 words and an English passage of about 75 words.
var benchQueries = []string{
	"what is the capital city of france",
	"how long does it take to boil an egg",
	"symptoms of vitamin d deficiency in adults",
	"who wrote the origin of species and when",
	"is drinking coffee every day bad for your heart",
	"average salary of a registered nurse in the U.S.",
	"why is the sky blue during the day",
	"best way to learn python programming quickly",
}

var benchPassages = []string{
	"Paris is the capital and most populous city of France, with an estimated population of 2,102,650 residents in January 2023 in an area of more than 105 km². Since the 17th century, Paris has been one of the world's major centres of finance, diplomacy, commerce, culture, fashion and gastronomy. Because of its leading role in the arts and sciences, it is often called the capital of the world and the City of Light.",
	"To hard-boil an egg, place it in a saucepan and cover with cold water by about an inch. Bring the water to a rolling boil over medium-high heat, then cover the pan and remove it from the heat. Let the eggs stand for 10 to 12 minutes for firm yolks, then transfer them to a bowl of ice water to stop the cooking and make peeling easier.",
	"Vitamin D deficiency can cause bone pain, muscle weakness, fatigue and mood changes, including depression. In adults, severe deficiency leads to osteomalacia, a softening of the bones. Risk factors include limited sun exposure, darker skin, older age, obesity and certain medical conditions. A simple blood test measuring 25-hydroxyvitamin D confirms the diagnosis, and treatment usually involves supplements taken daily or weekly for several months.",
	"On the Origin of Species, published on 24 November 1859, is a work of scientific literature by Charles Darwin that is considered to be the foundation of evolutionary biology. Darwin's book introduced the scientific theory that populations evolve over the course of generations through a process of natural selection. The book presented a body of evidence that the diversity of life arose by common descent through a branching pattern of evolution.",
	"Moderate coffee consumption, about three to four cups a day, is not associated with an increased risk of heart disease for most healthy adults, and some studies even suggest a lower risk of heart failure. However, caffeine can temporarily raise blood pressure and heart rate, so people with uncontrolled hypertension or arrhythmias should talk to their doctor. Adding sugar and cream also changes the overall health picture considerably.",
	"Registered nurses in the United States earned a median annual wage of $81,220 in May 2022, according to the Bureau of Labor Statistics. The lowest 10 percent earned less than $61,250, and the highest 10 percent earned more than $129,400. Pay varies widely by state and setting: nurses working for government agencies and hospitals typically earn more than those employed in schools or residential care facilities.",
	"The sky appears blue because of Rayleigh scattering. As sunlight passes through the atmosphere, it collides with gas molecules that are much smaller than the wavelength of visible light. Shorter wavelengths, such as blue and violet, are scattered much more strongly than longer red wavelengths. Our eyes are more sensitive to blue than violet, and some violet light is absorbed high in the atmosphere, so we see a blue sky.",
	"Python is widely regarded as one of the easiest programming languages to learn because of its readable syntax. Beginners should start with the official tutorial, practise with small projects such as a calculator or a to-do list, and read other people's code. Online courses, coding challenges and pair programming help build confidence quickly, while learning to use the debugger and writing tests early prevents many frustrating mistakes later.",
}

type benchPair struct{ q, p string }

func benchPairs() []benchPair {
	var pairs []benchPair
	for i, q := range benchQueries {
		for j := range benchPassages {
			pairs = append(pairs, benchPair{q, benchPassages[(i+j)%len(benchPassages)]})
		}
	}
	return pairs
}

// bertTokenizer loads the BERT-uncased tokenizer.json with model/wordpiece.
func bertTokenizer(b *testing.B) *wordpiece.Tokenizer {
	b.Helper()
	tok, err := wordpiece.Load(testenv.TokenizerJSON(b))
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

func reportPairsPerSec(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "pairs/s")
	}
}

// BenchmarkTokenizePairs encodes (query, passage) pairs on one goroutine,
// reusing one Encoding, as the re-ranking worker does.
func BenchmarkTokenizePairs(b *testing.B) {
	tok := bertTokenizer(b)
	pairs := benchPairs()
	var enc wordpiece.Encoding
	tokens := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := pairs[i%len(pairs)]
		if err := tok.AppendPair(&enc, p.q, p.p, 512, wordpiece.LongestFirst); err != nil {
			b.Fatal(err)
		}
		tokens += len(enc.IDs)
	}
	reportPairsPerSec(b)
	b.ReportMetric(float64(tokens)/float64(b.N), "tokens/pair")
}

// BenchmarkTokenizePairsParallel is the same with all GOMAXPROCS goroutines
// sharing one Tokenizer.
func BenchmarkTokenizePairsParallel(b *testing.B) {
	tok := bertTokenizer(b)
	pairs := benchPairs()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var enc wordpiece.Encoding
		for i := 0; pb.Next(); i++ {
			p := pairs[i%len(pairs)]
			if err := tok.AppendPair(&enc, p.q, p.p, 512, wordpiece.LongestFirst); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportPairsPerSec(b)
}

// BenchmarkTokenizePairsMultilingual mixes accented, CJK and Cyrillic text,
// which takes the non-ASCII path.
func BenchmarkTokenizePairsMultilingual(b *testing.B) {
	tok := bertTokenizer(b)
	q := "résumé vs cv différence à Zürich"
	p := strings.Repeat("Привет мир, как дела? ÉCOLE NORMALE supérieure, Straße, Äpfel. 北京 is the capital of 中国. ", 4)
	var enc wordpiece.Encoding
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := tok.AppendPair(&enc, q, p, 512, wordpiece.LongestFirst); err != nil {
			b.Fatal(err)
		}
	}
	reportPairsPerSec(b)
}

// BenchmarkSugarmeTokenizePairs does the same with github.com/sugarme/tokenizer
// v0.3.0, the library model/wordpiece replaces. Its padding preset is removed
// (its zero padding direction corrupts type ids) and truncation set to
// longest-first at 512, so it does the same work as ours.
func BenchmarkSugarmeTokenizePairs(b *testing.B) {
	tk, err := pretrained.FromFile(testenv.TokenizerJSON(b))
	if err != nil {
		b.Fatalf("pretrained.FromFile: %v", err)
	}
	tk.WithPadding(nil)
	tk.WithTruncation(&sugarme.TruncationParams{MaxLength: 512, Strategy: sugarme.LongestFirst})
	pairs := benchPairs()
	tokens := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := pairs[i%len(pairs)]
		enc, err := tk.EncodePair(p.q, p.p, true)
		if err != nil {
			b.Fatal(err)
		}
		tokens += len(enc.Ids)
	}
	reportPairsPerSec(b)
	b.ReportMetric(float64(tokens)/float64(b.N), "tokens/pair")
}
