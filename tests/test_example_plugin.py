"""The separately installed example distribution registers a stage-1 refiner through the entry point."""

from __future__ import annotations

import importlib.metadata as md
import json
import os

import pytest

from grefine_core.app.cli import main
from grefine_core.testing import fake_select_args, make_test_image, registered_fakes


def _installed() -> bool:
    return any(ep.name == "example_sharpen" for ep in md.entry_points(group="grefine"))


@pytest.fixture
def example_installed():
    if not _installed():
        if os.environ.get("CI"):
            pytest.fail("CI must install examples/grefine-example-refiner (scripts/setup.sh does)")
        pytest.skip(
            "examples/grefine-example-refiner is not installed (pip install -e examples/grefine-example-refiner)"
        )


def test_cli_selects_the_third_party_refiner_and_the_trace_names_it(
    example_installed, tmp_path, capsys
):
    img = tmp_path / "cat.png"
    make_test_image(96, 64).save(img)
    out = tmp_path / "out"
    with registered_fakes():
        code = main(
            [
                "refine",
                str(img),
                "--prompt",
                "a cat and a missing",
                "--preset",
                "tiny",
                "--out",
                str(out),
                *fake_select_args(stage1="example_sharpen"),
                "--disable",
                "pasd",
                "--set",
                "plugins.example_sharpen.radius=3",
            ]
        )
        assert code == 0, capsys.readouterr().err
        capsys.readouterr()
        assert main(["plugins", "--json"]) == 0
        infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    report = json.loads((out / "cat.json").read_text())
    stage1 = next(t for t in report["trace"] if t["slot"] == "stage1")
    assert stage1["plugin"] == "example_sharpen" and stage1["status"] == "ran"
    assert stage1["version"] == "0.1.0" and stage1["info"] == {"radius": 3.0, "percent": 150}
    assert infos["example_sharpen"]["source"] == "entry point (grefine-example-refiner)"
