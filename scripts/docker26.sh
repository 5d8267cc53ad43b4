#!/bin/sh
# Fetches Debian 13's Docker 26 (docker.io, docker-cli, docker-compose 2.x) and
# Podman 5 (for its quadlet generator) into a folder, without installing them
# (scripts/trixie-fetch.sh). The binaries run from there with bookworm's
# containerd and runc. Idempotent: an existing folder is kept.
#   scripts/docker26.sh [DIR]   (default target/fixtures/trixie)
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-target/fixtures/trixie}
[ -x "$OUT/root/usr/sbin/dockerd" ] && [ -x "$OUT/root/usr/libexec/podman/quadlet" ] && exit 0
echo "docker26.sh: fetching Debian 13's docker.io, docker-cli, docker-compose and podman into $OUT" >&2
exec scripts/trixie-fetch.sh "$OUT" docker.io docker-cli docker-compose podman
