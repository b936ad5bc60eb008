// Package calibrate measures what a static int8 rewrite (quantize.Static)
// needs of each activation it quantizes: its range, and its channels'
// ranges and means (for smoothing and bias correction). It runs the fp32
// model, with those activations added to its outputs (quantize.Observe),
// over a calibration job injected and tokenized exactly as a worker serves
// it, one pair per run.
//
// It owns the calibration run only, and may import schemas, inject, model,
// model/quantize and pipeline: it lives beside the pipeline it drives, so
// that model/ never points up at it.
package calibrate
