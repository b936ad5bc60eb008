#!/usr/bin/env bash
# make gpu-bundle: everything a GPU run needs, for a machine with no network
# (an air-gapped GPU cluster, or the H200 we benchmark on), into an ignored
# folder, every file at most 60 MiB:
#   rerank, rerank-bench      the binaries, built here (x86-64)
#   tokenizer.json            for `rerank gen-model`, which writes the demo
#                             model there (weights are never copied)
#   lib/libonnxruntime.so.1   ONNX Runtime 1.29.0's core, the one `make ort`
#                             fetches (onnxruntime-node@1.29.0, sha256
#                             pinned): its provider bridge loads CUDA
#   lib/libonnxruntime_providers_shared.so
#                             the bridge's helper
#   libonnxruntime_providers_cuda.so.xz.NN
#                             the CUDA provider (~230 MB), xz-compressed and
#                             split; run.sh reassembles it
#   SHA256SUMS                every file above, and the reassembled provider
#   run.sh, README.md         deploy/gpu/run.sh and README.md
# The CUDA provider and its helper come from the npm package
# com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 (ONNX Runtime 1.29.0's
# Linux GPU release), fetched with `npm pack`, sha256 pinned. Its sibling
# package com.github.asus4.onnxruntime holds a core library built without
# CUDA ("CUDA execution provider is not enabled in this build"), so the core
# is onnxruntime-node's, which has the provider bridge.
#
# Environment (for tests): GPU_BUNDLE_DIR (default .cache/gpu-bundle),
# GPU_BUNDLE_PIECE (bytes per piece, default 60 MiB), GPU_BUNDLE_CUDA_LIB
# (use this file as the CUDA provider instead of the package's),
# GPU_BUNDLE_CORE_LIB (likewise for libonnxruntime.so.1), GPU_BUNDLE_TOKENIZER.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUT="${GPU_BUNDLE_DIR:-$ROOT/.cache/gpu-bundle}"
PIECE="${GPU_BUNDLE_PIECE:-62914560}"
CACHE="$ROOT/.cache/gpu-ort"
VERSION=0.4.9
GPU_PKG="com.github.asus4.onnxruntime.linux-x64-gpu"
# sha256 of the tarball as the npm registry serves it.
GPU_TGZ_SHA256="2b459e0c17f340c92970c10ed86de4f37a3009f93c14053e6ad4334cbb6be412"
CORE_LIB="$ROOT/.cache/onnxruntime/1.29.0/libonnxruntime.so.1" # make ort
export CGO_ENABLED=1

die() { echo "gpu-bundle: $*" >&2; exit 1; }

fetch() { # fetch PACKAGE SHA256 → path of the checked tarball
  local pkg="$1" want="$2" tgz="$CACHE/$1-$VERSION.tgz"
  mkdir -p "$CACHE"
  if [ ! -f "$tgz" ]; then
    command -v npm >/dev/null || die "npm is needed to fetch $pkg"
    (cd "$CACHE" && npm pack --silent "$pkg@$VERSION" >/dev/null)
  fi
  local got; got="$(sha256sum "$tgz" | cut -d' ' -f1)"
  [ "$got" = "$want" ] || die "checksum mismatch for $(basename "$tgz"): got $got, want $want"
  echo "$tgz"
}

rm -rf "$OUT.part" && mkdir -p "$OUT.part/lib"
echo "gpu-bundle: building rerank and rerank-bench"
go build -o "$OUT.part/rerank" ./cmd/rerank
go build -o "$OUT.part/rerank-bench" ./bench
cp "${GPU_BUNDLE_TOKENIZER:-.cache/tokenizer/tokenizer.json}" "$OUT.part/tokenizer.json"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
core="${GPU_BUNDLE_CORE_LIB:-$CORE_LIB}"
[ -f "$core" ] || die "no ONNX Runtime core at $core: run make ort"
cp "$core" "$OUT.part/lib/libonnxruntime.so.1"
if [ -n "${GPU_BUNDLE_CUDA_LIB:-}" ]; then
  cuda="$GPU_BUNDLE_CUDA_LIB"
  printf 'stand-in' > "$OUT.part/lib/libonnxruntime_providers_shared.so"
else
  gpu="$(fetch "$GPU_PKG" "$GPU_TGZ_SHA256")"
  tar -xzf "$gpu" -C "$tmp" package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so package/Plugins/Linux/x64/libonnxruntime_providers_shared.so
  cp "$tmp/package/Plugins/Linux/x64/libonnxruntime_providers_shared.so" "$OUT.part/lib/"
  cuda="$tmp/package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so"
  # What the provider was built against (CUDA 13, cuDNN 9 expected).
  if command -v readelf >/dev/null; then
    echo "gpu-bundle: the CUDA provider needs: $(readelf -d "$cuda" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
  fi
fi
echo "gpu-bundle: compressing the CUDA provider ($(du -m "$cuda" | cut -f1) MB, xz -9)"
sha256sum "$cuda" | sed 's|  .*|  lib/libonnxruntime_providers_cuda.so|' > "$tmp/provider.sha256"
xz -9 -T2 -c "$cuda" | split -b "$PIECE" -d -a 2 - "$OUT.part/libonnxruntime_providers_cuda.so.xz."
cp deploy/gpu/run.sh deploy/gpu/README.md "$OUT.part/"
chmod +x "$OUT.part/run.sh" "$OUT.part/rerank" "$OUT.part/rerank-bench"
(cd "$OUT.part" && find . -type f ! -name SHA256SUMS ! -name SHA256SUMS.provider | sed 's|^\./||' | sort | xargs sha256sum > SHA256SUMS)
cp "$tmp/provider.sha256" "$OUT.part/SHA256SUMS.provider"
MAX=62914560 # 60 MiB: what the copy to the GPU machine takes per file
big="$(find "$OUT.part" -type f -size +"$((MAX / 1024))"k)"
[ -z "$big" ] || die "files over 60 MiB: $big"
rm -rf "$OUT" && mv "$OUT.part" "$OUT"
echo "gpu-bundle: $OUT ($(du -sm "$OUT" | cut -f1) MB, $(find "$OUT" -type f | wc -l) files, none over 60 MiB)"
