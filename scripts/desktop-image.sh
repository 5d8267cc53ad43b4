#!/bin/sh
# Builds localhost/gpuwarden-desktop:bookworm, a Debian 12 desktop's system
# layer for the tests that boot systemd for real (tests/desktop.rs): systemd as
# PID 1, Podman 4.3 with its default runtime crun, rootless Podman and login
# sessions (machinectl shell), and NVIDIA's 535 userspace with its real MPS
# daemon, from Debian's non-free archive. No GPU, no kernel module: the tests
# make the device nodes. Booted with `podman run --privileged --systemd=always`.
# About 500 MB; two minutes the first time. Idempotent: an image built by this
# same script is kept (label io.gpuwarden.recipe).
#   scripts/desktop-image.sh [IMAGE]
set -eu
cd "$(dirname "$0")/.."
IMAGE=${1:-localhost/gpuwarden-desktop:bookworm}
RECIPE=$(sha256sum < scripts/desktop-image.sh | cut -c1-16)
if [ "$(podman image inspect --format '{{index .Labels "io.gpuwarden.recipe"}}' "$IMAGE" 2>/dev/null)" = "$RECIPE" ]; then exit 0; fi
command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
ROOT=$(mktemp -d /var/tmp/gpuwarden-desktop.XXXXXX)
trap 'umount "$ROOT/proc" 2>/dev/null || true; rm -rf "$ROOT"' EXIT INT TERM
echo "desktop-image.sh: building $IMAGE (debootstrap and Debian's packages, about two minutes)" >&2
# Podman's default runtime on Debian is crun (podman depends on crun | runc).
SYSTEM=systemd,systemd-sysv,dbus,dbus-user-session,libpam-systemd,systemd-container,podman,crun,conmon,uidmap,slirp4netns,fuse-overlayfs,iptables,iproute2,procps,ca-certificates,containernetworking-plugins,busybox-static,login,passwd
debootstrap --variant=minbase --components=main,contrib,non-free,non-free-firmware --include="$SYSTEM" bookworm "$ROOT" http://deb.debian.org/debian >/dev/null
mount -t proc proc "$ROOT/proc"
# NVIDIA's userspace as a desktop has it (libcuda, NVML, nvidia-smi, the MPS daemon); no kernel module.
chroot "$ROOT" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libcuda1 libnvidia-ml1 nvidia-smi nvidia-cuda-mps >/dev/null && apt-get clean'
umount "$ROOT/proc"
# Podman inside a container: vfs storage (no overlay on overlay), a bridge off the host's 10.88.
cat > "$ROOT/etc/containers/storage.conf" <<'EOS'
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOS
sed -i 's#10\.88\.#10.89.#g' "$ROOT"/etc/cni/net.d/*.conflist 2>/dev/null || true
# This test host runs cgroup v1. A systemd inside a container there cannot delegate
# scopes: with Podman's systemd manager, crun's containers all stay in the outer
# cgroup, and one container's exit kills every other one (seen: `podman run --rm ...
# exit 3` killed two others with SIGKILL). The cgroupfs manager gives each its own
# cgroup. A desktop (cgroup v2 under systemd) keeps Podman's default.
mkdir -p "$ROOT/etc/containers"
printf '[engine]\ncgroup_manager = "cgroupfs"\n' > "$ROOT/etc/containers/containers.conf"
# A desktop user with subordinate ids, for rootless Podman from a login session.
chroot "$ROOT" useradd -m -s /bin/sh -u 1000 desk
echo desk:200000:65536 >> "$ROOT/etc/subuid"
echo desk:200000:65536 >> "$ROOT/etc/subgid"
# Nothing the tests do not need: no getty on a console that is not there.
rm -f "$ROOT/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
echo gpuwarden-desktop > "$ROOT/etc/hostname"
tar -C "$ROOT" -c . | podman import -q --change 'CMD ["/sbin/init"]' --change "LABEL io.gpuwarden.recipe=$RECIPE" - "$IMAGE" >/dev/null
rm -rf "$ROOT"
echo "desktop-image.sh: built $IMAGE" >&2
