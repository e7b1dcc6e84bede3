"""evaluate_refine and ``grefine eval refine`` with a fake runner: files, content, resume."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from grefine_metrics import eval_cli
from grefine_metrics.catalog import offline_metrics
from grefine_metrics.evaluate import evaluate_refine, method_labels
from grefine_metrics.manifest import read_manifest
from grefine_metrics.registry import Metric, MetricRegistry
from PIL import Image

from grefine_core.errors import InputError, MissingWeightsError

MASK = (slice(8, 24), slice(8, 24))


def _brightness(before, after, mask, prompt) -> float:
    return float(np.asarray(after.convert("L"), dtype=np.float64).mean())


BRIGHTNESS = Metric("brightness", _brightness, True, frozenset(), "Bright", "mean luminance")


def fake_runner(calls: list | None = None):
    """identity: unchanged, no mask; brighten / darken(.toml): +-30 inside a square mask."""

    def run(method: str, image_path: Path, prompt: str, work_dir: Path):
        if calls is not None:
            calls.append((method, image_path.name))
        if method == "broken" and image_path.name == "b.png":
            raise InputError(f"cannot refine {image_path.name}")
        img = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.int16)
        if method == "identity":
            return image_path, None
        mask = np.zeros(img.shape[:2], bool)
        mask[MASK] = True
        delta = -30 if method.endswith("darken.toml") else 30
        out = img.copy()
        out[mask] = np.clip(out[mask] + delta, 0, 255)
        result = Image.fromarray(out.astype(np.uint8))
        if method == "brighten":
            return result, mask  # a PIL image is saved by the evaluator
        path = work_dir / "out.png"
        result.save(path)
        return path, mask.astype(np.float32)

    return run


@pytest.fixture
def image_set(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, (h, w) in (("a.png", (48, 64)), ("b.png", (48, 64)), ("wide.png", (96, 192))):
        base = rng.integers(60, 180, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(base).save(folder / name)
    (folder / "manifest.csv").write_text(
        "image,prompt\na.png,a red cube\nb.png,a blue cube\nwide.png,\n"
    )
    return folder / "manifest.csv"


def _metrics() -> list[Metric]:
    return [*offline_metrics(), BRIGHTNESS]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_refine_writes_csv_table_summary_plots_and_contact_sheets(image_set, tmp_path):
    items = read_manifest(image_set)
    out = tmp_path / "out"
    methods = ["identity", "brighten", "abl/darken.toml"]
    res = evaluate_refine(items, methods, _metrics(), out, fake_runner(), progress=False)

    # --- per_image.csv
    rows = _rows(res.csv_path)
    assert list(rows[0]) == ["method", "image", "metric", "before", "after", "delta"]
    assert len(rows) == 3 * 3 * len(_metrics())
    cell = {(r["method"], r["image"], r["metric"]): r for r in rows}
    ident = cell[("identity", "a.png", "psnr_outside")]
    assert (ident["before"], ident["after"], ident["delta"]) == ("", "inf", "")
    assert float(cell[("identity", "a.png", "ssim_outside")]["after"]) == 1.0
    assert float(cell[("identity", "a.png", "color_shift")]["after"]) == 0.0
    assert float(cell[("identity", "a.png", "masked_fraction")]["after"]) == 0.0
    assert cell[("identity", "a.png", "seam_strength")]["after"] == "nan"  # no mask, no boundary
    # only the masked square changed: everything outside is identical
    assert cell[("brighten", "b.png", "psnr_outside")]["after"] == "inf"
    assert float(cell[("brighten", "b.png", "masked_fraction")]["after"]) == pytest.approx(
        256 / (48 * 64)
    )
    br = cell[("brighten", "a.png", "brightness")]
    assert float(br["delta"]) == pytest.approx(float(br["after"]) - float(br["before"]))
    assert float(br["delta"]) > 0 and float(cell[("darken", "a.png", "brightness")]["delta"]) < 0
    # NIQE is defined only for the 192x96 image
    assert cell[("identity", "a.png", "niqe")]["after"] == "nan"
    assert math.isfinite(float(cell[("identity", "wide.png", "niqe")]["after"]))
    # the "before" of a no-reference metric is the same for every method
    assert (
        cell[("brighten", "wide.png", "brisque")]["before"]
        == cell[("darken", "wide.png", "brisque")]["before"]
    )

    # --- summary.json
    summary = json.loads(res.summary_path.read_text())
    per = summary["per_method"]
    assert summary["methods"] == ["identity", "brighten", "darken"]
    assert summary["method_sources"]["darken"] == "abl/darken.toml"
    assert per["darken"]["negative_by_metric"]["brightness"] == 3
    assert per["brighten"]["negative_by_metric"]["brightness"] == 0
    assert per["brighten"]["negative_by_metric"]["seam_strength"] == 3  # a hard paste adds a seam
    assert per["identity"]["negative_optimisations"] == 0
    assert "brightness" in per["darken"]["negative_mean_metrics"]
    for m, stats in per.items():
        assert stats["negative_optimisations"] == sum(stats["negative_by_metric"].values()), m
    # counts agree with the CSV
    brighten_neg = sum(
        1
        for r in rows
        if r["method"] == "brighten"
        and r["metric"] == "seam_strength"
        and float(r["after"]) > float(r["before"])
    )
    assert brighten_neg == 3
    assert (
        summary["per_method"]["identity"]["mean_after"]["psnr_outside"] == 100.0
    )  # inf counts as 100 dB
    assert summary["skipped_metrics"] == {} and summary["failures"] == []

    # --- table.md
    table = res.table_path.read_text()
    lines = table.splitlines()
    assert lines[0].startswith(
        "| Method | PSNR-out ↑ | SSIM-out ↑ | dE-out ↓ | Seam ↓ | Mask% | BRISQ ↓ | NIQE ↓ | Bright ↑ | Neg. opt. |"
    )
    orig = lines[2].split("|")
    assert "*Original images*" in orig[1]
    mean_before = np.mean(
        [
            float(cell[("identity", k, "brightness")]["before"])
            for k in ("a.png", "b.png", "wide.png")
        ]
    )
    assert orig[9].strip() == f"{mean_before:.2f}"  # >= 100: two decimals
    row = {ln.split("|")[1].strip(): ln.split("|") for ln in lines[3:6]}
    assert set(row) == {"`identity`", "`brighten`", "`darken`"}
    assert row["`brighten`"][9].strip().startswith("**")  # best brightness
    assert row["`darken`"][9].strip().endswith("†")  # worse than the originals on average
    assert "†" not in row["`identity`"][9]
    neg = per["darken"]
    assert row["`darken`"][-2].strip() == f"{neg['negative_optimisations']}/{neg['comparisons']}"
    assert "Negative optimisation" in table and "Means over 3 images" in table

    # --- plots and contact sheets
    assert sorted(p.name for p in res.plot_paths) == sorted(f"{m.name}.png" for m in _metrics())
    with Image.open(out / "plots" / "brightness.png") as im:
        assert im.size[0] >= 400 and np.asarray(im.convert("L")).std() > 5
    assert sorted(p.name for p in res.contact_paths) == ["a.png", "b.png", "wide.png"]
    with Image.open(out / "contact" / "a.png") as im:
        sheet = np.asarray(im.convert("RGB"), dtype=np.int16)
    size, pad, label = 224, 6, 18
    assert sheet.shape[1] == pad + 4 * (size + pad)  # original + 3 methods

    def panel(col: int, row_: int) -> np.ndarray:
        x = pad + col * (size + pad)
        y = label + pad + row_ * (size + label + pad) + label
        return sheet[y : y + size, x : x + size]

    reddish = lambda p: int(((p[..., 0] - p[..., 1]) > 60).sum())  # noqa: E731
    assert reddish(panel(2, 1)) > 1000  # brighten's mask drawn in red
    assert reddish(panel(1, 1)) == 0  # identity has no mask
    assert np.abs(panel(0, 0) - panel(1, 0)).max() == 0  # identity's result equals the original
    changed = lambda p: int((p.max(axis=2) > 100).sum())  # noqa: E731
    assert changed(panel(1, 2)) == 0  # identity changed nothing ...
    assert changed(panel(2, 2)) > 1000  # ... brighten changed its square (|30| x 4 = 120)


def test_resume_skips_done_pairs_and_computes_only_missing_metrics(image_set, tmp_path):
    items = read_manifest(image_set)
    out = tmp_path / "out"
    metrics = [m for m in offline_metrics() if m.name in ("psnr_outside", "masked_fraction")]
    calls: list = []
    evaluate_refine(
        items,
        ["identity", "brighten"],
        metrics,
        out,
        fake_runner(calls),
        progress=False,
        plots=False,
    )
    assert len(calls) == 6
    first = (out / "per_image.csv").read_bytes()

    calls.clear()
    res = evaluate_refine(
        items,
        ["identity", "brighten"],
        metrics,
        out,
        fake_runner(calls),
        progress=False,
        plots=False,
    )
    assert calls == [] and res.computed == 0 and res.reused == 6
    assert (out / "per_image.csv").read_bytes() == first

    # a new metric: computed from the saved runs, without refining again
    res = evaluate_refine(
        items,
        ["identity", "brighten"],
        [*metrics, BRIGHTNESS],
        out,
        fake_runner(calls),
        progress=False,
        plots=False,
    )
    assert calls == [] and res.computed == 6
    assert len(_rows(out / "per_image.csv")) == 6 * 3

    # a pair lost from the CSV and its run folder: refined again, alone
    rows = [
        r
        for r in _rows(out / "per_image.csv")
        if not (r["method"] == "brighten" and r["image"] == "b.png")
    ]
    with open(out / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for p in (out / "runs" / "brighten" / "b").iterdir():
        p.unlink()
    res = evaluate_refine(
        items,
        ["identity", "brighten"],
        [*metrics, BRIGHTNESS],
        out,
        fake_runner(calls),
        progress=False,
        plots=False,
    )
    assert calls == [("brighten", "b.png")] and res.computed == 1
    assert len(_rows(out / "per_image.csv")) == 6 * 3


def test_resume_never_reuses_a_run_folder_made_for_another_image(tmp_path):
    """``x.jpg`` and ``x.png`` share the slug ``x``: the first listed gets ``runs/m/x``. When a
    changed manifest hands that folder to the other image, its saved run must not be reused."""
    folder = tmp_path / "set"
    folder.mkdir()
    Image.new("RGB", (32, 32), (20, 20, 20)).save(folder / "x.jpg", format="PNG")
    Image.new("RGB", (32, 32), (200, 200, 200)).save(folder / "x.png")
    (folder / "both.csv").write_text("image,prompt\nx.jpg,dark\nx.png,light\n")
    (folder / "png_only.csv").write_text("image,prompt\nx.png,light\n")
    out = tmp_path / "out"
    psnr = [m for m in offline_metrics() if m.name == "psnr_outside"]
    calls: list = []
    evaluate_refine(
        read_manifest(folder / "both.csv"), ["brighten"], psnr, out, fake_runner(calls),
        progress=False, plots=False,
    )  # fmt: skip
    assert json.loads((out / "runs/brighten/x/result.json").read_text())["image"] == "x.jpg"
    calls.clear()
    res = evaluate_refine(
        read_manifest(folder / "png_only.csv"), ["brighten"], [*psnr, BRIGHTNESS], out,
        fake_runner(calls), progress=False, plots=False,
    )  # fmt: skip
    assert calls == [("brighten", "x.png")] and res.computed == 1  # refined again, not reused
    row = next(r for r in _rows(out / "per_image.csv") if r["metric"] == "brightness")
    assert row["image"] == "x.png" and float(row["before"]) == pytest.approx(200.0)
    assert float(row["after"]) > 200.0  # x.png brightened, not x.jpg's dark result


def test_a_metric_that_raises_is_left_out_and_retried_on_resume(image_set, tmp_path):
    items = read_manifest(image_set)
    state = {"broken": True}

    def flaky(before, after, mask, prompt):
        if state["broken"]:
            raise RuntimeError("CUDA out of memory")
        return 1.0

    metrics = [BRIGHTNESS, Metric("flaky", flaky)]
    out = tmp_path / "o"
    res = evaluate_refine(items, ["identity"], metrics, out, fake_runner(), progress=False)
    assert {r["metric"] for r in _rows(res.csv_path)} == {"brightness"}
    assert "CUDA out of memory" in res.summary["metric_errors"]["flaky"]
    state["broken"] = False
    res = evaluate_refine(items, ["identity"], metrics, out, fake_runner(), progress=False)
    flaky_rows = [r for r in _rows(res.csv_path) if r["metric"] == "flaky"]
    assert len(flaky_rows) == 3 and all(float(r["after"]) == 1.0 for r in flaky_rows)
    assert res.summary["metric_errors"] == {}


def test_failures_and_unavailable_metrics_are_reported_not_fatal(image_set, tmp_path):
    items = read_manifest(image_set)
    absent = Metric("absent", _brightness, check=lambda: (False, "pip install absent-metric"))

    def needs_weights(before, after, mask, prompt):
        raise MissingWeightsError("download weights.bin to ~/.cache/x")

    lazy = Metric("lazy", needs_weights)
    res = evaluate_refine(
        items,
        ["identity", "broken"],
        [BRIGHTNESS, absent, lazy],
        tmp_path / "o",
        fake_runner(),
        progress=False,
        plots=False,
    )
    assert res.skipped_metrics == {
        "absent": "pip install absent-metric",
        "lazy": "download weights.bin to ~/.cache/x",
    }
    assert res.failures == [{"method": "broken", "image": "b.png", "error": "cannot refine b.png"}]
    metrics_in_csv = {r["metric"] for r in _rows(res.csv_path)}
    assert metrics_in_csv == {"brightness"}
    table = res.table_path.read_text()
    assert "| Bright ↑ | Neg. opt. |" in table and "absent" not in table.splitlines()[0]
    assert "- `absent`: pip install absent-metric" in table
    assert "- `broken` on `b.png`: cannot refine b.png" in table
    summary = json.loads(res.summary_path.read_text())
    assert summary["per_method"]["broken"]["n"]["brightness"] == 2


def test_method_labels():
    assert method_labels(["paper", "x/abl_no_pq.toml"]) == {
        "paper": "paper",
        "abl_no_pq": "x/abl_no_pq.toml",
    }
    with pytest.raises(Exception, match="would both be called 'a'"):
        method_labels(["a.toml", "d/a.toml"])
    with pytest.raises(Exception, match="no method"):
        method_labels([" "])


# ----------------------------------------------------------------------------- CLI


def _registry() -> MetricRegistry:
    return MetricRegistry([*offline_metrics(), BRIGHTNESS])


def test_cli_refine_end_to_end(image_set, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = eval_cli.main(
        ["refine", "--images", str(image_set), "--presets", "identity,brighten", "--metrics",
         "psnr_outside,brightness", "--out", str(tmp_path / "o"), "--quiet", "--contact-sheets", "1"],
        run_method=fake_runner(), registry=_registry(), stdout=out, stderr=err,
    )  # fmt: skip
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "| Method | PSNR-out ↑ | Bright ↑ | Neg. opt. |" in text and "`brighten`" in text
    assert "6 runs computed, 0 reused" in text
    assert sorted(p.name for p in (tmp_path / "o" / "contact").iterdir()) == ["a.png"]
    assert sorted(p.name for p in (tmp_path / "o" / "plots").iterdir()) == [
        "brightness.png",
        "psnr_outside.png",
    ]


def test_cli_refine_default_metrics_are_the_offline_set(image_set, tmp_path):
    out = io.StringIO()
    code = eval_cli.main(
        ["refine", "--images", str(image_set), "--presets", "identity", "--out", str(tmp_path / "o"),
         "--quiet", "--no-plots", "--limit", "1"],
        run_method=fake_runner(), registry=_registry(), stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    assert code == 0
    rows = _rows(tmp_path / "o" / "per_image.csv")
    assert {r["metric"] for r in rows} == {m.name for m in offline_metrics()}
    assert {r["image"] for r in rows} == {"a.png"}
    assert not (tmp_path / "o" / "plots").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--metrics", "psnr_outside,nope"],
            "unknown metric 'nope'; valid metrics: psnr_outside, ssim_outside",
        ),
        (["--presets", "a.toml,b/a.toml"], "would both be called 'a'"),
        (["--images", "/does/not/exist.csv"], "does not exist"),
    ],
)
def test_cli_refine_errors_exit_2_with_a_message(image_set, tmp_path, args, message):
    base = {
        "--images": str(image_set),
        "--presets": "identity",
        "--metrics": "brightness",
        "--out": str(tmp_path / "o"),
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["refine", *[x for kv in base.items() for x in kv], "--quiet"]
    err = io.StringIO()
    assert (
        eval_cli.main(
            argv, run_method=fake_runner(), registry=_registry(), stdout=io.StringIO(), stderr=err
        )
        == 2
    )
    assert message in err.getvalue()


def test_cli_usage_error_and_metrics_listing(capsys):
    assert eval_cli.main(["refine"], registry=_registry()) == 2  # missing required options
    out = io.StringIO()
    reg = MetricRegistry(
        [BRIGHTNESS, Metric("gone", _brightness, check=lambda: (False, "pip install gone"))]
    )
    assert eval_cli.main(["metrics"], registry=reg, stdout=out) == 0
    assert "brightness" in out.getvalue() and "-> pip install gone" in out.getvalue()
    out = io.StringIO()
    assert eval_cli.main(["metrics", "--json"], registry=reg, stdout=out) == 0
    listed = json.loads(out.getvalue())
    assert [(m["name"], m["available"]) for m in listed] == [("brightness", True), ("gone", False)]


def test_cli_config_sets_metric_options_and_rejects_bad_keys(tmp_path):
    good = tmp_path / "m.toml"
    good.write_text("[plugins.metrics]\nseam_band_px = 5\n")
    out = io.StringIO()
    try:
        assert eval_cli.main(["metrics", "--json", "--config", str(good)], stdout=out) == 0
        seam = next(m for m in json.loads(out.getvalue()) if m["name"] == "seam_strength")
        assert "+-5 px" in seam["description"]
        bad = tmp_path / "bad.toml"
        bad.write_text("[plugins.metrics]\nseam_band = 5\n")
        err = io.StringIO()
        assert (
            eval_cli.main(["metrics", "--config", str(bad)], stdout=io.StringIO(), stderr=err) == 2
        )
        assert "[plugins.metrics]" in err.getvalue() and "seam_band" in err.getvalue()
    finally:
        pass  # nothing to restore: the metrics' settings are passed per call
