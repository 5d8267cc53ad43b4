#!/bin/sh
# Builds localhost/gpuwarden-blender:bookworm for the Blender tests from
# podman/blender/Containerfile, on a Debian 12 root made by debootstrap
# (--variant=minbase, imported as localhost/gpuwarden-debian:bookworm): no
# registry is needed, only Debian's archive. About 1.3 GB; a few minutes the
# first time. Idempotent: an image built from the same Containerfile and
# script is kept (label io.gpuwarden.recipe); the base is reused.
set -eu
cd "$(dirname "$0")/.."
IMAGE=localhost/gpuwarden-blender:bookworm
BASE=localhost/gpuwarden-debian:bookworm
RECIPE=$(cat podman/blender/Containerfile podman/blender/blender-render | sha256sum | cut -c1-16)
if [ "$(podman image inspect --format '{{index .Labels "io.gpuwarden.recipe"}}' "$IMAGE" 2>/dev/null)" = "$RECIPE" ]; then exit 0; fi
if ! podman image exists "$BASE"; then
  command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
  ROOT=$(mktemp -d /var/tmp/gpuwarden-debian.XXXXXX)
  trap 'rm -rf "$ROOT"' EXIT INT TERM
  echo "blender-image.sh: building $BASE (debootstrap, about a minute)" >&2
  debootstrap --variant=minbase bookworm "$ROOT" >/dev/null
  chroot "$ROOT" apt-get clean
  tar -C "$ROOT" -c . | podman import -q - "$BASE" >/dev/null
fi
echo "blender-image.sh: building $IMAGE from podman/blender/Containerfile (Debian's blender; a few minutes)" >&2
podman build -q --network host --build-arg BASE="$BASE" --label io.gpuwarden.recipe="$RECIPE" -t "$IMAGE" podman/blender >/dev/null
