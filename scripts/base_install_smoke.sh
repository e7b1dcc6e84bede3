#!/usr/bin/env bash
# One real install of the BASE package (`pip install grefine`, no extras) into a fresh virtual
# environment, with the other torch build this machine offers (torch 2.13.0+cpu from the local
# wheel folder, torchvision 0.28.0: the lowest versions pyproject.toml allows), then a smoke run,
# offline: `grefine refine --preset tiny`, `grefine plugins`, and the one-line error of a missing
# extra. The main tests (scripts/test.sh) use CI's build, torch 2.14.1 (constraints/ci.txt).
# Called by .ci/run; the venv lives in a temporary folder, removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PY=${PYTHON:-python3}
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
V="$tmp/venv/bin"

"$PY" -m venv "$tmp/venv"
"$V/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# CI's versions for everything but torch/torchvision, so only the torch build differs.
grep -v -E '^(torch|torchvision)==' constraints/ci.txt >"$tmp/constraints.txt"
# Install from a copy of the source (tracked and untracked, not ignored files): a build in the
# checkout would leave build/ there, whose stale files a later build could pick up.
mkdir "$tmp/src"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  xargs -0 cp --parents -t "$tmp/src"
PIP_NO_CACHE_DIR=1 "$V/python" -m pip install --quiet -c "$tmp/constraints.txt" \
  "torch==2.13.0" "torchvision==0.28.0" "$tmp/src" 2> >(grep -v "^WARNING: Location" >&2)

# This machine's wheel mix, not grefine: torchvision 0.28.0 exists only as a CUDA build, whose
# compiled extension cannot load next to the CPU torch 2.13.0; scripts/torchvision_shim.py
# declares the two operator schemas it would have registered (see its docstring).
site="$("$V/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp scripts/torchvision_shim.py "$site/sitecustomize.py"
install_s=$((SECONDS - start))

cd "$tmp"  # from here on, grefine comes from the venv, never from the source tree
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$V/python" - <<'EOF'
import importlib.util
import sys

import sitecustomize
import torch
import torchvision

import grefine_core

print(f"smoke venv: torch {torch.__version__}, torchvision {torchvision.__version__} "
      f"(shim: {sitecustomize.MODE}), grefine {grefine_core.__version__} from {grefine_core.__file__}")
assert "site-packages" in grefine_core.__file__, grefine_core.__file__
extras = ["onnxruntime", "onnx", "onnxscript", "spacy", "matplotlib", "skvideo", "brisque", "ray"]
present = [m for m in extras if importlib.util.find_spec(m) is not None]
sys.exit(f"the base install holds packages of the extras: {present}" if present else 0)
EOF

"$V/grefine" refine "$ROOT/examples/images/cat_table.png" --prompt "a red cat on a wooden table" \
  --preset tiny --out "$tmp/out" --quiet
ls "$tmp/out" | grep -q '\.png$' || { echo "grefine refine wrote no image" >&2; exit 1; }
"$V/grefine" plugins

status=0
"$V/grefine" parse --parser spacy "a red cat" 2>"$tmp/err" || status=$?
if [ "$status" -ne 2 ] || ! grep -q 'pip install "grefine\[spacy\]"' "$tmp/err"; then
  echo "a missing extra should exit 2 naming the pip command; got $status: $(cat "$tmp/err")" >&2
  exit 1
fi
echo "missing extra: $(cat "$tmp/err")"
echo "base install smoke: OK (install ${install_s}s, total $((SECONDS - start))s, venv $(du -sh "$tmp/venv" | cut -f1))"
