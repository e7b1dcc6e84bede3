#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite plus the linters. Offline, CPU only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" -m pytest -q "$@"
