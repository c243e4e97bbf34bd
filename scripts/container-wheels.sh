#!/usr/bin/env bash
# Wheels for an offline image build: streamer (built from this checkout) and every dependency,
# the `base` model's two packages included, for the Python that runs this script.
#
# Usage: scripts/container-wheels.sh OUT_DIR     (PYTHON=... picks the interpreter; default .venv's)
# The Containerfile installs from OUT_DIR when it is the build context's `wheels/` directory.
# The image's Python must match this one's minor version (Debian 12 and python:3.11-slim: 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/container-wheels.sh OUT_DIR}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
# pip's cache keeps the downloads: a second run only rebuilds streamer's own wheel.
"$PY" -m pip wheel --quiet --wheel-dir "$OUT" ".[base]"
ls "$OUT"/streamer-*.whl >/dev/null
# Debug info in extension modules is a tenth of the image (scripts/strip_wheels.py says why).
"$PY" scripts/strip_wheels.py "$OUT"
