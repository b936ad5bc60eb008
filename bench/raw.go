package main

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/wordpiece"
)

// rawSession is the baseline: ONNX Runtime alone, on tensors built before
// the clock starts. Only session.Run is timed.
type rawSession struct {
	sess   *ort.DynamicAdvancedSession
	inputs []string
}

func newRawSession(c config, m *model.Model) (*rawSession, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	opts, _ := c.options()
	intra := opts.IntraOpThreads
	if intra == 0 {
		intra = model.Options{}.WithDefaults().IntraOpThreads
	}
	if err := so.SetIntraOpNumThreads(intra); err != nil {
		return nil, err
	}
	if err := so.SetInterOpNumThreads(max(opts.InterOpThreads, 1)); err != nil {
		return nil, err
	}
	if err := so.SetGraphOptimizationLevel(ort.GraphOptimizationLevelEnableAll); err != nil {
		return nil, err
	}
	if opts.Device.CUDA {
		cuda, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return nil, err
		}
		defer cuda.Destroy()
		if err := cuda.Update(map[string]string{"device_id": fmt.Sprint(opts.Device.ID)}); err != nil {
			return nil, err
		}
		if err := so.AppendExecutionProviderCUDA(cuda); err != nil {
			return nil, err
		}
	}
	inputs := m.Inputs()
	sess, err := ort.NewDynamicAdvancedSession(m.Dir()+"/"+model.ModelFile, inputs, []string{"logits"}, so)
	if err != nil {
		return nil, fmt.Errorf("creating the raw session: %w", err)
	}
	return &rawSession{sess: sess, inputs: inputs}, nil
}

type rawBatches [][]ort.Value

func (b rawBatches) destroy() {
	for _, vs := range b {
		for _, v := range vs {
			v.Destroy()
		}
	}
}

// prepare builds the input tensors of every batch of plan, packed as the
// model packs them (model.Batch).
func (r *rawSession) prepare(encs []wordpiece.Encoding, plan [][]int, pad int64) (rawBatches, error) {
	var out rawBatches
	for _, idx := range plan {
		b := &model.Batch{} // one per batch: all are built before the timing
		b.Pack(encs, idx, pad)
		var vs []ort.Value
		for _, name := range r.inputs {
			t, err := ort.NewTensor(ort.NewShape(int64(b.Rows), int64(b.Seq)), b.Input(name))
			if err != nil {
				rawBatches{vs}.destroy()
				out.destroy()
				return nil, err
			}
			vs = append(vs, t)
		}
		out = append(out, vs)
	}
	return out, nil
}

func (r *rawSession) run(b rawBatches) error {
	for _, in := range b {
		outs := []ort.Value{nil}
		if err := r.sess.Run(in, outs); err != nil {
			return err
		}
		outs[0].Destroy()
	}
	return nil
}

func (r *rawSession) close() { r.sess.Destroy() }
