package testmodel

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rerank/rerank/internal/onnxpb"
)

const (
	irVersion        = 8
	opsetVersionONNX = 17 // default domain; LayerNormalization needs 17
)

// The interface of an optimum text-classification export.
const (
	InputIDs      = "input_ids"
	AttentionMask = "attention_mask"
	TokenTypeIDs  = "token_type_ids"
	Logits        = "logits"

	BatchDim    = "batch_size"
	SequenceDim = "sequence_length"
)

// Producer is the ONNX producer_name of generated models.
const Producer = "rerank/testmodel"

const (
	layerNormEps = 1e-12
	// maskValue is the additive attention bias for padded positions, as in
	// BERT's original get_extended_attention_mask.
	maskValue = -10000
	// biasScale scales InitStd for biases and LayerNorm offsets ("small
	// random"); LayerNorm gains are exactly 1.
	biasScale = 0.1
)

// Wire helpers.

// sizeBytesField is the encoded size of a length-delimited field whose
// payload is n bytes long.
func sizeBytesField(num protowire.Number, n int64) int64 {
	return int64(protowire.SizeTag(num)) + int64(protowire.SizeVarint(uint64(n))) + n
}

func writeBytesHeader(w *bufio.Writer, num protowire.Number, n int64) error {
	var hdr [16]byte
	b := protowire.AppendTag(hdr[:0], num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	_, err := w.Write(b)
	return err
}

// Attributes.

type attribute []byte

func attrInt(name string, v int64) attribute {
	b := onnxpb.AppendString(nil, onnxpb.AttrName, name)
	b = onnxpb.AppendVarint(b, onnxpb.AttrI, uint64(v))
	return onnxpb.AppendVarint(b, onnxpb.AttrType, onnxpb.AttrTypeInt)
}

func attrFloat(name string, v float32) attribute {
	b := onnxpb.AppendString(nil, onnxpb.AttrName, name)
	b = onnxpb.AppendFloat(b, onnxpb.AttrF, v)
	return onnxpb.AppendVarint(b, onnxpb.AttrType, onnxpb.AttrTypeFloat)
}

func attrIntList(name string, vs ...int64) attribute {
	b := onnxpb.AppendString(nil, onnxpb.AttrName, name)
	for _, v := range vs {
		b = onnxpb.AppendVarint(b, onnxpb.AttrInts, uint64(v))
	}
	return onnxpb.AppendVarint(b, onnxpb.AttrType, onnxpb.AttrTypeInts)
}

// Initializers.

type fillKind int

const (
	fillRaw    fillKind = iota // raw holds the bytes (small constants)
	fillNormal                 // N(0, std²) from the tensor's own PCG stream
	fillOnes                   // every element 1.0
)

type tensor struct {
	name  string
	dims  []int64
	dtype int
	kind  fillKind
	raw   []byte
	std   float64
}

func (t *tensor) numel() int64 {
	n := int64(1)
	for _, d := range t.dims {
		n *= d
	}
	return n
}

func (t *tensor) rawLen() int64 {
	if t.kind == fillRaw {
		return int64(len(t.raw))
	}
	return 4 * t.numel() // float32
}

// header encodes every TensorProto field but raw_data, which follows it.
func (t *tensor) header() []byte {
	var b []byte
	for _, d := range t.dims {
		b = onnxpb.AppendVarint(b, onnxpb.TensorDims, uint64(d))
	}
	b = onnxpb.AppendVarint(b, onnxpb.TensorDataType, uint64(t.dtype))
	return onnxpb.AppendString(b, onnxpb.TensorName, t.name)
}

// encodedLen is the size of the TensorProto message.
func (t *tensor) encodedLen() int64 {
	return int64(len(t.header())) + sizeBytesField(onnxpb.TensorRawData, t.rawLen())
}

// streamSeed derives the PCG stream of one tensor from its name, so that a
// tensor's values do not depend on the order or number of other tensors.
func streamSeed(name string) uint64 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, name)
	return h.Sum64()
}

