"""The example refiner's own tests: it sharpens inside the mask only, through the pipeline and the
CLI, with fakes in every other slot (grefine_core.testing)."""

import json

import numpy as np
import pytest

from grefine_core.testing import fake_config, fake_select_args, make_test_image, registered_fakes

plugin = pytest.importorskip("grefine_example_refiner.plugin")


def test_pixels_outside_the_mask_are_untouched():
    from grefine_core import GRefine

    cfg = fake_config(select={"stage1": "example_sharpen", "stage2": "none"})
    with registered_fakes(example_sharpen=plugin):
        result = GRefine(cfg).refine(make_test_image(), "a cat and a missing")
    assert result.stage("stage1").plugin == "example_sharpen"
    before, after = np.asarray(result.input_image), np.asarray(result.image)
    outside = result.mask.soft == 0
    assert outside.any() and (before[outside] == after[outside]).all()
    assert (before[~outside] != after[~outside]).any()


def test_the_cli_runs_it_with_its_settings(tmp_path):
    from grefine_core.app.cli import main

    make_test_image().save(tmp_path / "in.png")
    args = ["refine", str(tmp_path / "in.png"), "--prompt", "a cat and a missing"]
    args += ["--out", str(tmp_path / "out"), "--set", "plugins.example_sharpen.radius=1.5"]
    with registered_fakes(example_sharpen=plugin):
        assert main([*args, *fake_select_args(stage1="example_sharpen")]) == 0
    report = json.loads((tmp_path / "out" / "in.json").read_text())
    stage1 = next(r for r in report["trace"] if r["slot"] == "stage1")
    assert stage1["plugin"] == "example_sharpen" and stage1["info"]["radius"] == 1.5
