package model

import (
	"context"
	"fmt"
	"math"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/rerank/rerank/model/wordpiece"
)

// Batch is one model run's input: Rows encodings padded to the longest,
// Seq tokens each, as the int64 data of the input_ids, attention_mask and
// token_type_ids tensors (row-major, Rows × Seq). Its slices are reused
// from one Pack to the next.
type Batch struct {
	Rows, Seq        int
	IDs, Mask, Types []int64
}

// Pack fills b with encs[i] for each i of idx, in that order, padded with
// pad (mask 0, type 0) to the longest of them, and returns their real
// tokens. It touches no native resource.
func (b *Batch) Pack(encs []wordpiece.Encoding, idx []int, pad int64) (real int) {
	seq := 0
	for _, i := range idx {
		seq = max(seq, len(encs[i].IDs))
		real += len(encs[i].IDs)
	}
	n := len(idx) * seq
	b.Rows, b.Seq = len(idx), seq
	b.IDs, b.Mask, b.Types = resize(b.IDs, n), resize(b.Mask, n), resize(b.Types, n)
	for row, i := range idx {
		e := &encs[i]
		o := row * seq
		copy(b.IDs[o:], e.IDs)
		copy(b.Types[o:], e.TypeIDs)
		for k := range e.IDs {
			b.Mask[o+k] = 1
		}
		for k := len(e.IDs); k < seq; k++ {
			b.IDs[o+k], b.Mask[o+k], b.Types[o+k] = pad, 0, 0
		}
	}
	return real
}

// Input is the data of the named input tensor (input_ids for any name but
// the mask's and the type ids').
func (b *Batch) Input(name string) []int64 {
	switch name {
	case inputMask:
		return b.Mask
	case inputTypeIDs:
		return b.Types
	}
	return b.IDs
}

func resize(s []int64, n int) []int64 {
	if cap(s) < n {
		return make([]int64, n)
	}
	return s[:n]
}

// runBatch scores encs[i] for each i of idx into scores[i]: one model run.
func (m *Model) runBatch(ctx context.Context, encs []wordpiece.Encoding, idx []int, scores []float32, buf *Batch, st *Stats) error {
	st.RealTokens += buf.Pack(encs, idx, m.tok.PadID())
	st.PaddedTokens += buf.Rows * buf.Seq
	st.Batches++
	st.BatchSizes = append(st.BatchSizes, len(idx))
	return m.run(ctx, buf, func(outputs []ort.Value) error { return m.readScores(outputs, idx, scores) })
}

// run runs the session on buf, one run at a time per Config.Runs, and
// hands the outputs to read while it holds them; every tensor is
// destroyed before it returns.
func (m *Model) run(ctx context.Context, buf *Batch, read func([]ort.Value) error) error {
	shape := ort.NewShape(int64(buf.Rows), int64(buf.Seq))
	var inputs []ort.Value
	defer func() {
		for _, v := range inputs {
			v.Destroy()
		}
	}()
	for _, name := range m.inputs {
		t, err := ort.NewTensor(shape, buf.Input(name))
		if err != nil {
			return fmt.Errorf("creating %s tensor: %w", name, err)
		}
		inputs = append(inputs, t)
	}
	select {
	case m.runs <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("scoring: %w", ctx.Err())
	}
	defer func() { <-m.runs }()
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	outputs := make([]ort.Value, 1+len(m.observed))
	if err := m.sess.Run(inputs, outputs); err != nil {
		return fmt.Errorf("running model %s on a batch of %d×%d: %w", m.cfg.Name, buf.Rows, buf.Seq, err)
	}
	defer func() {
		for _, v := range outputs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	return read(outputs)
}

// readScores hands the observed outputs to the observer and writes the
// score of row r of the first output to scores[idx[r]].
func (m *Model) readScores(outputs []ort.Value, idx []int, scores []float32) error {
	for k, name := range m.observed {
		t, ok := outputs[1+k].(*ort.Tensor[float32])
		if !ok {
			return fmt.Errorf("%w: observed output %q is not a float32 tensor", ErrModelMismatch, name)
		}
		m.observe(name, t.GetShape(), t.GetData())
	}
	out, ok := outputs[0].(*ort.Tensor[float32])
	if !ok {
		return fmt.Errorf("%w: output %q is not a float32 tensor", ErrModelMismatch, m.output)
	}
	oshape := out.GetShape()
	if len(oshape) != 2 || oshape[0] != int64(len(idx)) || int64(m.logit) >= oshape[1] {
		return fmt.Errorf("%w: output %q has shape %v for a batch of %d (logit %d)", ErrModelMismatch, m.output, oshape, len(idx), m.logit)
	}
	data := out.GetData()
	width := int(oshape[1])
	for row, i := range idx {
		scores[i] = score(data[row*width:(row+1)*width], m.logit, m.activation)
	}
	return nil
}

// score is one row's score: its logit at column k, through the activation.
// Softmax is computed in float64 from the row's largest logit, so it never
// overflows.
func score(row []float32, k int, a Activation) float32 {
	v := float64(row[k])
	switch a {
	case ActivationSigmoid:
		return float32(1 / (1 + math.Exp(-v)))
	case ActivationSoftmax:
		hi := v
		for _, l := range row {
			hi = max(hi, float64(l))
		}
		var sum float64
		for _, l := range row {
			sum += math.Exp(float64(l) - hi)
		}
		return float32(math.Exp(v-hi) / sum)
	}
	return row[k]
}
