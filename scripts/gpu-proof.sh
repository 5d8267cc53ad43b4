#!/bin/sh
# The proof on a real GPU: what gpuwarden promises of the GPU itself, checked
# on the hardware in one run. Run as root on a GPU host, from the folder
# scripts/gpu-proof-bundle.sh makes (the binaries and this script; the host
# needs NVIDIA's driver and nothing else: no network, no package is installed).
#
#   ./gpu-proof.sh [OUT_DIR]        (default ./gpu-proof-out)
#
# Each step prints PASS, FAIL or SKIPPED with why; the run ends in one summary
# line and OUT_DIR/figures.json (every step's verdict and figures). A step that
# cannot run here (no GPU, no MPS control binary, no Podman) is SKIPPED with
# its reason, never PASSed. Exit 0 when nothing FAILed.
#
# Steps: 1 inventory (NVML), 2 the CDI spec (generate, validate, what it lacks),
# 3 MPS (pinned memory, threads, a client moving the defaults), 4 NVML per
# process, 5 the watchdog pausing a container over its share, 6 the profile
# device in Podman.
#
# Environment (for tests; a GPU host needs none): GPU_PROOF_BIN (the folder
# holding the binaries; default: this script's), GPU_PROOF_DEV (the folder
# holding the nvidia device nodes; default /dev), GPU_PROOF_LIBCUDA (default
# libcuda.so.1), GPU_PROOF_DRIVER_ROOT (default /).
set -u
BIN=${GPU_PROOF_BIN:-$(cd "$(dirname "$0")" && pwd)}
DEV=${GPU_PROOF_DEV:-/dev}
LIBCUDA=${GPU_PROOF_LIBCUDA:-libcuda.so.1}
DRIVER_ROOT=${GPU_PROOF_DRIVER_ROOT:-/}
OUT=${1:-./gpu-proof-out}
GW="$BIN/gpuwarden"
PROBE="$BIN/gpuwarden-cuda-probe"
mkdir -p "$OUT"
RESULTS="$OUT/steps.jsonl"
: > "$RESULTS"
WORK=$(mktemp -d /tmp/gpu-proof.XXXXXX)
chmod 0755 "$WORK"
CONFIG="$WORK/config.toml"
PASS=0 FAIL=0 SKIP=0
CONTAINERS=""
WATCH_PID=""

cleanup() {
    [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null
    for c in $CONTAINERS; do podman rm -f -t 0 "$c" >/dev/null 2>&1; done
    [ -f "$CONFIG" ] && "$GW" --config "$CONFIG" mps stop >/dev/null 2>&1
    rm -f /etc/cdi/gpuwarden-proof.yaml
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# JSON string of $1.
js() { printf '"%s"' "$(printf '%s' "$1" | tr '\n\t' '  ' | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# step NAME VERDICT WHY [FIGURES_JSON]
step() {
    case $2 in PASS) PASS=$((PASS + 1)) ;; FAIL) FAIL=$((FAIL + 1)) ;; *) SKIP=$((SKIP + 1)) ;; esac
    printf '%-7s %-22s %s\n' "$2" "$1" "$3"
    printf '{"step":%s,"verdict":%s,"why":%s,"figures":%s}\n' "$(js "$1")" "$(js "$2")" "$(js "$3")" "${4:-null}" >> "$RESULTS"
}

# num FIELD < JSON: the first number FIELD holds.
num() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p" | head -n 1; }

echo "gpu-proof: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), kernel $(uname -r); binaries from $BIN"
for b in "$GW" "$PROBE"; do
    [ -x "$b" ] || { echo "gpu-proof: $b is missing: run this from the folder scripts/gpu-proof-bundle.sh made" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "gpu-proof: run it as root (the MPS daemon, the watchdog and rootful Podman need it)" >&2; exit 2; }

MPS_DIR="$WORK/mps"
cat > "$CONFIG" <<EOF
state_dir = "$WORK/state"
[cdi]
driver_root = "$DRIVER_ROOT"
[mps]
pipe_directory = "$MPS_DIR/pipe"
log_directory = "$MPS_DIR/log"
shm_directory = "$MPS_DIR/shm"
[watch]
interval_seconds = 1
state_file = "$WORK/state/watch.json"
events_file = "$WORK/state/events.jsonl"
EOF

GPU=""
if ls "$DEV"/nvidia[0-9]* >/dev/null 2>&1; then GPU=yes; fi
NO_GPU="no GPU here: no $DEV/nvidia0 (not a GPU host, or the driver is not loaded)"

# 1. Inventory through NVML.
INV="$WORK/inventory.json"
if [ -z "$GPU" ]; then
    step inventory SKIPPED "$NO_GPU"
