#!/bin/sh
# The main job, on Debian 12 as root, on the built-in RTX 4070 inventory (no GPU
# needed), with NVIDIA's real 535.261.03 userspace and MPS daemon:
#   1. admission: a Blender render is admitted, a ComfyUI worker refused with the
#      numbers, the render stops and its share returns, two workers are admitted
#      and a third refused; without the MPS daemon, or asking more than its
#      profile, a worker is refused with the reason;
#   2. the desktop as it runs: a render waits in the queue and starts, by
#      priority, when the share frees; a game launched as Steam launches it
#      pauses the render and the worker through the watchdog, and its end
#      resumes them; a rootless user's worker is admitted through the broker; a
#      host process on the GPU outside admission is named unauthorized.
# `gpuwarden status` at each step. What runs on the GPU comes from a file the
# script writes, standing in for NVML (no GPU here). Leaves the host as it found
# it: containers, the demo user, the spec, hooks, device nodes it made, daemons.
set -eu
cd "$(dirname "$0")/.."
START=$(date +%s)
say() { printf '\033[1m%s\033[0m\n' "$*"; }
say "Setting up (Podman, runc, busybox, Debian's non-free archive; quick once done)"
scripts/setup.sh
say "Building gpuwarden and gpuwarden-hook (the first build takes a few minutes)"
scripts/build.sh
FIX=$PWD/target/fixtures/driver-535.261.03
[ -f "$FIX/.complete" ] || say "Downloading NVIDIA's 535.261.03 userspace packages into $FIX (about 200 MB, once)"
scripts/driver-root.sh "$FIX"
BUILT=$(date +%s)

