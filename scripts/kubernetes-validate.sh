#!/bin/sh
# Validates Kubernetes manifests offline against the API schema of one
# Kubernetes version, strictly (unknown fields are errors), with PyPI's
# kubernetes-validate, installed once into a virtual environment under
# target/fixtures (it carries the schemas; nothing is fetched when it runs).
#   scripts/kubernetes-validate.sh VERSION FILE...   (e.g. 1.31.0)
set -eu
cd "$(dirname "$0")/.."
VENV=target/fixtures/kubernetes-validate
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  echo "kubernetes-validate.sh: installing kubernetes-validate into $VENV" >&2
  rm -rf "$VENV.tmp"
  python3 -m venv "$VENV.tmp"
  "$VENV.tmp/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' >&2
  rm -rf "$VENV"
  mv "$VENV.tmp" "$VENV"
  # A venv's scripts name its folder: point them at where it now is.
  sed -i "1s|.*|#!$(pwd)/$VENV/bin/python3|" "$VENV/bin/kubernetes-validate"
fi
VERSION=$1
shift
exec "$VENV/bin/kubernetes-validate" --strict -k "$VERSION" "$@"
