#!/bin/sh
# Builds the kit for the proof on a real GPU into one folder (and a tarball of
# it) to carry to a GPU host that has no network: gpuwarden, gpuwarden-hook,
# gpuwarden-launch (scripts/build.sh's, release), the CUDA probe, and
# gpu-proof.sh. There, as root: tar xzf gpu-proof.tar.gz && gpu-proof/gpu-proof.sh
#   scripts/gpu-proof-bundle.sh [DIR]   (default target/gpu-proof)
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-target/gpu-proof}
scripts/build.sh
cargo build --release --locked -p gpuwarden-cuda-probe
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp"
for b in gpuwarden gpuwarden-hook gpuwarden-launch; do install -m 0755 "target/dist/$b" "$OUT.tmp/$b"; done
install -m 0755 target/release/gpuwarden-cuda-probe "$OUT.tmp/gpuwarden-cuda-probe"
install -m 0755 scripts/gpu-proof.sh "$OUT.tmp/gpu-proof.sh"
git rev-parse --short HEAD > "$OUT.tmp/commit" 2>/dev/null || echo unknown > "$OUT.tmp/commit"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
tar -C "$(dirname "$OUT")" -czf "$OUT.tar.gz" "$(basename "$OUT")"
echo "gpu-proof-bundle.sh: $OUT ($(du -sh "$OUT" | cut -f1)) and $OUT.tar.gz ($(du -sh "$OUT.tar.gz" | cut -f1)); on the GPU host, as root: tar xzf $(basename "$OUT").tar.gz && $(basename "$OUT")/gpu-proof.sh"
