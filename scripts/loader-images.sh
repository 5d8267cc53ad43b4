#!/bin/sh
# Builds two images whose dynamic loader is not Debian's, for the loader tests:
#
#   localhost/gpuwarden-lib64:glibc-2.36  glibc built as Fedora, RHEL/Rocky and openSUSE
#       build it (slibdir=/lib64, libdir=/usr/lib64, no multiarch folder): Debian's
#       libc6-amd64:i386 package, whose ld.so --list-diagnostics shows /lib64/,
#       /usr/lib64/, /lib/, /usr/lib/. With busybox, an ld.so.cache made by
#       ldconfig, no /etc/debian_version, and /usr/bin/gpuprobe (dlopen by name).
#   localhost/gpuwarden-musl:1.2          musl's loader (Debian's musl package), as in Alpine.
#
#   scripts/loader-images.sh OUT   -> OUT/lib64.tar, OUT/musl.tar (also for docker import)
#
# Packages are fetched with apt-get download against a separate apt state in OUT,
# so the host's apt configuration and lists are not changed. Idempotent: images
# that exist are kept; a finished OUT is reused.
set -eu
OUT=${1:?usage: loader-images.sh OUT}
LIB64=localhost/gpuwarden-lib64:glibc-2.36
MUSL=localhost/gpuwarden-musl:1.2
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -f "$OUT/.complete" ]; then
  A="$OUT/apt"
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/parts" "$A/debs"
  echo "deb http://deb.debian.org/debian bookworm main" > "$A/sources.list"
  APT="-o Dir::State::Lists=$A/lists -o Dir::Cache=$A/cache -o Dir::Etc::SourceList=$A/sources.list -o Dir::Etc::SourceParts=$A/parts"
  if ! ls "$A"/debs/libc6-amd64_*_i386.deb >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    apt-get -q $APT -o APT::Architectures::=i386 -o APT::Architecture=i386 update >/dev/null
    # shellcheck disable=SC2086
    (cd "$A/debs" && apt-get -q $APT -o APT::Architectures::=i386 -o APT::Architecture=i386 download libc6-amd64:i386 >/dev/null)
  fi
  if ! ls "$A"/debs/musl_*_amd64.deb >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    apt-get -q $APT -o APT::Architectures::=amd64 -o APT::Architecture=amd64 update >/dev/null
    # shellcheck disable=SC2086
    (cd "$A/debs" && apt-get -q $APT -o APT::Architectures::=amd64 -o APT::Architecture=amd64 download musl >/dev/null)
  fi

  busybox_root() { # busybox_root DIR
    mkdir -p "$1/bin" "$1/usr/bin" "$1/etc" "$1/tmp"
    cp /bin/busybox "$1/bin/busybox"
    ln -s busybox "$1/bin/sh"
  }

  rm -rf "$OUT/lib64" "$OUT/musl"
  R="$OUT/lib64"
  busybox_root "$R"
  dpkg-deb -x "$A"/debs/libc6-amd64_*_i386.deb "$R"
  rm -rf "$R/usr/share"
  echo "include /etc/ld.so.conf.d/*.conf" > "$R/etc/ld.so.conf"
  ldconfig -X -r "$R"
  # Linked on this host; its interpreter is /lib64/ld-linux-x86-64.so.2, which in
  # this root is the lib64 glibc's.
  cc -O2 -o "$R/usr/bin/gpuprobe" "$HERE/tests/support/gpuprobe.c"
  [ ! -e "$R/etc/debian_version" ]
  tar -C "$R" -cf "$OUT/lib64.tar.tmp" . && mv "$OUT/lib64.tar.tmp" "$OUT/lib64.tar"

  R="$OUT/musl"
  busybox_root "$R"
  dpkg-deb -x "$A"/debs/musl_*_amd64.deb "$R"
  rm -rf "$R/usr/share"
  tar -C "$R" -cf "$OUT/musl.tar.tmp" . && mv "$OUT/musl.tar.tmp" "$OUT/musl.tar"
  touch "$OUT/.complete"
fi

podman image exists "$LIB64" || podman import -q "$OUT/lib64.tar" "$LIB64" >/dev/null
podman image exists "$MUSL" || podman import -q "$OUT/musl.tar" "$MUSL" >/dev/null
