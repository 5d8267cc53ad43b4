#!/bin/sh
# Fetches Debian 13's containerd 1.7 (CDI injection through its CRI plugin;
# Debian 12's 1.6 has none) into a folder, without installing it
# (scripts/trixie-fetch.sh). Its containerd, shim and ctr run from there on
# Debian 12 with bookworm's runc. Idempotent: an existing folder is kept.
#   scripts/containerd17.sh [DIR]   (default target/fixtures/containerd17)
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-target/fixtures/containerd17}
[ -x "$OUT/root/usr/bin/containerd" ] && [ -x "$OUT/root/usr/bin/containerd-shim-runc-v2" ] && exit 0
echo "containerd17.sh: fetching Debian 13's containerd into $OUT" >&2
exec scripts/trixie-fetch.sh "$OUT" containerd
