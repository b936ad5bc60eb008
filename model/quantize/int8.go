package quantize

import (
	"encoding/binary"
	"math"
)

// smoothing returns the smoothing factors of each activation that has
// channel ranges matching the input size of every weight that reads it.
func smoothing(g *graphProto, opts Options) map[string][]float64 {
	wmax := map[string][]float64{}
	skip := map[string]bool{}
	for i, n := range g.nodes {
		w := g.weights[i]
		if w == nil {
			continue
		}
		x := n.inputs[0]
		rows, cols := w.dims[0], w.dims[1]
		transB := n.transB()
		k := rows
		if transB {
			k = cols
		}
		rg := opts.Ranges[x]
		if int64(len(rg.ChannelMax)) != k || int64(len(rg.ChannelMin)) != k {
			skip[x] = true
			continue
		}
		vals, err := w.float32s()
		if err != nil {
			skip[x] = true
			continue
		}
		m := wmax[x]
		if m == nil {
			m = make([]float64, k)
			wmax[x] = m
		}
		for i, v := range vals {
			row := int64(i) / cols
			if transB {
				row = int64(i) % cols
			}
			m[row] = max(m[row], math.Abs(float64(v)))
		}
	}
	out := map[string][]float64{}
	for x, m := range wmax {
		if skip[x] {
			continue
		}
		rg := opts.Ranges[x]
		f := make([]float64, len(m))
		for k := range f {
			a := max(math.Abs(float64(rg.ChannelMin[k])), math.Abs(float64(rg.ChannelMax[k])))
			f[k] = 1
			if a > 0 && m[k] > 0 {
				f[k] = math.Pow(a, opts.Smooth) / math.Pow(m[k], 1-opts.Smooth)
			}
		}
		out[x] = f
	}
	return out
}

// biasCorrection is what to add to a quantized product's bias so that its
// mean output matches fp32's over the calibration rows, given the
// activation's channel means (nil when there are none): rounding the
// weight W to W_q shifts the mean output by E[x]·(W_q − W), per column.
// Rounding errors of random weights sum to a systematic shift wherever
// activations have a nonzero mean (GELU outputs, LayerNorm offsets); on the
// demo model this correction takes the weight-only agreement from τ 0.90 to
// 0.96. With smoothing, x and W are x/s and s·W.
func biasCorrection(w []float32, wq []byte, scales []float32, rows, cols int64, mean, smooth []float64) []float32 {
	if int64(len(mean)) != rows {
		return nil
	}
	corr := make([]float64, cols)
	for i, v := range w {
		k, c := int64(i)/cols, int64(i)%cols
		m := mean[k]
		if smooth != nil {
			m /= smooth[k]
		}
		deq := float64(int8(wq[i])) * float64(scales[c%int64(len(scales))])
		corr[c] -= m * (deq - float64(v))
	}
	out := make([]float32, cols)
	for c, v := range corr {
		out[c] = float32(v)
	}
	return out
}

// activationParams are the uint8 scale and zero point of a calibrated
// range, widened to hold 0 (so that zero padding is exact), the same
// mapping as DynamicQuantizeLinear's at run time.
func activationParams(rg Range) (float32, byte) {
	lo, hi := min(float64(rg.Min), 0), max(float64(rg.Max), 0)
	if math.IsNaN(lo) || math.IsNaN(hi) || math.IsInf(lo, 0) || math.IsInf(hi, 0) || hi == lo {
		return 1, 0
	}
	scale := (hi - lo) / 255
	zp := math.RoundToEven(max(0, min(255, -lo/scale)))
	return float32(scale), byte(zp)
}

// quantizeWeight maps a [rows, cols] weight to symmetric int8 (zero point 0,
// values in [-127, 127], round half to even) with one scale per column or
// one for the tensor.
func quantizeWeight(w []float32, rows, cols int64, g Granularity) ([]byte, []float32) {
	nScales := cols
	if g == PerTensor {
		nScales = 1
	}
	maxAbs := make([]float64, nScales)
	for i, v := range w {
		k := int64(i) % cols % nScales
		maxAbs[k] = math.Max(maxAbs[k], math.Abs(float64(v)))
	}
	scales := make([]float32, nScales)
	for k, m := range maxAbs {
		if m == 0 {
			m = 1 // an all-zero column: any scale reproduces it
		}
		scales[k] = float32(m / 127)
	}
	q := make([]byte, rows*cols)
	for i, v := range w {
		s := float64(scales[int64(i)%cols%nScales])
		x := math.RoundToEven(float64(v) / s)
		q[i] = byte(int8(max(-127, min(127, x))))
	}
	return q, scales
}

func transpose(w []float32, rows, cols int64) []float32 {
	out := make([]float32, len(w))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = w[i*cols+j]
		}
	}
	return out
}

func float32Bytes(vs []float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}
