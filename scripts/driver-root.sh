#!/bin/sh
# Builds a driver root from NVIDIA's real 535.261.03 userspace packages
# (Debian's non-free archive), laid out as an installed Debian system: the
# packages unpacked with dpkg -x, the /etc/alternatives links their postinst
# would make, and an ld.so.cache made by ldconfig. Also builds a dev root of
# device nodes (mknod, so root is needed). Nothing outside OUT is changed.
#
#   scripts/driver-root.sh OUT      -> OUT/root (driver root), OUT/dev (dev root)
#
# Idempotent: a finished OUT is left as it is. Downloads are cached in OUT/../debs.
set -eu
OUT=${1:?usage: driver-root.sh OUT}
VERSION=535.261.03
TRIPLET=x86_64-linux-gnu
PACKAGES="libcuda1 libnvidia-ml1 libnvoptix1 libnvidia-rtcore libnvidia-ptxjitcompiler1 libnvidia-nvvm4
libnvidia-encode1 libnvcuvid1 libnvidia-glcore libnvidia-eglcore libegl-nvidia0 libglx-nvidia0 libgles-nvidia2
nvidia-vulkan-icd nvidia-egl-icd nvidia-opencl-icd libnvidia-allocator1 libnvidia-cfg1 nvidia-smi nvidia-cuda-mps
nvidia-egl-common nvidia-vulkan-common"

[ -f "$OUT/.complete" ] && exit 0
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DEBS=$(dirname "$OUT")/debs
mkdir -p "$DEBS"

missing=""
for p in $PACKAGES; do
  ls "$DEBS/${p}_${VERSION}"-*.deb >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  (cd "$DEBS" && apt-get download $missing) || {
    echo "driver-root.sh: cannot download$missing: is Debian's non-free archive configured? (scripts/setup.sh does it)" >&2
    exit 1
  }
fi

rm -rf "$OUT/root.tmp" "$OUT/dev.tmp"
R="$OUT/root.tmp"
mkdir -p "$R"
for p in $PACKAGES; do dpkg -x "$DEBS/${p}_${VERSION}"-*.deb "$R"; done

# What update-alternatives does for the "nvidia" alternative (nvidia-alternative's postinst).
alt() { # alt LINK NAME TARGET
  [ -e "$R$3" ] || return 0
  mkdir -p "$R/etc/alternatives" "$(dirname "$R$1")"
  ln -sfn "$3" "$R/etc/alternatives/$2"
  ln -sfn "/etc/alternatives/$2" "$R$1"
}
CUR=/usr/lib/$TRIPLET/nvidia/current
for lib in libGLX_nvidia.so.0 libEGL_nvidia.so.0 libGLESv1_CM_nvidia.so.1 libGLESv2_nvidia.so.2 libcuda.so.1 libcuda.so \
           libnvcuvid.so.1 libnvcuvid.so libnvidia-allocator.so.1 libnvidia-encode.so.1 libnvidia-ml.so.1 \
           libnvidia-nvvm.so.4 libnvidia-nvvm.so.$VERSION libnvidia-opencl.so.1 libnvidia-ptxjitcompiler.so.1 \
           libnvoptix.so.1 libnvidia-cfg.so.1; do
  alt "/usr/lib/$TRIPLET/$lib" "nvidia--$lib-$TRIPLET" "$CUR/$lib"
done
alt /usr/share/nvidia/nvoptix.bin nvidia--nvoptix.bin "$CUR/nvoptix.bin"
alt /usr/bin/nvidia-smi nvidia--nvidia-smi /usr/lib/nvidia/current/nvidia-smi

# The linker's cache, as ldconfig writes it inside that root (-X: make no links).
mkdir -p "$R/etc/ld.so.conf.d"
echo "include /etc/ld.so.conf.d/*.conf" > "$R/etc/ld.so.conf"
printf '/usr/lib/%s\n/lib/%s\n' "$TRIPLET" "$TRIPLET" > "$R/etc/ld.so.conf.d/$TRIPLET.conf"
ldconfig -X -r "$R"

# Device nodes as the driver makes them (nvidia: major 195; uvm: a dynamic major).
D="$OUT/dev.tmp"
mkdir -p "$D/dri/by-path"
mknod "$D/nvidia0" c 195 0
mknod "$D/nvidiactl" c 195 255
mknod "$D/nvidia-modeset" c 195 254
mknod "$D/nvidia-uvm" c 511 0
mknod "$D/nvidia-uvm-tools" c 511 1
mknod "$D/dri/card1" c 226 1
mknod "$D/dri/renderD128" c 226 128
ln -s ../card1 "$D/dri/by-path/pci-0000:01:00.0-card"
ln -s ../renderD128 "$D/dri/by-path/pci-0000:01:00.0-render"

rm -rf "$OUT/root" "$OUT/dev"
mv "$R" "$OUT/root"
mv "$D" "$OUT/dev"
touch "$OUT/.complete"