# Everything the demo runs from, where the rootless demo user can reach it too
# (this checkout may sit under a folder only root can enter): hard links where possible.
WORK=$(mktemp -d /var/tmp/gpuwarden-demo.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/bin"
for b in gpuwarden gpuwarden-hook gpuwarden-launch; do ln "target/dist/$b" "$WORK/bin/$b" 2>/dev/null || cp "target/dist/$b" "$WORK/bin/$b"; done
cp -al "$FIX/root" "$WORK/driver" 2>/dev/null || cp -a "$FIX/root" "$WORK/driver"
BIN=$WORK/bin/gpuwarden
SPEC=/var/run/cdi/gpuwarden-demo.yaml
DEMO_USER=gwdemo
NAMES="gw-demo-render gw-demo-comfy1 gw-demo-comfy2 gw-demo-comfy3 gw-demo-render2 gw-demo-worker"
MADE_NODES=""
remove_containers() { for n in $NAMES; do podman rm -f -t 0 "$n" >/dev/null 2>&1 || true; done; }
cleanup() {
  for p in $(cat "$WORK"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  remove_containers
  if id -u "$DEMO_USER" >/dev/null 2>&1; then
    demo_uid=$(id -u "$DEMO_USER")
    runuser -l "$DEMO_USER" -c 'podman rm -af -t 0' >/dev/null 2>&1 || true
    pkill -u "$DEMO_USER" >/dev/null 2>&1 || true
    sleep 0.5
    userdel -r "$DEMO_USER" >/dev/null 2>&1 || true
    sed -i "/^$DEMO_USER:/d" /etc/subuid /etc/subgid
    # Rootless Podman's runtime folders of a user without a login session.
    rm -rf "/tmp/containers-user-$demo_uid" "/tmp/podman-run-$demo_uid"
  fi
  [ -f "$WORK/config.toml" ] && $BIN --config "$WORK/config.toml" mps stop >/dev/null 2>&1
  for n in $MADE_NODES; do rm -f "$n"; done
  [ -z "${MADE_DRI:-}" ] || rmdir /dev/dri 2>/dev/null || true
  rm -f "$SPEC"
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
remove_containers   # what an interrupted run may have left

mkdir -p "$WORK/rootfs/bin" && cp /bin/busybox "$WORK/rootfs/bin/" && ln -s busybox "$WORK/rootfs/bin/sh"
tar -C "$WORK/rootfs" -cf "$WORK/bb.tar" .
podman image exists localhost/gpuwarden-demo-busybox:latest || podman import -q "$WORK/bb.tar" localhost/gpuwarden-demo-busybox:latest >/dev/null

# The workstation: 4 GiB kept free for Steam, 512 MiB for the desktop; 7.5 GiB to share.
cat > "$WORK/config.toml" <<EOC
inventory = "builtin:rtx4070"
state_dir = "$WORK/state"

[mps]                            # the demo's own daemon folders (default: /run/gpuwarden/mps)
pipe_directory = "$WORK/mps/pipe"
log_directory = "$WORK/mps/log"
shm_directory = "$WORK/mps/shm"

[broker]
socket = "$WORK/broker.sock"

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
    localhost/gpuwarden-demo-busybox:latest sh -c 'sleep 600' 2>"$WORK/$name.err" >/dev/null
}
admitted() { run "$@" || { cat "$WORK/$1.err"; echo "demo: $1 should have been admitted" >&2; exit 1; }; echo "$1 ($2): admitted"; }
refused() {
  if run "$@"; then echo "demo: $1 should have been refused" >&2; exit 1; fi
  grep -q 'gpuwarden: refused' "$WORK/$1.err" || { cat "$WORK/$1.err"; echo "demo: $1 failed, but not by gpuwarden's refusal" >&2; exit 1; }
  echo "$1 ($2): $(grep -o 'gpuwarden: .*' "$WORK/$1.err")"
}

say "Part 1: admission"

step "The GPU (gpuwarden inventory --inventory builtin:rtx4070)"
$GW inventory

step "The CDI spec for NVIDIA's 535.261.03 packages (gpuwarden cdi generate)"
$GW cdi generate --driver-root "$WORK/driver" --dev-root "$FIX" --output "$SPEC"
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
remove_containers

say ""
say "Part 2: the desktop as it runs"

# What runs on the GPU, as NVML would tell the watchdog: pid:name:MiB ..., written atomically.
gpu_runs() {
  procs=""
  for p in "$@"; do
    pid=${p%%:*} rest=${p#*:}; name=${rest%%:*} mib=${rest#*:}
    procs="$procs${procs:+, }{\"pid\": $pid, \"name\": \"$name\", \"used_memory_bytes\": $((mib * 1048576))}"
  done
  $BIN inventory --inventory builtin:rtx4070 --json | sed "s/\"compute_capability\": \"8.9\"/\"compute_capability\": \"8.9\", \"processes\": [$procs]/" > "$WORK/gpus.json.new"
  mv "$WORK/gpus.json.new" "$WORK/gpus.json"
}
pid_of() { podman inspect --format '{{.State.Pid}}' "$1" 2>/dev/null; }
wait_for() { # wait_for WHAT COMMAND...: up to 15 s
  what=$1; shift; i=0
  until "$@" >/dev/null 2>&1; do i=$((i + 1)); [ $i -lt 75 ] || { echo "demo: $what did not happen" >&2; exit 1; }; sleep 0.2; done
}
state_of() { podman inspect --format '{{.State.Status}}' "$1" 2>/dev/null; }
is_state() { [ "$(state_of "$1")" = "$2" ]; }
in_events() { grep -q "$1" "$WORK/state/events.jsonl"; }

step "A render holds 5 GiB; a worker and a second render ask to wait for their share (gpuwarden.io/wait=2m)"
admitted gw-demo-render blender
(run gw-demo-worker comfyui --annotation gpuwarden.io/wait=2m; echo $? > "$WORK/worker.rc") &
wait_for "the worker to queue" sh -c "[ \$($GW status --json | grep -c '\"waits_for\"') -ge 1 ]"
(run gw-demo-render2 blender --annotation gpuwarden.io/wait=2m; echo $? > "$WORK/render2.rc") &
wait_for "the second render to queue" sh -c "[ \$($GW status --json | grep -c '\"waits_for\"') -ge 2 ]"
$GW status

from_queue() { # from_queue NAME PROFILE: its waiting `podman run` ended, admitted
  wait_for "$1 to start" test -f "$WORK/${1#gw-demo-}.rc"
  [ "$(cat "$WORK/${1#gw-demo-}.rc")" = 0 ] || { cat "$WORK/$1.err"; echo "demo: $1 was not admitted" >&2; exit 1; }
  echo "$1 ($2): admitted from the queue"
}

step "The first render ends: the second starts at once (renders come first: [watch] priority); the worker waits on"
podman rm -f -t 0 gw-demo-render >/dev/null
from_queue gw-demo-render2 blender
$GW status

step "The second render ends: the worker starts"
podman rm -f -t 0 gw-demo-render2 >/dev/null
from_queue gw-demo-worker comfyui
admitted gw-demo-render blender --annotation gpuwarden.io/pinned-memory=4GiB
echo "(a render asking 4 GiB of its profile's 5 fits beside the worker)"

step "The watchdog looks every second; a game launched as Steam launches it (its reaper, SteamAppId)"
gpu_runs "$(pid_of gw-demo-worker):python3:2048" "$(pid_of gw-demo-render):blender:3072"
$BIN --config "$WORK/config.toml" watch --interval 1 --inventory "$WORK/gpus.json" 2>"$WORK/watch.log" &
echo $! > "$WORK/watch.pid"
# Stand-ins with the names Steam gives them: its reaper starts the game with the app's id in its environment.
ln -s "$(command -v sleep)" "$WORK/dota2"
cat > "$WORK/reaper" <<'EOS'
#!/bin/sh
app=${2#AppId=}; shift 3
SteamAppId=$app SteamGameId=$app "$@" &
wait
EOS
chmod 755 "$WORK/reaper"
"$WORK/reaper" SteamLaunch AppId=570 -- "$WORK/dota2" 600 &
echo $! > "$WORK/reaper.pid"
wait_for "the game to start" pgrep -P "$(cat "$WORK/reaper.pid")" dota2
GAME=$(pgrep -P "$(cat "$WORK/reaper.pid")" dota2)
gpu_runs "$(pid_of gw-demo-worker):python3:2048" "$(pid_of gw-demo-render):blender:3072" "$GAME:dota2:3072"
wait_for "the watchdog to pause the render" is_state gw-demo-render paused
wait_for "the watchdog to pause the worker" is_state gw-demo-worker paused
podman ps --format '{{.Names}}  {{.Status}}' --filter name=gw-demo- 2>/dev/null
$GW status

step "The game ends: they resume"
kill "$(cat "$WORK/reaper.pid")" "$GAME" 2>/dev/null || true
gpu_runs "$(pid_of gw-demo-worker):python3:2048" "$(pid_of gw-demo-render):blender:3072"
wait_for "the watchdog to resume the render" is_state gw-demo-render running
wait_for "the watchdog to resume the worker" is_state gw-demo-worker running
podman ps --format '{{.Names}}  {{.Status}}' --filter name=gw-demo- 2>/dev/null
grep -E 'paused|resumed' "$WORK/watch.log" | sed 's/^gpuwarden watch: /  /'

step "A host process uses the GPU outside admission: the watchdog names it"
ln -s "$(command -v sleep)" "$WORK/cuda-job"
"$WORK/cuda-job" 600 &
echo $! > "$WORK/job.pid"
gpu_runs "$(pid_of gw-demo-worker):python3:2048" "$(pid_of gw-demo-render):blender:3072" "$(cat "$WORK/job.pid"):cuda-job:1024"
wait_for "the unauthorized event" in_events '"kind":"unauthorized"'
$GW status | sed -n '/^WATCH/,$p'
kill "$(cat "$WORK/job.pid")"

step "A rootless user's worker: their own Podman, admitted through the broker (root), under the same budget"
podman rm -f -t 0 gw-demo-render >/dev/null
useradd -m -s /bin/sh "$DEMO_USER"
echo "$DEMO_USER:400000:65536" >> /etc/subuid
echo "$DEMO_USER:400000:65536" >> /etc/subgid
# Rootless Podman bind-mounts the nodes from their real /dev path.
[ -d /dev/dri ] || { mkdir /dev/dri; MADE_DRI=1; }
for n in nvidia0:195:0 nvidiactl:195:255 nvidia-uvm:511:0 nvidia-uvm-tools:511:1 nvidia-modeset:195:254 dri/card1:226:1 dri/renderD128:226:128; do
  node=/dev/${n%%:*}; rest=${n#*:}
  [ -e "$node" ] || { mknod -m 666 "$node" c "${rest%%:*}" "${rest#*:}"; MADE_NODES="$MADE_NODES $node"; }
done
"$WORK/bin/gpuwarden-hook" broker --config "$WORK/config.toml" 2>"$WORK/broker.log" &
echo $! > "$WORK/broker.pid"
wait_for "the broker to listen" test -S "$WORK/broker.sock"
chmod -R a+rX "$WORK"
runuser -l "$DEMO_USER" -c "podman import -q $WORK/bb.tar localhost/busybox:latest" >/dev/null
runuser -l "$DEMO_USER" -c "podman --runtime runc --hooks-dir $WORK/hooks.d run -d --name worker --network none --device nvidia.com/gpu=comfyui localhost/busybox:latest sh -c 'sleep 600'" >/dev/null
echo "$DEMO_USER's worker (comfyui): admitted through the broker"
$GW status | sed '/^LIVE/,$d'

END=$(date +%s)
say ""
say "Done: the demo took $((END - BUILT)) s after the build ($((END - START)) s in all). Cleaning up."
