#!/bin/sh
# Fetches Debian 13 (trixie) packages into a folder without installing them:
# a separate, temporary apt configuration keeps the system's lists on
# bookworm; `apt-get download` then `dpkg -x` into OUT/root, and the names of
# the .deb files into OUT/packages. OUT is replaced whole, or left as it was.
#   scripts/trixie-fetch.sh OUT PACKAGE...
set -eu
OUT=$1
shift
WORK=$(mktemp -d /var/tmp/gpuwarden-trixie.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
mkdir -p "$WORK/state/lists/partial" "$WORK/cache/archives/partial" "$WORK/etc/preferences.d" "$WORK/debs"
cat > "$WORK/etc/sources.list" <<'EOS'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
EOS
APT="-o Dir::State=$WORK/state -o Dir::State::status=/dev/null -o Dir::Cache=$WORK/cache -o Dir::Etc::sourcelist=$WORK/etc/sources.list -o Dir::Etc::sourceparts=- -o Dir::Etc::preferencesparts=$WORK/etc/preferences.d -o APT::Architecture=amd64 -o APT::Sandbox::User=root"
apt-get $APT update -q >/dev/null
(cd "$WORK/debs" && apt-get $APT download "$@" >/dev/null)
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp/root"
for d in "$WORK"/debs/*.deb; do dpkg -x "$d" "$OUT.tmp/root"; done
ls "$WORK/debs" > "$OUT.tmp/packages"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
