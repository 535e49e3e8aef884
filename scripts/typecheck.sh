#!/usr/bin/env bash
# Type-check the public contracts (the Backend protocol and its implementations, the streamer, the server) with
# mypy. The stage folders install as ideal.<stage> through setup.py's package_dir, which mypy cannot follow in an
# editable install, so it checks a throw-away tree of links laid out as the installed package is.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
TREE=$(mktemp -d)
trap 'rm -rf "$TREE"' EXIT
mkdir "$TREE/ideal"
for f in ideal/*; do ln -s "$REPO/$f" "$TREE/ideal/"; done
for stage in avatar export streamer server web; do ln -s "$REPO/$stage" "$TREE/ideal/$stage"; done
cd "$TREE"
exec "$PY" -m mypy --config-file "$REPO/pyproject.toml" --cache-dir "$REPO/.mypy_cache" \
  -m ideal.avatar.backend -m ideal.export.backends -m ideal.export.onnx_backend -m ideal.export.tensorrt_backend -m ideal.export.triton_backend \
  -p ideal.streamer -p ideal.server
