#!/usr/bin/env bash
# Create the virtual environment (.venv, or $GREFINE_VENV) if missing and install grefine with all
# its extras, its test tools and the two example plugins, at the versions CI tests
# (constraints/ci.txt; pyproject.toml itself declares ranges).
# Uses pip (not uv/poetry): torch comes from the local wheel folder/mirror where pip is configured so.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# Every extra. ONNX Runtime: the GPU build on Linux x86-64 (it runs on a CPU too, and the tests of
# the fallback from its CUDA/TensorRT providers need it), the CPU build ([all]) elsewhere. Never
# both: they install the same `onnxruntime` module, so one installed over the other breaks it.
extras="all,dev"
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] ||
  "$VENV/bin/python" -m pip show --quiet onnxruntime-gpu >/dev/null 2>&1; then
  extras="onnx-gpu,spacy,eval,ray,ui,dev"
fi
"$VENV/bin/python" -m pip install --quiet -c constraints/ci.txt -e ".[$extras]" \
  -e ./examples/grefine-example-refiner -e ./examples/grefine-example-parser
echo "grefine installed in $VENV (extras: $extras)"