// writeRaw writes the tensor's raw_data payload (little-endian).
func (t *tensor) writeRaw(w *bufio.Writer, seed uint64) error {
	switch t.kind {
	case fillRaw:
		_, err := w.Write(t.raw)
		return err
	case fillOnes:
		var one [4]byte
		binary.LittleEndian.PutUint32(one[:], math.Float32bits(1))
		for n := t.numel(); n > 0; n-- {
			if _, err := w.Write(one[:]); err != nil {
				return err
			}
		}
		return nil
	}
	g := normalGen{src: rand.NewPCG(seed, streamSeed(t.name))}
	const chunk = 16 << 10 // values
	buf := make([]byte, 4*chunk)
	for left := t.numel(); left > 0; {
		n := int64(chunk)
		if left < n {
			n = left
		}
		for i := int64(0); i < n; i++ {
			v := float32(g.next() * t.std)
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		if _, err := w.Write(buf[:4*n]); err != nil {
			return err
		}
		left -= n
	}
	return nil
}

// normalGen draws standard normal values with the Box-Muller transform over
// a PCG source. It is written out here, rather than using
// rand.Rand.NormFloat64, so that the weights depend only on the PCG
// algorithm (which math/rand/v2 specifies) and not on how a Go release
// implements NormFloat64.
type normalGen struct {
	src   *rand.PCG
	spare float64
	has   bool
}

func (g *normalGen) next() float64 {
	if g.has {
		g.has = false
		return g.spare
	}
	// Uniforms in (0, 1): 53 random bits, offset by half a step.
	u1 := (float64(g.src.Uint64()>>11) + 0.5) / (1 << 53)
	u2 := (float64(g.src.Uint64()>>11) + 0.5) / (1 << 53)
	r := math.Sqrt(-2 * math.Log(u1))
	s, c := math.Sincos(2 * math.Pi * u2)
	g.spare, g.has = r*s, true
	return r * c
}

func int64Bytes(vs ...int64) []byte {
	b := make([]byte, 0, 8*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	return b
}

func float32Bytes(vs ...float32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// The graph.

type graph struct {
	spec   Spec
	nodes  [][]byte
	inits  []*tensor
	consts map[string]string // constant key -> initializer name
	ops    map[string]int    // per-scope op counters for unique node names
}

// node appends a node with one output, named after the node, and returns the
// output's name.
func (g *graph) node(scope, op string, inputs []string, attrs ...attribute) string {
	key := scope + "/" + op
	name := key
	if k := g.ops[key]; k > 0 {
		name += "_" + strconv.Itoa(k)
	}
	g.ops[key]++
	out := name + "_output_0"
	g.nodeNamed(name, op, inputs, out, attrs...)
	return out
}

func (g *graph) nodeNamed(name, op string, inputs []string, output string, attrs ...attribute) {
	var b []byte
	for _, in := range inputs {
		b = onnxpb.AppendString(b, onnxpb.NodeInput, in)
	}
	b = onnxpb.AppendString(b, onnxpb.NodeOutput, output)
	b = onnxpb.AppendString(b, onnxpb.NodeName, name)
	b = onnxpb.AppendString(b, onnxpb.NodeOpType, op)
	for _, a := range attrs {
		b = onnxpb.AppendBytes(b, onnxpb.NodeAttribute, a)
	}
	g.nodes = append(g.nodes, b)
}

func (g *graph) param(name string, std float64, dims ...int64) string {
	g.inits = append(g.inits, &tensor{name: name, dims: dims, dtype: onnxpb.DataTypeFloat, kind: fillNormal, std: std})
	return name
}

func (g *graph) ones(name string, dims ...int64) string {
	g.inits = append(g.inits, &tensor{name: name, dims: dims, dtype: onnxpb.DataTypeFloat, kind: fillOnes})
	return name
}

func (g *graph) constant(key string, dtype int, raw []byte, dims ...int64) string {
	if name, ok := g.consts[key]; ok {
		return name
	}
	name := "const_" + key
	g.inits = append(g.inits, &tensor{name: name, dims: dims, dtype: dtype, kind: fillRaw, raw: raw})
	g.consts[key] = name
	return name
}

// scalarF32 is a float32 scalar constant.
func (g *graph) scalarF32(v float32) string {
	return g.constant("f32_"+strconv.FormatFloat(float64(v), 'g', -1, 32), onnxpb.DataTypeFloat, float32Bytes(v))
}

// scalarI64 is an int64 scalar constant.
func (g *graph) scalarI64(v int64) string {
	return g.constant("i64_"+strconv.FormatInt(v, 10), onnxpb.DataTypeInt64, int64Bytes(v))
}

// vectorI64 is a 1-D int64 constant.
func (g *graph) vectorI64(vs ...int64) string {
	key := "i64v"
	for _, v := range vs {
		key += "_" + strconv.FormatInt(v, 10)
	}
	return g.constant(key, onnxpb.DataTypeInt64, int64Bytes(vs...), int64(len(vs)))
}

func (g *graph) linear(scope, x, prefix string, in, out int64) string {
	s := g.spec
	w := g.param(prefix+".weight", s.InitStd, in, out) // stored [in, out], ready for MatMul
	b := g.param(prefix+".bias", s.InitStd*biasScale, out)
	y := g.node(scope, "MatMul", []string{x, w})
	return g.node(scope, "Add", []string{y, b})
}

func (g *graph) layerNorm(scope, x, prefix string, h int64) string {
	gamma := g.ones(prefix+".weight", h)
	beta := g.param(prefix+".bias", g.spec.InitStd*biasScale, h)
	return g.node(scope, "LayerNormalization", []string{x, gamma, beta},
		attrInt("axis", -1), attrFloat("epsilon", layerNormEps))
}

// buildGraph lays out the BertForSequenceClassification forward pass. The
// spec must be valid.
func buildGraph(s Spec) *graph {
	g := &graph{spec: s, consts: map[string]string{}, ops: map[string]int{}}
	H, heads, ffn := int64(s.Hidden), int64(s.Heads), int64(s.FFN)
	headDim := H / heads

	// Embeddings.
	sc := "/bert/embeddings"
	wordEmb := g.param("bert.embeddings.word_embeddings.weight", s.InitStd, int64(s.Vocab), H)
	posEmb := g.param("bert.embeddings.position_embeddings.weight", s.InitStd, int64(s.MaxPositions), H)
	typeEmb := g.param("bert.embeddings.token_type_embeddings.weight", s.InitStd, int64(s.TypeVocab), H)
	words := g.node(sc+"/word_embeddings", "Gather", []string{wordEmb, InputIDs}, attrInt("axis", 0))
	shape := g.node(sc, "Shape", []string{InputIDs})
	seqLen := g.node(sc, "Gather", []string{shape, g.scalarI64(1)}, attrInt("axis", 0))
	posIDs := g.node(sc, "Range", []string{g.scalarI64(0), seqLen, g.scalarI64(1)})
	pos := g.node(sc+"/position_embeddings", "Gather", []string{posEmb, posIDs}, attrInt("axis", 0))
	types := g.node(sc+"/token_type_embeddings", "Gather", []string{typeEmb, TokenTypeIDs}, attrInt("axis", 0))
	x := g.node(sc, "Add", []string{words, pos})
	x = g.node(sc, "Add", []string{x, types})
	x = g.layerNorm(sc+"/LayerNorm", x, "bert.embeddings.LayerNorm", H)

	// Additive attention bias [B, 1, 1, S]: 0 for tokens, -10000 for padding.
	sc = "/bert"
	maskF := g.node(sc, "Cast", []string{AttentionMask}, attrInt("to", onnxpb.DataTypeFloat))
	inv := g.node(sc, "Sub", []string{g.scalarF32(1), maskF})
	bias := g.node(sc, "Mul", []string{inv, g.scalarF32(maskValue)})
	bias = g.node(sc, "Unsqueeze", []string{bias, g.vectorI64(1, 2)})

	splitShape := g.vectorI64(0, 0, heads, headDim)
	mergeShape := g.vectorI64(0, 0, H)
	scale := g.scalarF32(float32(math.Sqrt(float64(headDim))))
	sqrt2 := g.scalarF32(float32(math.Sqrt2))
	for l := 0; l < s.Layers; l++ {
		sc := fmt.Sprintf("/bert/encoder/layer.%d", l)
		pre := fmt.Sprintf("bert.encoder.layer.%d", l)

		// Self-attention.
		asc := sc + "/attention/self"
		project := func(name string, perm ...int64) string {
			y := g.linear(asc+"/"+name, x, pre+".attention.self."+name, H, H)
			y = g.node(asc+"/"+name, "Reshape", []string{y, splitShape})
			return g.node(asc+"/"+name, "Transpose", []string{y}, attrIntList("perm", perm...))
		}
		q := project("query", 0, 2, 1, 3) // [B, heads, S, d]
		k := project("key", 0, 2, 3, 1)   // [B, heads, d, S]
		v := project("value", 0, 2, 1, 3) // [B, heads, S, d]
		scores := g.node(asc, "MatMul", []string{q, k})
		scores = g.node(asc, "Div", []string{scores, scale})
		scores = g.node(asc, "Add", []string{scores, bias})
		probs := g.node(asc, "Softmax", []string{scores}, attrInt("axis", -1))
		ctx := g.node(asc, "MatMul", []string{probs, v})
		ctx = g.node(asc, "Transpose", []string{ctx}, attrIntList("perm", 0, 2, 1, 3))
		ctx = g.node(asc, "Reshape", []string{ctx, mergeShape})

		osc := sc + "/attention/output"
		y := g.linear(osc+"/dense", ctx, pre+".attention.output.dense", H, H)
		y = g.node(osc, "Add", []string{y, x})
		x = g.layerNorm(osc+"/LayerNorm", y, pre+".attention.output.LayerNorm", H)

		// Feed-forward with exact GELU: x * 0.5 * (1 + erf(x / sqrt 2)).
		isc := sc + "/intermediate"
		u := g.linear(isc+"/dense", x, pre+".intermediate.dense", H, ffn)
		e := g.node(isc+"/intermediate_act_fn", "Div", []string{u, sqrt2})
		e = g.node(isc+"/intermediate_act_fn", "Erf", []string{e})
		e = g.node(isc+"/intermediate_act_fn", "Add", []string{e, g.scalarF32(1)})
		e = g.node(isc+"/intermediate_act_fn", "Mul", []string{u, e})
		e = g.node(isc+"/intermediate_act_fn", "Mul", []string{e, g.scalarF32(0.5)})

		osc = sc + "/output"
		y = g.linear(osc+"/dense", e, pre+".output.dense", ffn, H)
		y = g.node(osc, "Add", []string{y, x})
		x = g.layerNorm(osc+"/LayerNorm", y, pre+".output.LayerNorm", H)
	}

	// Pooler over [CLS], then the one-logit classifier.
	first := g.node("/bert/pooler", "Gather", []string{x, g.scalarI64(0)}, attrInt("axis", 1))
	pooled := g.linear("/bert/pooler/dense", first, "bert.pooler.dense", H, H)
	pooled = g.node("/bert/pooler/activation", "Tanh", []string{pooled})
	w := g.param("classifier.weight", s.InitStd, H, int64(s.labels()))
	b := g.param("classifier.bias", s.InitStd*biasScale, int64(s.labels()))
	y := g.node("/classifier", "MatMul", []string{pooled, w})
	g.nodeNamed("/classifier/Add", "Add", []string{y, b}, Logits)
	return g
}

// dim is one TensorShapeProto.Dimension: symbolic when param is set.
type dim struct {
	param string
	value int64
}

func valueInfo(name string, elemType int, dims ...dim) []byte {
	var shape []byte
	for _, d := range dims {
		var db []byte
		if d.param != "" {
			db = onnxpb.AppendString(nil, onnxpb.DimParam, d.param)
		} else {
			db = onnxpb.AppendVarint(nil, onnxpb.DimValue, uint64(d.value))
		}
		shape = onnxpb.AppendBytes(shape, onnxpb.ShapeDim, db)
	}
	tt := onnxpb.AppendVarint(nil, onnxpb.TensorElemType, uint64(elemType))
	tt = onnxpb.AppendBytes(tt, onnxpb.TensorShape, shape)
	tp := onnxpb.AppendBytes(nil, onnxpb.TypeTensorType, tt)
	b := onnxpb.AppendString(nil, onnxpb.ValueInfoName, name)
	return onnxpb.AppendBytes(b, onnxpb.ValueInfoType, tp)
}

// encoded is a model laid out for writing: everything but the initializers'
// raw data is already encoded.
type encoded struct {
	head    []byte // ModelProto fields before the graph
	graphA  []byte // GraphProto fields before the initializers (nodes, name)
	inits   []*tensor
	headers [][]byte // TensorProto fields before raw_data, per initializer
	graphB  []byte   // GraphProto fields after the initializers (inputs, outputs)
	tail    []byte   // ModelProto fields after the graph
}

func encode(s Spec) *encoded {
	g := buildGraph(s)
	e := &encoded{inits: g.inits}

	e.head = onnxpb.AppendVarint(nil, onnxpb.ModelIRVersion, irVersion)
	e.head = onnxpb.AppendString(e.head, onnxpb.ModelProducerName, Producer)
	e.head = onnxpb.AppendString(e.head, onnxpb.ModelProducerVer, "1")
	e.head = onnxpb.AppendString(e.head, onnxpb.ModelDocString, fmt.Sprintf(
		"%s: BERT cross-encoder with random weights (seed %d); scores are meaningless, for tests, demos and benchmarks only",
		s.Name, s.Seed))

	for _, n := range g.nodes {
		e.graphA = onnxpb.AppendBytes(e.graphA, onnxpb.GraphNode, n)
	}
	e.graphA = onnxpb.AppendString(e.graphA, onnxpb.GraphName, "main_graph")
	for _, t := range g.inits {
		e.headers = append(e.headers, t.header())
	}
	bs := []dim{{param: BatchDim}, {param: SequenceDim}}
	for _, in := range []string{InputIDs, AttentionMask, TokenTypeIDs} {
		e.graphB = onnxpb.AppendBytes(e.graphB, onnxpb.GraphInput, valueInfo(in, onnxpb.DataTypeInt64, bs...))
	}
	e.graphB = onnxpb.AppendBytes(e.graphB, onnxpb.GraphOutput,
		valueInfo(Logits, onnxpb.DataTypeFloat, dim{param: BatchDim}, dim{value: int64(s.labels())}))

	e.tail = onnxpb.AppendOpsetImport(nil, "", opsetVersionONNX)
	for _, kv := range [][2]string{
		{"rerank.random_weights", "true"},
		{"rerank.name", s.Name},
		{"rerank.seed", strconv.FormatUint(s.Seed, 10)},
	} {
		entry := onnxpb.AppendString(nil, onnxpb.EntryKey, kv[0])
		entry = onnxpb.AppendString(entry, onnxpb.EntryValue, kv[1])
		e.tail = onnxpb.AppendBytes(e.tail, onnxpb.ModelMetadataProps, entry)
	}
	return e
}

func (e *encoded) tensorLen(i int) int64 {
	return int64(len(e.headers[i])) + sizeBytesField(onnxpb.TensorRawData, e.inits[i].rawLen())
}

func (e *encoded) graphLen() int64 {
	n := int64(len(e.graphA) + len(e.graphB))
	for i := range e.inits {
		n += sizeBytesField(onnxpb.GraphInitializer, e.tensorLen(i))
	}
	return n
}

func (e *encoded) size() int64 {
	return int64(len(e.head)) + sizeBytesField(onnxpb.ModelGraph, e.graphLen()) + int64(len(e.tail))
}

func (e *encoded) write(w io.Writer, seed uint64) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(e.head); err != nil {
		return err
	}
	if err := writeBytesHeader(bw, onnxpb.ModelGraph, e.graphLen()); err != nil {
		return err
	}
	if _, err := bw.Write(e.graphA); err != nil {
		return err
	}
	for i, t := range e.inits {
		if err := writeBytesHeader(bw, onnxpb.GraphInitializer, e.tensorLen(i)); err != nil {
			return err
		}
		if _, err := bw.Write(e.headers[i]); err != nil {
			return err
		}
		if err := writeBytesHeader(bw, onnxpb.TensorRawData, t.rawLen()); err != nil {
			return err
		}
		if err := t.writeRaw(bw, seed); err != nil {
			return err
		}
	}
	if _, err := bw.Write(e.graphB); err != nil {
		return err
	}
	if _, err := bw.Write(e.tail); err != nil {
		return err
	}
	return bw.Flush()
}
