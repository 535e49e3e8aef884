#!/usr/bin/env bash
# Install everything the tests need and run the whole suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "cpu,test"
bash scripts/system_deps.sh
PY=${PYTHON:-python3}
"$PY" -m ruff check .          # lint policy: pyproject.toml [tool.ruff]
bash scripts/typecheck.sh      # types of the public contracts: pyproject.toml [tool.mypy]
exec "$PY" -m pytest -q "$@"