elif "$GW" --config "$CONFIG" inventory --json > "$INV" 2> "$WORK/err"; then
    name=$(sed -n 's/.*"name": *"\([^"]*\)".*/\1/p' "$INV" | head -n 1)
    step inventory PASS "$name through NVML: $(tr -d '\n ' < "$INV" | sed -n 's/.*"driver_version":"\([^"]*\)".*/driver \1/p')" "$(tr -d '\n' < "$INV")"
else
    step inventory FAIL "gpuwarden inventory: $(head -n 1 "$WORK/err")"
fi

# 2. The spec from the real driver install.
SPEC="$WORK/spec.yaml"
if [ -z "$GPU" ]; then
    step cdi-spec SKIPPED "$NO_GPU"
elif ! "$GW" --config "$CONFIG" cdi generate --output "$SPEC" --cdi-dir "$WORK/cdi" --inventory-file "$WORK/inventory-snapshot.json" --no-mps-folders > "$WORK/gen" 2> "$WORK/err"; then
    step cdi-spec FAIL "cdi generate: $(head -n 1 "$WORK/err")"
else
    "$GW" cdi validate "$SPEC" > "$WORK/validate" 2>&1
    valid=$?
    mounts=$(grep -c 'hostPath:' "$SPEC")
    gone=$(grep -c 'does not exist' "$WORK/validate")
    # What the host has that the spec does not mount: the driver's libraries by name.
    lacking=""
    for lib in $(ls "$DRIVER_ROOT"/usr/lib/x86_64-linux-gnu/libnvidia-*.so.* "$DRIVER_ROOT"/usr/lib/x86_64-linux-gnu/libcuda.so.* 2>/dev/null); do
        grep -q "$(basename "$lib")" "$SPEC" || lacking="$lacking $(basename "$lib")"
    done
    figures="{\"host_paths\":$mounts,\"missing_on_host\":$gone,\"not_in_spec\":$(js "${lacking# }")}"
    if [ "$valid" = 0 ] && [ "$gone" = 0 ]; then
        step cdi-spec PASS "$mounts host paths, all present; validate ok; libraries not in the spec:${lacking:- none}" "$figures"
    else
        step cdi-spec FAIL "validate exit $valid, $gone host path(s) missing: $(grep -m 1 -E 'error|does not exist' "$WORK/validate")" "$figures"
    fi
fi

# The probe's JSON line, run with the given environment.
probe() { env "$@" > "$WORK/probe.json" 2> "$WORK/probe.err"; cat "$WORK/probe.json"; }

# 4 first (NVML sees a plain process; under MPS it would see the server): NVML per process.
if [ -z "$GPU" ]; then
    step nvml-per-process SKIPPED "$NO_GPU"
else
    "$PROBE" --library "$LIBCUDA" --max-mib 2048 --kernel-iterations 0 --hold-seconds 15 > "$WORK/held.json" 2> "$WORK/held.err" &
    held=$!
    sleep 8
    "$GW" --config "$CONFIG" inventory --json > "$WORK/inv-live.json" 2> "$WORK/err"
    seen=$(tr -d '\n ' < "$WORK/inv-live.json" | grep -o "{\"pid\":$held,[^}]*}" | num used_memory_bytes)
    wait $held
    allocated=$(num allocated_bytes < "$WORK/held.json")
    if [ -z "$allocated" ]; then
        step nvml-per-process FAIL "the probe did not allocate: $(cat "$WORK/held.json")"
    elif [ -z "$seen" ]; then
        step nvml-per-process FAIL "NVML does not list the probe (pid $held) while it holds $allocated bytes"
    else
        over=$(awk "BEGIN { print ($seen - $allocated) / 1048576 }")
        fig="{\"allocated_bytes\":$allocated,\"nvml_bytes\":$seen,\"overhead_mib\":$over}"
        if awk "BEGIN { exit !($seen >= $allocated && $seen - $allocated <= 1024 * 1048576) }"; then
            step nvml-per-process PASS "NVML shows $seen bytes for the probe's $allocated (context overhead $over MiB)" "$fig"
        else
            step nvml-per-process FAIL "NVML shows $seen bytes for the probe's $allocated" "$fig"
        fi
    fi
fi

# 3. MPS with the real daemon.
MPS=""
if [ -z "$GPU" ]; then
    step mps-pinned-memory SKIPPED "$NO_GPU"
    step mps-threads SKIPPED "$NO_GPU"
    step mps-defaults-guard SKIPPED "$NO_GPU"
elif ! command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
    for s in mps-pinned-memory mps-threads mps-defaults-guard; do step "$s" SKIPPED "nvidia-cuda-mps-control is not installed (NVIDIA's MPS package)"; done
elif ! "$GW" --config "$CONFIG" mps start > "$WORK/mps" 2>&1; then
    for s in mps-pinned-memory mps-threads mps-defaults-guard; do step "$s" FAIL "gpuwarden mps start: $(tail -n 1 "$WORK/mps")"; done
else
    MPS=yes
    C="CUDA_MPS_PIPE_DIRECTORY=$MPS_DIR/pipe"
    limited=$(probe "$C" CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G "$PROBE" --library "$LIBCUDA" --max-mib 6144 --step-mib 128 --kernel-iterations 0 | num allocated_bytes)
    free=$(probe "$C" "$PROBE" --library "$LIBCUDA" --max-mib 6144 --step-mib 128 --kernel-iterations 0 | num allocated_bytes)
    fig="{\"limited_bytes\":${limited:-null},\"unlimited_bytes\":${free:-null}}"
    if [ -z "$limited" ] || [ -z "$free" ]; then
        step mps-pinned-memory FAIL "the probe did not run as an MPS client: $(head -c 300 "$WORK/probe.json")" "$fig"
    elif awk "BEGIN { exit !($limited <= 3 * 1073741824 && $free > 3.5 * 1073741824) }"; then
        step mps-pinned-memory PASS "with 0=3G it allocated $limited bytes and stopped; without, $free (the daemon's default: the largest profile's share; bounded at 6 GiB)" "$fig"
    else
        step mps-pinned-memory FAIL "with 0=3G it allocated $limited bytes; without, $free" "$fig"
    fi
    ms25=$(probe "$C" CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25 "$PROBE" --library "$LIBCUDA" --max-mib 0 | num ms)
    ms100=$(probe "$C" CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=100 "$PROBE" --library "$LIBCUDA" --max-mib 0 | num ms)
    if [ -z "$ms25" ] || [ -z "$ms100" ]; then
        step mps-threads FAIL "the kernel did not run: $(head -c 300 "$WORK/probe.json")"
    else
        ratio=$(awk "BEGIN { printf \"%.2f\", $ms25 / $ms100 }")
        fig="{\"ms_at_25\":$ms25,\"ms_at_100\":$ms100,\"ratio\":$ratio}"
        if awk "BEGIN { exit !($ratio >= 2.5) }"; then
            step mps-threads PASS "the kernel took ${ms25} ms at 25% of the SMs, ${ms100} ms at 100%: ${ratio}x" "$fig"
        else
            step mps-threads FAIL "the kernel took ${ms25} ms at 25%, ${ms100} ms at 100%: only ${ratio}x" "$fig"
        fi
    fi
    "$GW" --config "$CONFIG" watch --inventory "$INV" > "$WORK/watch.log" 2>&1 &
    WATCH_PID=$!
    sleep 3
    start=$(date +%s%N)
    echo "set_default_active_thread_percentage 90" | env "$C" nvidia-cuda-mps-control > /dev/null 2>&1
    restored=""
    for _ in $(seq 1 50); do
        if grep -q mps_defaults_restored "$WORK/state/events.jsonl" 2>/dev/null; then restored=$(( ($(date +%s%N) - start) / 1000000 )); break; fi
        sleep 0.1
    done
    if [ -n "$restored" ]; then
        step mps-defaults-guard PASS "a client set the default to 90%; the watchdog put it back within $restored ms" "{\"restored_ms\":$restored}"
    else
        step mps-defaults-guard FAIL "a client set the default to 90%; no mps_defaults_restored event within 5 s ($(tail -n 1 "$WORK/watch.log"))"
    fi
    kill "$WATCH_PID" 2>/dev/null; wait "$WATCH_PID" 2>/dev/null; WATCH_PID=""
fi

# 5 and 6: the profile device in Podman, and the watchdog pausing a container over its share.
if [ -z "$GPU" ]; then
    step podman-profile SKIPPED "$NO_GPU"
    step watchdog-pause SKIPPED "$NO_GPU"
elif ! command -v podman >/dev/null 2>&1; then
    step podman-profile SKIPPED "Podman is not installed"
    step watchdog-pause SKIPPED "Podman is not installed (the watchdog pauses containers)"
elif [ -z "$MPS" ]; then
    step podman-profile SKIPPED "the MPS daemon is not running (step 3): profile containers are refused without it"
    step watchdog-pause SKIPPED "the MPS daemon is not running (step 3)"
else
    IMAGE=${GPU_PROOF_IMAGE:-}
    if [ -z "$IMAGE" ]; then
        # A root with the probe and what it links: the host's own libc, read-only.
        IMAGE=localhost/gpuwarden-proof:latest
        mkdir -p "$WORK/image/bin"
        cp "$PROBE" "$WORK/image/bin/"
        tar -C "$WORK/image" -c . | podman import --change 'ENTRYPOINT []' - "$IMAGE" > /dev/null 2>&1
    fi
    "$GW" --config "$CONFIG" cdi generate --output /etc/cdi/gpuwarden-proof.yaml --class proof --inventory-file "$WORK/inventory-snapshot.json" --no-mps-folders > /dev/null 2> "$WORK/err"
    "$GW" --config "$CONFIG" podman install-hook --hooks-dir "$WORK/hooks.d" > /dev/null 2>> "$WORK/err"
    run() { podman --hooks-dir "$WORK/hooks.d" run "$@"; }
    name=gpuproof-$$
    CONTAINERS="$CONTAINERS $name"
    if run --rm --name "$name" -v /usr/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:ro -v /lib64:/lib64:ro --device nvidia.com/proof=comfyui "$IMAGE" /bin/gpuwarden-cuda-probe --max-mib 6144 --step-mib 128 --kernel-iterations 0 > "$WORK/ctr.json" 2> "$WORK/ctr.err"; then
        got=$(num allocated_bytes < "$WORK/ctr.json")
        smi=$(run --rm -v /usr/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:ro -v /lib64:/lib64:ro --device nvidia.com/proof=comfyui "$IMAGE" nvidia-smi -L 2>&1 | head -n 1)
        if awk "BEGIN { exit !(${got:-0} > 0 && ${got:-0} <= 3 * 1073741824) }"; then
            step podman-profile PASS "a comfyui container allocated $got bytes and stopped (its share: 3 GiB); nvidia-smi inside: $smi" "{\"allocated_bytes\":$got}"
        else
            step podman-profile FAIL "a comfyui container allocated ${got:-nothing} bytes (its share: 3 GiB)" "$(cat "$WORK/ctr.json")"
        fi
    else
        step podman-profile FAIL "podman run --device nvidia.com/proof=comfyui: $(grep -m 1 -v '^$' "$WORK/ctr.err")"
    fi
    # Over its share: the worker drops its own limit (the daemon's default then binds it) and
    # holds 4.5 GiB busy; the watchdog pauses it (its kernels stop), then it is resumed.
    busy=gpuproof-busy-$$
    CONTAINERS="$CONTAINERS $busy"
    mkdir -p "$WORK/out"
    run -d --name "$busy" -v /usr/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:ro -v /lib64:/lib64:ro -v "$WORK/out:/tmp" --device nvidia.com/proof=comfyui "$IMAGE" \
        /bin/gpuwarden-cuda-probe --drop-mps-limits --max-mib 4608 --kernel-iterations 20000 --hold-seconds 120 --busy --progress /tmp/progress > /dev/null 2> "$WORK/err"
    sleep 10
    "$GW" --config "$CONFIG" watch --once > "$WORK/watch-once.log" 2>&1
    state=$(podman inspect -f '{{.State.Status}}' "$busy" 2>/dev/null)
    a=$(cat "$WORK/out/progress" 2>/dev/null); sleep 3; b=$(cat "$WORK/out/progress" 2>/dev/null)
    podman unpause "$busy" > /dev/null 2>&1
    sleep 3; c=$(cat "$WORK/out/progress" 2>/dev/null)
    fig="{\"state\":$(js "$state"),\"kernels_before\":${a:-null},\"kernels_paused\":${b:-null},\"kernels_resumed\":${c:-null}}"
    if [ "$state" = paused ] && [ "${a:-x}" = "${b:-y}" ] && [ "${c:-0}" -gt "${b:-0}" ] 2>/dev/null; then
        step watchdog-pause PASS "over its share the container was paused (kernels stopped at $b) and ran on once resumed ($c)" "$fig"
    else
        step watchdog-pause FAIL "state $state, kernels $a -> $b paused -> $c resumed: $(grep -m 1 -E 'paused|over' "$WORK/watch-once.log")" "$fig"
    fi
fi

{
    printf '{"host":%s,"kernel":%s,"date":%s,"pass":%d,"fail":%d,"skipped":%d,"steps":[' "$(js "$(uname -n)")" "$(js "$(uname -r)")" "$(js "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" "$PASS" "$FAIL" "$SKIP"
    sed '$!s/$/,/' "$RESULTS"
    printf ']}\n'
} > "$OUT/figures.json"
echo "gpu-proof: $PASS PASS, $FAIL FAIL, $SKIP SKIPPED; figures in $OUT/figures.json"
[ "$FAIL" = 0 ]
