#!/bin/sh
# Builds the Debian package target/dist/gpuwarden_VERSION_amd64.deb with
# cargo-deb (metadata in cli/Cargo.toml): the binaries scripts/build.sh makes
# (stripped by cargo-deb), the systemd units and the hooks.d file naming
# /usr/bin, the default config.toml as a conffile, man pages and shell
# completions (tools/docgen), and packaging/debian's maintainer scripts, whose
# #DEBHELPER# cargo-deb fills with debhelper's systemd lines.
# Installs cargo-deb if it is missing. Idempotent.
set -eu
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb
scripts/build.sh
ASSETS=target/deb-assets
rm -rf "$ASSETS"
mkdir -p "$ASSETS/units" "$ASSETS/hooks.d"
cargo run -q --release --locked -p gpuwarden-docgen -- "$ASSETS/doc"
for u in systemd/gpuwarden-*.service systemd/gpuwarden-*.path systemd/gpuwarden-*.socket; do
  sed 's#/usr/local/bin/#/usr/bin/#g' "$u" > "$ASSETS/units/$(basename "$u")"
done
# The stacks, Containerfiles, quadlets, Podman 4.3 units and the Prometheus rules and
# Grafana dashboard, as examples; the two
# scripts the Containerfiles copy are shipped executable, on their own.
mkdir -p "$ASSETS/examples"
cp -r docker podman monitoring kubernetes "$ASSETS/examples/"
rm "$ASSETS/examples/podman/comfyui/comfyui-start" "$ASSETS/examples/podman/blender/blender-render"
target/dist/gpuwarden podman install-hook --print --hook-path /usr/bin/gpuwarden-hook --launcher-path /usr/bin/gpuwarden-launch \
  > "$ASSETS/hooks.d/gpuwarden-precreate.json"
# A failed build leaves no package behind (never an older one in its place).
rm -f target/dist/gpuwarden_*.deb
if ! out=$(cargo deb --no-build -p gpuwarden-cli -o target/dist/ 2>&1); then
  printf '%s\n' "$out" >&2
  echo "deb.sh: cargo deb failed (above)" >&2
  exit 1
fi
printf '%s\n' "$out" | grep -v -e "Only source paths starting with" -e '^target/dist/' >&2 || true
ls target/dist/gpuwarden_*.deb
