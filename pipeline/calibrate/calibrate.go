package calibrate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/rerank/rerank/inject"
	"github.com/rerank/rerank/model"
	"github.com/rerank/rerank/model/quantize"
	"github.com/rerank/rerank/pipeline"
	"github.com/rerank/rerank/schemas"
)

// ErrNoValues reports an activation the calibration run never saw a finite
// value of.
var ErrNoValues = errors.New("calibration saw no finite value")

// Ranges runs the fp32 model directory dir on job and returns, for every
// activation that quantize.Graph with opts quantizes, its range and its
// channels' ranges and means. Each pair runs alone, so padding never widens
// a range.
func Ranges(ctx context.Context, rt *model.Runtime, dir string, opts quantize.Options, mopts model.Options, job *schemas.Job) (map[string]quantize.Range, error) {
	graph, _, err := quantize.ReadGraph(dir)
	if err != nil {
		return nil, fmt.Errorf("calibrating: %w", err)
	}
	observed, names, err := quantize.Observe(graph, opts)
	if err != nil {
		return nil, fmt.Errorf("calibrating: %w", err)
	}
	s := &stats{ranges: make(map[string]*quantize.Range, len(names)), counts: map[string][]int{}}
	m, err := rt.LoadObserved(dir, observed, names, mopts, s.observe)
	if err != nil {
		return nil, fmt.Errorf("calibrating: %w", err)
	}
	defer m.Close()
	ic, err := inject.Resolve("", m.Config().Raw)
	if err != nil {
		return nil, fmt.Errorf("calibrating: %w", err)
	}
	const name = "calibration"
	p, err := pipeline.New(pipeline.Config{MaxBatchDelay: -1}, pipeline.Model{Name: name, Scorer: m, Inject: ic, BatchPairs: 1})
	if err != nil {
		return nil, fmt.Errorf("calibrating: %w", err)
	}
	defer p.Close()
	j := *job
	j.Model, j.TopN, j.ReturnDocuments = name, 0, false
	res, err := p.Rerank(ctx, name, &j, time.Time{})
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if err == nil {
		err = s.bad
	}
	if err != nil {
		return nil, fmt.Errorf("calibrating: running the job: %w", err)
	}
	out := make(map[string]quantize.Range, len(names))
	for _, n := range names {
		r := s.ranges[n]
		if r == nil {
			return nil, fmt.Errorf("calibrating: %q: %w", n, ErrNoValues)
		}
		r.Min, r.Max = float32(math.Inf(1)), float32(math.Inf(-1))
		for c := range r.ChannelMin {
			r.ChannelMean[c] /= float64(max(s.counts[n][c], 1))
			if r.ChannelMin[c] > r.ChannelMax[c] { // a channel never finite
				r.ChannelMin[c], r.ChannelMax[c] = 0, 0
				continue
			}
			r.Min, r.Max = min(r.Min, r.ChannelMin[c]), max(r.Max, r.ChannelMax[c])
		}
		if r.Min > r.Max {
			return nil, fmt.Errorf("calibrating: %q: %w", n, ErrNoValues)
		}
		out[n] = *r
	}
	return out, nil
}

// stats accumulates the observed activations.
type stats struct {
	ranges map[string]*quantize.Range
	counts map[string][]int // finite values seen per channel
	bad    error            // an output of an unusable shape
}

func (s *stats) observe(name string, shape []int64, vs []float32) {
	if len(shape) == 0 || shape[len(shape)-1] < 1 || len(vs) == 0 || int64(len(vs))%shape[len(shape)-1] != 0 {
		s.bad = fmt.Errorf("%q has shape %v for %d values", name, shape, len(vs))
		return
	}
	k := int(shape[len(shape)-1]) // ≤ len(vs)
	r := s.ranges[name]
	if r == nil {
		r = &quantize.Range{ChannelMin: make([]float32, k), ChannelMax: make([]float32, k), ChannelMean: make([]float64, k)}
		for c := range k {
			r.ChannelMin[c], r.ChannelMax[c] = float32(math.Inf(1)), float32(math.Inf(-1))
		}
		s.ranges[name] = r
		s.counts[name] = make([]int, k)
	}
	if len(r.ChannelMin) != k {
		s.bad = fmt.Errorf("%q changed its last dimension to %d", name, k)
		return
	}
	r.Rows += len(vs) / k
	for i, v := range vs {
		// ±Inf and NaN are no range.
		if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
			continue
		}
		c := i % k
		s.counts[name][c]++
		r.ChannelMean[c] += float64(v)
		r.ChannelMin[c] = min(r.ChannelMin[c], v)
		r.ChannelMax[c] = max(r.ChannelMax[c], v)
	}
}
