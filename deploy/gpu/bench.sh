#!/usr/bin/env bash
# GPU readiness: run the benchmark figures with --device cuda on a machine with
# an NVIDIA GPU. Self-contained and short (well under 5 minutes): it needs
#   - Go and gcc (to build), or a prebuilt bin/rerank and bench binary;
#   - a CUDA-enabled ONNX Runtime 1.29 build: ONNXRUNTIME_LIB pointing at its
#     libonnxruntime.so, with libonnxruntime_providers_cuda.so and
#     libonnxruntime_providers_shared.so beside it (the official
#     onnxruntime-linux-x64-gpu-1.29.0 release archive), CUDA 12 and cuDNN 9;
#   - the demo model (.cache/models/demo; `make demo-model` writes it).
# It prints the same `name: value unit` lines as `make bench`.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${ONNXRUNTIME_LIB:?set ONNXRUNTIME_LIB to a CUDA-enabled libonnxruntime.so (1.29)}"
DEVICE="${DEVICE:-cuda:0}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU visible" >&2; exit 1; }
[ -x bin/rerank ] || go build -o bin/rerank ./cmd/rerank
[ -f .cache/models/demo/model.onnx ] || make demo-model
# The transformers.js peer runs on CPU only; skip it here (--js "").
exec go run ./bench --model .cache/models/demo --rerank bin/rerank --ort-lib "$ONNXRUNTIME_LIB" \
  --device "$DEVICE" --runs 3 --js "" "$@"
