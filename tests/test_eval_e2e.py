"""End to end: ``grefine eval refine`` with the tiny preset over examples/, and the Table 8 ablations."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from grefine_core.app.cli import main

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "examples" / "prompts.csv"
METRICS = [
    "psnr_outside",
    "ssim_outside",
    "masked_fraction",
    "color_shift",
    "seam_strength",
    "brisque",
]

pytestmark = pytest.mark.slow


def eval_tiny(out: Path) -> int:
    return main(
        ["eval", "refine", "--images", str(MANIFEST), "--presets", "tiny", "--metrics",
         ",".join(METRICS), "--out", str(out), "--limit", "2", "--quiet"]
    )  # fmt: skip


def test_eval_refine_tiny_over_examples_writes_csv_table_and_plots(tmp_path, capsys):
    out = tmp_path / "eval"
    code = eval_tiny(out)
    assert code == 0, capsys.readouterr().err
    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"tiny"}
    assert {r["image"] for r in rows} == {"images/cat_table.png", "images/fisherman_portrait.png"}
    assert sorted({r["metric"] for r in rows}) == sorted(METRICS)
    assert len(rows) == 2 * len(METRICS)
    fraction = [float(r["after"]) for r in rows if r["metric"] == "masked_fraction"]
    assert all(0.0 <= f <= 1.0 for f in fraction)
    table = (out / "table.md").read_text()
    row = next(line for line in table.splitlines() if "tiny" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0].strip("`*") == "tiny" and len(cells) == len(METRICS) + 2
    assert "PSNR" in table.upper() and "Neg. opt." in table
    summary = json.loads((out / "summary.json").read_text())
    assert "tiny" in json.dumps(summary)
    for metric in METRICS:
        assert Image.open(out / "plots" / f"{metric}.png").size[0] > 100
    sheets = sorted((out / "contact").glob("*.png"))
    assert len(sheets) == 2 and Image.open(sheets[0]).size[0] > 200
    assert "(2 runs computed, 0 reused)" in capsys.readouterr().out
    # Re-running resumes: nothing is recomputed, the CSV is unchanged.
    before = (out / "per_image.csv").read_text()
    assert eval_tiny(out) == 0
    assert "(0 runs computed, 2 reused)" in capsys.readouterr().out
    assert (out / "per_image.csv").read_text() == before


def test_table8_ablations_run_from_config_only(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_ablations
    finally:
        sys.path.pop(0)
    out = tmp_path / "abl"
    code = run_ablations.main(
        ["--out", str(out), "--limit", "1", "--metrics", "psnr_outside,masked_fraction"]
    )
    assert code == 0, capsys.readouterr().err
    table = (out / "table.md").read_text()
    for row in ("1_full", "2_aq_only", "3_pq_only", "4_stage1_only"):
        assert row in table
    status = {}
    for record in (out / "runs").glob("*/*/refined.json"):
        trace = json.loads(record.read_text())["trace"]
        status[record.parent.parent.name] = {t["slot"]: t["status"] for t in trace}
    assert set(status) == {"1_full", "2_aq_only", "3_pq_only", "4_stage1_only"}
    assert (
        status["2_aq_only"]["perceptual"] == "skipped" and status["2_aq_only"]["alignment"] == "ran"
    )
    assert (
        status["3_pq_only"]["alignment"] == "skipped" and status["3_pq_only"]["perceptual"] == "ran"
    )
    assert status["4_stage1_only"]["stage2"] == "skipped"
    assert status["1_full"]["stage2"] == "ran" and status["1_full"]["alignment"] == "ran"
