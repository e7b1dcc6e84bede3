#!/usr/bin/env bash
# Create the virtual environment (.venv, or $GREFINE_VENV) if missing and install grefine with its
# test tools and the example plugin.
# Uses pip (not uv/poetry): torch comes from the local wheel folder/mirror where pip is configured so.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --quiet -e ".[dev]" -e ./examples/grefine-example-refiner -e ./examples/grefine-example-parser
echo "grefine installed in $VENV"
