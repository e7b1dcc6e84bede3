"""scripts/oracle_gallery.py regenerates docs/behaviour.md's gallery; the committed one is current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "oracle_gallery", ROOT / "scripts" / "oracle_gallery.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gallery_is_generated_and_the_committed_one_is_current(tmp_path):
    gallery = load_script()
    assert gallery.main(["--out", str(tmp_path)]) == 0
    for scene in ("clean", "noisy", "wrong_colour", "missing_tree"):
        picture = Image.open(tmp_path / f"{scene}.png")
        assert picture.width > 4 * picture.height  # five panels side by side
        assert (ROOT / "docs" / "images" / "behaviour" / f"{scene}.png").is_file()
    table = [
        line for line in (tmp_path / "gallery.md").read_text().splitlines() if line.startswith("|")
    ]
    doc = (ROOT / "docs" / "behaviour.md").read_text()
    committed = doc.split(gallery.START)[1].split(gallery.END)[0]
    for line in table:  # rerun `python scripts/oracle_gallery.py` when this fails
        assert line in committed, line
    assert "| `clean` |" in committed and "high quality: returned unchanged" in committed


def test_committed_scene_files_are_the_scenes():
    """examples/oracle/ is what examples/oracle/draw.py draws (rerun it when this fails)."""
    import csv

    import numpy as np
    from grefine_clip.oracle_scenes import SCENES

    folder = ROOT / "examples" / "oracle"
    rows = list(csv.DictReader((folder / "prompts.csv").open(encoding="utf-8")))
    assert {r["image"]: r["prompt"] for r in rows} == {
        f"{n}.png": s.prompt for n, s in SCENES.items()
    }
    for name, scene in SCENES.items():
        stored = np.asarray(Image.open(folder / f"{name}.png").convert("RGB"))
        assert np.array_equal(stored, np.asarray(scene.image())), name
