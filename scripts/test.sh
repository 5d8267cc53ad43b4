#!/bin/sh
# Runs every test of gpuwarden on Debian 12, as root: set-up, unit tests,
# the CLI, NVIDIA's real userspace packages, Podman end to end, ledger stress.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked 2>&1
