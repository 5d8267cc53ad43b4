#!/bin/sh
# Builds gpuwarden's binaries for installing, into target/dist/:
#   gpuwarden       the admin CLI (release; it loads NVML, so it is linked dynamically)
#   gpuwarden-hook  the runtime side, run at every container start (release, linked
#                   statically: no dynamic loader, no libgcc_s; it never dlopens anything)
#   gpuwarden-runtime Docker's runtime shim (release, static, as the hook: it runs on
#                   every runtime call of a container that uses it)
#   gpuwarden-launch the launcher inside containers (release, static: images may have no libc)
#   gpuwarden-device-plugin the Kubernetes device plugin (release; its gRPC stack is its own)
# The hook is built for an explicit --target so that RUSTFLAGS reach only its own
# code, not build scripts and proc-macros. Idempotent: quick when nothing changed.
set -eu
cd "$(dirname "$0")/.."
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
echo "build.sh: building the admin CLI and the static hook, runtime shim and launcher (release; the first build takes a few minutes)" >&2
cargo build --release --locked -p gpuwarden-cli -p gpuwarden-device-plugin
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p gpuwarden-hook -p gpuwarden-launch --target "$TRIPLE"
# Cargo builds where CARGO_TARGET_DIR says; what is installed always goes to target/dist.
BUILT=${CARGO_TARGET_DIR:-target}
mkdir -p target/dist
install -m 0755 "$BUILT/release/gpuwarden" target/dist/gpuwarden
install -m 0755 "$BUILT/release/gpuwarden-device-plugin" target/dist/gpuwarden-device-plugin
install -m 0755 "$BUILT/$TRIPLE/release/gpuwarden-hook" target/dist/gpuwarden-hook
install -m 0755 "$BUILT/$TRIPLE/release/gpuwarden-runtime" target/dist/gpuwarden-runtime
install -m 0755 "$BUILT/$TRIPLE/release/gpuwarden-launch" target/dist/gpuwarden-launch
