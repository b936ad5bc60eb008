#!/usr/bin/env bash
# The GPU run, from the folder `make gpu-bundle` made (deploy/gpu/README.md):
# verify the bundle, reassemble the CUDA provider, find the CUDA libraries of
# the Python nvidia-* packages, write the demo model, and run the benchmark
# on the GPU: the lines of `make bench`, cuda_vs_cpu_max_abs_diff, and a sweep
# of batch sizes. Needs no network. Extra arguments go to rerank-bench.
# Exit codes: 1 damaged bundle, 3 no GPU, 4 no CUDA libraries.
set -euo pipefail
cd "$(dirname "$0")"
fail() { echo "run.sh: $1" >&2; exit "${2:-1}"; }

# 1. Every file as it was packed.
sha256sum --quiet -c SHA256SUMS || fail "the bundle is damaged: a file's checksum does not match SHA256SUMS (copy it again)"
# 2. The CUDA provider, from its pieces.
if ! sha256sum --quiet -c SHA256SUMS.provider >/dev/null 2>&1; then
  unxz() { if command -v xz >/dev/null; then xz -dc; else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)'; fi; }
  cat libonnxruntime_providers_cuda.so.xz.* | unxz > lib/libonnxruntime_providers_cuda.so.part ||
    fail "reassembling the CUDA provider failed"
  mv lib/libonnxruntime_providers_cuda.so.part lib/libonnxruntime_providers_cuda.so
  sha256sum --quiet -c SHA256SUMS.provider || fail "the reassembled CUDA provider does not match its checksum"
fi
echo "run.sh: bundle verified, CUDA provider reassembled"
# 3. A GPU.
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
  fail "no NVIDIA GPU visible (nvidia-smi is missing or fails): this run needs one" 3
fi
# 4. The CUDA runtime, cuBLAS and cuDNN of the Python nvidia-* packages.
cuda_libs="$(python3 - <<'PY' 2>/dev/null || true
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
dirs = []
for base in nvidia.__path__:
    for root, subdirs, files in os.walk(base):
        if root[len(base):].count(os.sep) > 3:
            subdirs[:] = []
        elif os.path.basename(root) == "lib" and any(".so" in f for f in files):
            dirs.append(root)
print(":".join(sorted(dirs)))
PY
)"
[ -n "$cuda_libs" ] || fail "no CUDA libraries found: install the nvidia-* CUDA 13 wheels (cuda runtime, cuBLAS, cuDNN 9) for python3, or set LD_LIBRARY_PATH and run rerank-bench yourself" 4
export LD_LIBRARY_PATH="$PWD/lib:$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# 5. The demo model, written here (random weights, MiniLM-L12 shape).
[ -f model/demo/model.onnx ] || ./rerank gen-model --size l12 --name demo --tokenizer tokenizer.json --out model/demo
# 6. The figures, then the batch-size sweep.
common=(--model model/demo --rerank ./rerank --ort-lib "$PWD/lib/libonnxruntime.so.1" --device cuda --js "")
./rerank-bench "${common[@]}" --runs 3 --compare-cpu "$@"
./rerank-bench "${common[@]}" --sweep-batch
