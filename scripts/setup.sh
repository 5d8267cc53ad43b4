#!/bin/sh
# Installs everything gpuwarden's demo and tests need on Debian 12, as root.
# Idempotent: what is already there is left alone.
set -eu
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (it installs Debian packages)" >&2; exit 1; }

# NVIDIA's userspace lives in Debian's non-free archive.
SOURCES=/etc/apt/sources.list.d/debian-nonfree.sources
if [ ! -f "$SOURCES" ]; then
  cat > "$SOURCES" <<'EOS'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
  NEED_UPDATE=1
fi

# gcc and libc6-dev: linking (the static hook needs libc.a), and the Triton test's cc;
# nvidia-cuda-mps: NVIDIA's real MPS control daemon; systemd: systemd-analyze for the units;
# docker.io, docker-compose: Docker 20.10 and docker-compose 1.29 for the runtime shim
# (Docker 26 comes from Debian 13's packages, unpacked by scripts/docker26.sh, not installed);
# debootstrap: the Debian root the Blender image is built on; prometheus: promtool for the metrics;
# uidmap, slirp4netns, fuse-overlayfs: rootless Podman (newuidmap for subordinate ids);
# lintian: the package's checks (tests/deb.rs).
# protobuf-compiler: protoc, for the gRPC code of the device plugin and the CRI tests.
# python3-venv: the Kubernetes manifests' schema check (scripts/kubernetes-validate.sh).
PACKAGES="podman runc busybox-static protobuf-compiler python3-venv ca-certificates gcc libc6-dev nvidia-cuda-mps systemd docker.io docker-compose debootstrap prometheus uidmap slirp4netns fuse-overlayfs lintian"
MISSING=""
for p in $PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || MISSING="$MISSING $p"
done
if [ -n "$MISSING" ] || [ -n "${NEED_UPDATE:-}" ] || ! apt-cache show libcuda1 >/dev/null 2>&1; then
  apt-get update -q
fi
if [ -n "$MISSING" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $MISSING
fi

command -v cargo >/dev/null 2>&1 || {
  echo "setup.sh: cargo not found: install Rust 1.86 or later (https://rustup.rs), then run this again" >&2
  exit 1
}

# The unprivileged user the rootless tests run Podman as, with subordinate ids.
ROOTLESS=gwrootless
id -u "$ROOTLESS" >/dev/null 2>&1 || useradd -m -s /bin/sh "$ROOTLESS"
grep -q "^$ROOTLESS:" /etc/subuid || echo "$ROOTLESS:300000:65536" >> /etc/subuid
grep -q "^$ROOTLESS:" /etc/subgid || echo "$ROOTLESS:300000:65536" >> /etc/subgid

# A second one, the hostile local user of tests/hostile.rs: it attacks gwrootless's share.
OTHER=gwother
id -u "$OTHER" >/dev/null 2>&1 || useradd -m -s /bin/sh "$OTHER"
grep -q "^$OTHER:" /etc/subuid || echo "$OTHER:500000:65536" >> /etc/subuid
grep -q "^$OTHER:" /etc/subgid || echo "$OTHER:500000:65536" >> /etc/subgid
