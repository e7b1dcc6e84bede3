#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole G-Refine pipeline offline on the example images with the
# `tiny` preset: random-weight models, so it proves the plumbing, NOT the quality.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
OUT=${1:-out/demo}
"$VENV/bin/grefine" refine --prompt-file examples/prompts.csv --preset tiny --out "$OUT"
echo "Open $OUT/<image>_maps/overview.png to see input | P | A_defect | mask | output."
