#!/bin/sh
# The main job, on Debian 12 as root: on the built-in RTX 4070 inventory (no
# GPU needed), write the CDI spec for NVIDIA's real 535.261.03 userspace, then
# let Podman share the GPU under gpuwarden's budget: a Blender render is
# admitted, a ComfyUI worker refused with the numbers, the render stops and
# its share returns, two workers are admitted and a third refused, and a
# worker that asks for more than its profile is refused with the reason.
# Leaves the host as it found it (spec, hooks and containers are removed).
set -eu
cd "$(dirname "$0")/.."
say() { printf '\033[1m%s\033[0m\n' "$*"; }
say "Setting up (Podman, runc, busybox, Debian's non-free archive; quick once done)"
scripts/setup.sh
say "Building gpuwarden and gpuwarden-hook (the first build takes a few minutes)"
scripts/build.sh
BIN=$PWD/target/dist/gpuwarden
FIX=$PWD/target/fixtures/driver-535.261.03
[ -f "$FIX/.complete" ] || say "Downloading NVIDIA's 535.261.03 userspace packages into $FIX (about 200 MB, once)"
scripts/driver-root.sh "$FIX"

WORK=$(mktemp -d /tmp/gpuwarden-demo.XXXXXX)
SPEC=/var/run/cdi/gpuwarden-demo.yaml
NAMES="gw-demo-render gw-demo-comfy1 gw-demo-comfy2 gw-demo-comfy3"
remove_containers() { for n in $NAMES; do podman rm -f -t 0 "$n" >/dev/null 2>&1 || true; done; }
cleanup() {
  remove_containers
  [ -f "$WORK/config.toml" ] && $BIN --config "$WORK/config.toml" mps stop >/dev/null 2>&1
  rm -f "$SPEC"
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
remove_containers   # what an interrupted run may have left

if ! podman image exists localhost/gpuwarden-demo-busybox:latest; then
  mkdir -p "$WORK/rootfs/bin" && cp /bin/busybox "$WORK/rootfs/bin/" && ln -s busybox "$WORK/rootfs/bin/sh"
  tar -C "$WORK/rootfs" -cf "$WORK/bb.tar" . && podman import -q "$WORK/bb.tar" localhost/gpuwarden-demo-busybox:latest >/dev/null
fi

# The workstation: 4 GiB kept free for Steam, 512 MiB for the desktop; 7.5 GiB to share.
cat > "$WORK/config.toml" <<EOC
inventory = "builtin:rtx4070"
state_dir = "$WORK/state"

[mps]                            # the demo's own daemon folders (default: /run/gpuwarden/mps)
pipe_directory = "$WORK/mps/pipe"
log_directory = "$WORK/mps/log"
shm_directory = "$WORK/mps/shm"

[budget.reserves]
steam = "4GiB"
system = "512MiB"
EOC
GW="$BIN --config $WORK/config.toml"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { # run NAME PROFILE [PODMAN-ARGS...]: start a sleeping container with a profile device
  name=$1 profile=$2; shift 2
  podman --runtime runc --hooks-dir "$WORK/hooks.d" run -d --name "$name" --network none \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --device "nvidia.com/gpu=$profile" \
    --annotation "gpuwarden.io/name=${name#gw-demo-}" "$@" \
    localhost/gpuwarden-demo-busybox:latest sh -c 'sleep 600' 2>"$WORK/err" >/dev/null
}
admitted() { run "$@" || { cat "$WORK/err"; echo "demo: $1 should have been admitted" >&2; exit 1; }; echo "$1 ($2): admitted"; }
refused() {
  if run "$@"; then echo "demo: $1 should have been refused" >&2; exit 1; fi
  grep -q 'gpuwarden: refused' "$WORK/err" || { cat "$WORK/err"; echo "demo: $1 failed, but not by gpuwarden's refusal" >&2; exit 1; }
  echo "$1 ($2): $(grep -o 'gpuwarden: .*' "$WORK/err")"
}

step "The GPU (gpuwarden inventory --inventory builtin:rtx4070)"
$GW inventory

step "The CDI spec for NVIDIA's 535.261.03 packages (gpuwarden cdi generate)"
$GW cdi generate --driver-root "$FIX/root" --dev-root "$FIX" --output "$SPEC"
$GW cdi validate "$SPEC"
$GW podman install-hook --hooks-dir "$WORK/hooks.d"

step "The MPS control daemon (NVIDIA's, no GPU needed to answer): its defaults bind every CUDA client"
$GW mps start

step "A Blender render starts (nvidia.com/gpu=blender: 50% of the SMs, 5 GiB)"
admitted gw-demo-render blender
$GW status

step "A ComfyUI worker asks for 25% and 3 GiB"
refused gw-demo-comfy1 comfyui
$GW status

step "The render stops; its share returns"
podman rm -f -t 0 gw-demo-render >/dev/null
podman rm -f -t 0 gw-demo-comfy1 >/dev/null
$GW status

step "Two ComfyUI workers start; a third does not fit"
admitted gw-demo-comfy1 comfyui
admitted gw-demo-comfy2 comfyui
refused gw-demo-comfy3 comfyui
$GW status

step "Without the MPS daemon, a worker would run with no limit on the GPU: it is refused"
$GW mps stop
podman rm -f -t 0 gw-demo-comfy3 >/dev/null
refused gw-demo-comfy3 comfyui
$GW mps start >/dev/null

step "A worker asks for 60% of the SMs, more than its profile allows (--annotation gpuwarden.io/threads=60)"
podman rm -f -t 0 gw-demo-comfy3 >/dev/null
refused gw-demo-comfy3 comfyui --annotation gpuwarden.io/threads=60
echo "(the precreate hook found it; Podman drops a precreate hook's output, so admission said it)"
