#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library (CPU, linux/x64) from the npm package
# onnxruntime-node, checks its pinned sha256 and extracts it into an ignored cache.
# Idempotent: once the library is cached it touches no network.
#
# We use `npm pack` (download the tarball only) rather than `npm install`, whose
# install script downloads CUDA files and fails on an offline machine.
set -euo pipefail

VERSION="${ORT_VERSION:-1.29.0}"
# sha256 of onnxruntime-node-1.29.0.tgz as served by the npm registry.
TGZ_SHA256="cfdfb45ec4044b1fdca43e5d2e180fb6817e649ff8ad1e0dfc90e18e51b67037"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${ORT_CACHE_DIR:-$ROOT/.cache/onnxruntime/$VERSION}"
LIB="$DEST/libonnxruntime.so.1"

if [ -f "$LIB" ]; then
  echo "onnxruntime $VERSION: $LIB (cached)"
  exit 0
fi
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "fetch-ort: only linux/x86_64 is packaged here; set ONNXRUNTIME_LIB to your libonnxruntime" >&2; exit 1 ;;
esac
command -v npm >/dev/null || { echo "fetch-ort: npm is needed to fetch ONNX Runtime (or set ONNXRUNTIME_LIB)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching onnxruntime-node@$VERSION with npm pack ..."
(cd "$tmp" && npm pack --silent "onnxruntime-node@$VERSION" >/dev/null)
tgz="$tmp/onnxruntime-node-$VERSION.tgz"
got="$(sha256sum "$tgz" | cut -d' ' -f1)"
if [ "$VERSION" = "1.29.0" ] && [ "$got" != "$TGZ_SHA256" ]; then
  echo "fetch-ort: checksum mismatch for onnxruntime-node-$VERSION.tgz: got $got, want $TGZ_SHA256" >&2
  exit 1
fi
tar -xzf "$tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
mkdir -p "$DEST"
mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$LIB.part"
mv "$LIB.part" "$LIB"
echo "onnxruntime $VERSION: $LIB"
