"""The whole pipeline with every real default plugin on the tiny preset (offline, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grefine_core import GRefine, load_config
from grefine_core.app.cli import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny() -> GRefine:
    return GRefine(load_config(preset="tiny", environ={}))


def test_cli_refines_an_example_with_every_default_plugin(tmp_path, capsys):
    image = ROOT / "examples" / "images" / "city_panorama.png"
    out = tmp_path / "out"
    code = main(["refine", str(image), "--prompt", "a futuristic city skyline with neon lights at night",
                 "--preset", "tiny", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "city_panorama.json").read_text())
    assert [(t["slot"], t["plugin"], t["status"]) for t in report["trace"]] == [
        ("perceptual", "clip_pq", "ran"),
        ("parser", "nltk", "ran"),
        ("alignment", "clip_aq", "ran"),
        ("fuser", "mask_paper", "ran"),
        ("stage1", "sdxl", "ran"),
        ("stage2", "pasd", "ran"),
    ]
    assert report["plumbing_only"] is True and "plumbing" in report["notice"]
    assert set(report["perceptual"]["factor_scores"]) == {
        "overall",
        "technical",
        "rational",
        "natural",
    }
    assert report["alignment"]["phrases"] and 0 <= report["alignment"]["score"] <= 1
    assert Image.open(out / "city_panorama.png").size == Image.open(image).size
    maps = out / "city_panorama_maps"
    assert np.load(maps / "maps.npz")["pq_map"].shape == (96, 256)
    assert (maps / "mask_binary.png").is_file() and (maps / "overview.png").is_file()


def test_one_pixel_image_and_long_non_ascii_prompt(tiny):
    prompt = ("a red cat with a tall hat and ein Hund 🐶, " * 50)[:2000]
    r = tiny.refine(Image.new("RGB", (1, 1), (200, 10, 10)), prompt)
    assert r.image.size == (1, 1) and len(r.prompt) == 2000
    assert r.P.shape == (1, 1) and r.A_defect.shape == (1, 1)
    assert {t.status for t in r.trace} <= {"ran", "skipped"}
    assert json.loads(r.to_json())["prompt"] == prompt


def test_same_seed_same_output(tiny):
    image = ROOT / "examples" / "images" / "vase_odd.png"
    a = tiny.refine(image, "a blue vase with yellow flowers on a table", seed=3)
    b = tiny.refine(image, "a blue vase with yellow flowers on a table", seed=3)
    np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.image.size == (111, 173)
