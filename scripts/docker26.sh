#!/bin/sh
# Fetches Debian 13's Docker 26 (docker.io, docker-cli, docker-compose 2.x) and
# Podman 5 (for its quadlet generator) into a folder, without installing them:
# a separate, temporary apt configuration for trixie keeps the system's lists
# on bookworm; `apt-get download` then `dpkg -x`. The binaries run from there
# with bookworm's containerd and runc. Idempotent: an existing folder is kept.
#   scripts/docker26.sh [DIR]   (default target/fixtures/trixie)
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-target/fixtures/trixie}
[ -x "$OUT/root/usr/sbin/dockerd" ] && [ -x "$OUT/root/usr/libexec/podman/quadlet" ] && exit 0
echo "docker26.sh: fetching Debian 13's docker.io, docker-cli, docker-compose and podman into $OUT" >&2
WORK=$(mktemp -d /var/tmp/gpuwarden-trixie.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
mkdir -p "$WORK/state/lists/partial" "$WORK/cache/archives/partial" "$WORK/etc/preferences.d" "$WORK/debs"
cat > "$WORK/etc/sources.list" <<'EOS'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
EOS
APT="-o Dir::State=$WORK/state -o Dir::State::status=/dev/null -o Dir::Cache=$WORK/cache -o Dir::Etc::sourcelist=$WORK/etc/sources.list -o Dir::Etc::sourceparts=- -o Dir::Etc::preferencesparts=$WORK/etc/preferences.d -o APT::Architecture=amd64 -o APT::Sandbox::User=root"
apt-get $APT update -q >/dev/null
(cd "$WORK/debs" && apt-get $APT download docker.io docker-cli docker-compose podman >/dev/null)
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp/root"
for d in "$WORK"/debs/*.deb; do dpkg -x "$d" "$OUT.tmp/root"; done
ls "$WORK/debs" > "$OUT.tmp/packages"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
