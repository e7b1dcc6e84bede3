#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite plus the linters. Offline, CPU only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The shared reference data (fixtures, PQ prompts, PartiPrompts) is read in place beside the checkout.
if [ -z "${GREFINE_SHARED_DIR:-}" ] && [ -d ../shared ]; then
  export GREFINE_SHARED_DIR="$(cd ../shared && pwd)"
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
