#!/bin/sh
# Builds localhost/gpuwarden-blender:bookworm for the Blender tests: Debian 12
# (debootstrap --variant=minbase) with Debian's blender package (3.4.1, Cycles
# on the CPU), imported into Podman. About 1.6 GB; a few minutes the first time.
# Idempotent: an existing image is kept. Nothing outside its scratch folder changes.
set -eu
IMAGE=localhost/gpuwarden-blender:bookworm
if podman image exists "$IMAGE"; then exit 0; fi
command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
ROOT=$(mktemp -d /var/tmp/gpuwarden-blender.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT INT TERM
echo "blender-image.sh: building $IMAGE (debootstrap, then Debian's blender; a few minutes)" >&2
debootstrap --variant=minbase bookworm "$ROOT" >/dev/null
DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -q --no-install-recommends blender >/dev/null
chroot "$ROOT" apt-get clean
tar -C "$ROOT" -c . | podman import -q - "$IMAGE" >/dev/null
