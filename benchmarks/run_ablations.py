"""The paper's Table 8 ablations (PQ+AQ with stages 1+2; AQ only; PQ only; stage 1 only) in one command.

Each row is a config file in ``benchmarks/ablations/`` that toggles plugins (``disable = [...]``) on top
of the ``tiny`` preset; ``GREFINE_PRESET=paper`` runs the same rows with real weights (GPU). Runs
``grefine eval refine`` over the images and prints the Markdown table it writes::

    python benchmarks/run_ablations.py                       # tiny preset, examples/, out/ablations
    GREFINE_PRESET=paper python benchmarks/run_ablations.py --images my_set.csv --device cuda

With the tiny preset the numbers prove the plumbing only, not the quality of any method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OFFLINE_METRICS = "psnr_outside,ssim_outside,masked_fraction,color_shift,seam_strength,brisque,niqe"


def main(argv: list[str] | None = None) -> int:
    from grefine_core.app.cli import main as grefine_main

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default=str(HERE.parent / "examples" / "prompts.csv"))
    p.add_argument("--out", default="out/ablations")
    p.add_argument("--metrics", default=OFFLINE_METRICS)
    p.add_argument("--limit", type=int)
    p.add_argument("--device", choices=["cpu", "cuda"])
    args = p.parse_args(argv)
    rows = sorted((HERE / "ablations").glob("*.toml"))
    cmd = [
        "eval",
        "refine",
        "--images",
        args.images,
        "--presets",
        ",".join(map(str, rows)),
        "--metrics",
        args.metrics,
        "--out",
        args.out,
    ]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.device:
        cmd += ["--device", args.device]
    code = grefine_main(cmd)
    table = Path(args.out) / "table.md"
    if table.is_file():
        print(table.read_text(encoding="utf-8"))
    return code


if __name__ == "__main__":
    sys.exit(main())
