#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole G-Refine pipeline offline:
# 1. the planted-truth scenes (examples/oracle/) with the `oracle` preset: where and why the method
#    refines, on images whose answer is known; it proves the logic, NOT the quality;
# 2. the example images with the `tiny` preset: random-weight models, it proves the plumbing, NOT
#    the quality.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
OUT=${1:-out/demo}
echo "== planted-truth scenes (oracle preset; stage 2 off so the pictures show where stage 1 worked)"
"$VENV/bin/grefine" refine --prompt-file examples/oracle/prompts.csv --preset oracle \
  --disable pasd --out "$OUT/oracle"
"$VENV/bin/python" - "$OUT/oracle" <<'PY'
import json, sys
from pathlib import Path

for report in sorted(Path(sys.argv[1]).glob("*.json")):
    r = json.loads(report.read_text())
    defects = ", ".join(f"{d['text']} ({d['kind']})" for d in r["alignment"]["defects"]) or "none"
    verdict = "high quality: unchanged" if r["high_quality"] else f"mask {r['mask']['fraction']:.0%}"
    print(f"  {report.stem:13s} p={r['perceptual']['score']:.3f} a={r['alignment']['score']:.3f} "
          f"defects: {defects}; {verdict}")
PY
echo "== example images (tiny preset: random weights, plumbing only)"
"$VENV/bin/grefine" refine --prompt-file examples/prompts.csv --preset tiny --out "$OUT/tiny"
echo "Open $OUT/oracle/<scene>_maps/overview.png and $OUT/tiny/<image>_maps/overview.png to see"
echo "input | P | A_defect | mask | output. docs/behaviour.md says what each scene should give."
