"""SRCC/PLCC and evaluate_assess on synthetic MOS files with known correlations."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from grefine_metrics import eval_cli
from grefine_metrics.assess import evaluate_assess, read_mos_csv
from grefine_metrics.registry import Metric, MetricRegistry
from grefine_metrics.stats import correlations, fit_logistic4, logistic4, plcc, plcc_logistic, srcc
from PIL import Image

from grefine_core.errors import InputError, UsageError

N = 40
TARGET_R = 0.6


def _designed(n: int = N, r: float = TARGET_R, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores x and MOS y whose Pearson correlation is exactly r: y = r*zx + sqrt(1-r^2)*ze with
    zx, ze standardised and ze orthogonal to zx (then shifted/scaled, which keeps r)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    e = rng.normal(size=n)
    zx = (x - x.mean()) / x.std()
    e = e - e.mean()
    e -= (e @ zx) / (zx @ zx) * zx
    ze = e / e.std()
    y = 3.0 + 0.5 * (r * zx + math.sqrt(1 - r**2) * ze)
    return x, y


def test_plcc_and_srcc_known_values():
    x, y = _designed()
    assert plcc(x, y) == pytest.approx(TARGET_R, abs=1e-12)
    xs = np.arange(1.0, 21.0)
    assert srcc(xs, np.exp(xs / 3)) == pytest.approx(1.0)  # monotone: ranks agree perfectly
    assert srcc(xs, -(xs**3)) == pytest.approx(-1.0)
    assert plcc(xs, np.exp(xs / 3)) < 0.95  # ... but not linearly
    # ties get average ranks: Spearman of [1,2,2,3] vs [1,2,3,4] = Pearson of ranks [1,2.5,2.5,4]
    expected = np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1]
    assert srcc([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(expected)


def test_degenerate_inputs_give_nan_and_nan_pairs_are_dropped():
    assert math.isnan(plcc([1, 2], [1, 2]))
    assert math.isnan(srcc([1, 1, 1, 1], [1, 2, 3, 4]))
    c = correlations([1, 2, math.nan, 4, 5], [2, 4, 100, 8, 10.5])
    assert c["n"] == 4 and c["plcc"] > 0.99
    with pytest.raises(ValueError, match="equal length"):
        plcc([1, 2, 3], [1, 2])


def test_logistic_plcc_linearises_a_saturating_relation():
    x = np.linspace(0, 1, 60)
    y = logistic4(x, 5.0, 1.0, 0.5, 0.08)
    assert plcc(x, y) < 0.97
    params = fit_logistic4(x, y)
    assert params is not None and params[2] == pytest.approx(0.5, abs=1e-3)
    assert plcc_logistic(x, y) == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------- evaluate_assess


def _agiqa3k(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    """An AGIQA-3K-layout data.csv: mos_quality correlates with the score at exactly 0.6 (Pearson),
    mos_align is a monotone function of it (SRCC 1)."""
    x, y = _designed()
    folder = tmp_path / "agiqa"
    folder.mkdir()
    scores: dict[str, float] = {}
    rows = []
    for i in range(N):
        name = f"sd1.5_normal_{i:03d}.jpg"
        Image.new("RGB", (4, 4), (i, i, i)).save(folder / name)
        scores[name] = float(x[i])
        rows.append(
            [
                name,
                f"prompt {i}",
                "adj",
                "",
                "normal",
                repr(float(y[i])),
                "0.5",
                repr(float(np.exp(x[i]))),
                "0.3",
            ]
        )
    with open(folder / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "name",
                "prompt",
                "adj1",
                "adj2",
                "style",
                "mos_quality",
                "std_quality",
                "mos_align",
                "std_align",
            ]
        )
        w.writerows(rows)
    return folder / "data.csv", scores


def test_evaluate_assess_on_the_agiqa3k_layout(tmp_path):
    path, scores = _agiqa3k(tmp_path)
    seen_prompts: list[str] = []

    def score_fn(image: Path, prompt: str) -> dict[str, float]:
        seen_prompts.append(prompt)
        s = scores[image.name]
        return {"pq": s, "aq": -s}

    res = evaluate_assess(
        path, score_fn, out_dir=tmp_path / "out", layout="agiqa3k", progress=False
    )
    assert res.table.mos_columns == ["mos_quality", "mos_align"] and seen_prompts[0] == "prompt 0"
    got = {(r["score"], r["mos"]): r for r in res.correlations}
    assert got[("pq", "mos_quality")]["plcc"] == pytest.approx(TARGET_R, abs=1e-12)
    assert got[("pq", "mos_align")]["srcc"] == pytest.approx(1.0)
    assert got[("aq", "mos_align")]["srcc"] == pytest.approx(-1.0)
    assert got[("pq", "mos_quality")]["n"] == N

    out = tmp_path / "out"
    with open(out / "correlations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["score"], r["mos"]) for r in rows] == [
        ("pq", "mos_quality"),
        ("pq", "mos_align"),
        ("aq", "mos_quality"),
        ("aq", "mos_align"),
    ]
    assert float(rows[0]["plcc"]) == pytest.approx(TARGET_R, abs=1e-12)
    table = (out / "table.md").read_text()
    assert (
        table.splitlines()[0]
        == "| Score | mos_quality SRCC | mos_quality PLCC | mos_align SRCC | mos_align PLCC |"
    )
    assert "| `pq` |" in table and "0.6000" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == N and summary["mos_columns"] == ["mos_quality", "mos_align"]
    with open(out / "scores.csv", newline="") as f:
        score_rows = list(csv.DictReader(f))
    assert len(score_rows) == N and float(score_rows[3]["pq"]) == pytest.approx(
        scores[score_rows[3]["name"]]
    )

    # resume: nothing is scored again
    def fail(image: Path, prompt: str) -> dict[str, float]:
        raise AssertionError("scored again")

    again = evaluate_assess(path, fail, out_dir=out, layout="agiqa3k", progress=False)
    assert again.correlations == res.correlations


def test_aigiqa20k_layout_auto_detection_and_overrides(tmp_path):
    folder = tmp_path / "a20k"
    (folder / "images").mkdir(parents=True)
    x, y = _designed(n=12, r=0.9, seed=3)
    lines = ["name,prompt,mos"]
    for i in range(12):
        Image.new("RGB", (4, 4)).save(folder / "images" / f"{i}.png")
        lines.append(f"{i}.png,p{i},{float(y[i])!r}")
    (folder / "info.csv").write_text("\n".join(lines) + "\n")

    def score_fn(image: Path, prompt: str) -> dict[str, float]:
        return {"pq": float(x[int(image.stem)])}

    for layout in ("aigiqa20k", "auto"):
        res = evaluate_assess(
            folder / "info.csv",
            score_fn,
            images_dir=folder / "images",
            layout=layout,
            progress=False,
        )
        assert res.table.mos_columns == ["mos"] and res.table.prompt_column == "prompt"
        assert res.correlations[0]["plcc"] == pytest.approx(0.9, abs=1e-12)
    # other column names, given explicitly
    (folder / "custom.csv").write_text(
        "file,score_human\n" + "".join(f"{i}.png,{float(y[i])!r}\n" for i in range(12))
    )
    table = read_mos_csv(
        folder / "custom.csv", folder / "images", image_column="file", mos_columns=["score_human"]
    )
    assert (
        table.prompt_column is None
        and table.items[0].prompt == ""
        and table.items[5].mos["score_human"] == y[5]
    )
    res = evaluate_assess(folder / "custom.csv", score_fn, images_dir=folder / "images", image_column="file",
                          mos_columns=["score_human"], logistic=True, progress=False)  # fmt: skip
    assert "plcc_logistic" in res.correlations[0]


def test_assess_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,prompt,mos_quality\na.png,x,high\n")
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(
        InputError, match=r"bad.csv:2: MOS column 'mos_quality' holds 'high', not a number"
    ):
        read_mos_csv(bad)
    (tmp_path / "nomos.csv").write_text("name,prompt\na.png,x\n")
    with pytest.raises(InputError, match="MOS column"):
        read_mos_csv(tmp_path / "nomos.csv")
    (tmp_path / "noimg.csv").write_text("picture,mos\na.png,1\n")
    with pytest.raises(InputError, match="no image column"):
        read_mos_csv(tmp_path / "noimg.csv")
    with pytest.raises(UsageError, match="unknown layout 'koniq'"):
        read_mos_csv(bad, layout="koniq")
    (tmp_path / "missing.csv").write_text("name,mos\na.png,1\nb.png,2\nc.png,3\n")
    with pytest.raises(InputError, match=r"2 of 3 images .* were not found .*b.png, c.png"):
        evaluate_assess(tmp_path / "missing.csv", lambda p, t: {"s": 1.0}, progress=False)
    res = evaluate_assess(
        tmp_path / "missing.csv", lambda p, t: {"s": 1.0}, skip_missing=True, progress=False
    )
    assert res.missing_images == ["b.png", "c.png"] and math.isnan(res.correlations[0]["srcc"])


def test_cli_assess_with_fake_scores_and_a_metric(tmp_path):
    path, scores = _agiqa3k(tmp_path)
    brightness = Metric(
        "brightness", lambda b, a, m, p: float(np.asarray(a.convert("L")).mean()), True
    )
    psnr_like = Metric("fullref", lambda b, a, m, p: 0.0, True, frozenset({"reference"}))
    registry = MetricRegistry([brightness, psnr_like])
    out, err = io.StringIO(), io.StringIO()
    code = eval_cli.main(
        ["assess", "--csv", str(path), "--out", str(tmp_path / "o"), "--layout", "agiqa3k",
         "--scores", "pq", "--metrics", "brightness", "--quiet"],
        score_fn=lambda p, t: {"pq": scores[p.name], "aq": 0.0}, registry=registry, stdout=out, stderr=err,
    )  # fmt: skip
    assert code == 0, err.getvalue()
    assert "| `pq` |" in out.getvalue() and "| `brightness` |" in out.getvalue()
    with open(tmp_path / "o" / "correlations.csv", newline="") as f:
        got = {(r["score"], r["mos"]): float(r["srcc"]) for r in csv.DictReader(f)}
    # image i is grey level i, and mos_align = exp(score): brightness ranks images by index
    assert got[("brightness", "mos_align")] == pytest.approx(
        srcc(np.arange(N), [math.exp(scores[f"sd1.5_normal_{i:03d}.jpg"]) for i in range(N)])
    )
    assert got[("pq", "mos_quality")] == pytest.approx(srcc(*_designed()))

    err = io.StringIO()
    code = eval_cli.main(["assess", "--csv", str(path), "--out", str(tmp_path / "o2"), "--metrics", "fullref", "--scores", "none"],
                         registry=registry, stdout=io.StringIO(), stderr=err)  # fmt: skip
    assert code == 2 and "no-reference" in err.getvalue()
    err = io.StringIO()
    code = eval_cli.main(["assess", "--csv", str(path), "--out", str(tmp_path / "o3"), "--scores", "xq"],
                         registry=registry, stdout=io.StringIO(), stderr=err)  # fmt: skip
    assert code == 2 and "valid: pq, aq, none" in err.getvalue()


def test_cli_assess_resume_scores_what_an_earlier_run_lacked(tmp_path):
    """A first run with ``--scores pq`` and a second with ``--scores pq,aq`` into the same folder:
    the second must compute aq for every image (not silently reuse the pq-only rows)."""
    path, scores = _agiqa3k(tmp_path)
    calls: list[str] = []

    def score_fn(p: Path, t: str) -> dict[str, float]:
        calls.append(p.name)
        return {"pq": scores[p.name], "aq": -scores[p.name]}

    def run(which: str) -> int:
        return eval_cli.main(
            ["assess", "--csv", str(path), "--out", str(tmp_path / "o"), "--layout", "agiqa3k",
             "--scores", which, "--quiet"],
            score_fn=score_fn, registry=MetricRegistry([]), stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip

    assert run("pq") == 0 and len(calls) == N
    with open(tmp_path / "o" / "scores.csv", newline="") as f:
        assert "aq" not in next(csv.reader(f))
    calls.clear()
    assert run("pq,aq") == 0 and len(calls) == N  # every image lacked aq
    with open(tmp_path / "o" / "correlations.csv", newline="") as f:
        got = {(r["score"], r["mos"]): float(r["srcc"]) for r in csv.DictReader(f)}
    assert got[("aq", "mos_align")] == pytest.approx(-1.0)
    calls.clear()
    assert run("pq,aq") == 0 and calls == []  # now complete: nothing scored again
