"""docs/plugins.md: every code block is a file of the repository, and every one of those plugins
runs through a real pipeline (fakes in the other slots) and does what its section says."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from grefine_core import SLOTS, GRefine
from grefine_core.config import load_config
from grefine_core.testing import fake_config, fake_plugins, make_test_image, registered_plugin

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
sys.path.insert(0, str(ROOT / "scripts"))
import sync_snippets  # noqa: E402


def load(path: str):
    """The module in ``path`` (a file of the repository), imported under a name of its own."""
    name = "doc_snippet_" + path.replace("/", "_").replace("-", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(slot: str, path: str, prompt: str = "a cat and a missing", name: str = "", **config):
    """Refine with the plugin in ``path`` in ``slot`` (under ``name``: an example distribution's
    own name, so the copy replaces the installed one) and fakes elsewhere."""
    name = name or f"doc_{slot}"
    cfg = fake_config(select={slot: name}, **config)
    plugins = {**fake_plugins(), name: load(path)}
    result = GRefine(cfg, extra_plugins=plugins).refine(make_test_image(), prompt)
    assert result.stage(slot).plugin == name and result.stage(slot).status == "ran"
    return result


def test_the_docs_show_the_files_as_they_are():
    text = DOC.read_text("utf-8")
    assert sync_snippets.render(text) == text, "run: python scripts/sync_snippets.py"
    for path in sync_snippets.snippet_paths(text):
        assert (ROOT / path).is_file(), path


def test_the_sync_notices_an_edited_copy():
    text = DOC.read_text("utf-8")
    edited = text.replace("brightness.mean()", "brightness.max()", 1)
    assert edited != text and sync_snippets.render(edited) == text


def test_every_slot_has_a_section():
    text = DOC.read_text("utf-8")
    for slot in SLOTS:
        assert f"\n### {slot}: `" in text, slot
    assert "\n### backbone: `" in text and "\n### commands: `" in text


def test_the_result_type_table_lists_every_field():
    table = sync_snippets.result_types_table()
    assert "| `PhraseAlignment` | `defect` | `DefectKind or None` | `None` |" in table
    assert "| `MaskResult` | `fraction` | `float` | required |" in table


def test_perceptual_snippet():
    result = run("perceptual", "docs/snippets/perceptual.py")
    gray = np.asarray(result.input_image.convert("L"), np.float32) / 255.0
    assert np.allclose(result.P, gray) and result.p == pytest.approx(float(gray.mean()))


def test_parser_snippet_is_the_example_parser():
    prompt = "a red cat, a wooden table"
    path = "examples/grefine-example-parser/grefine_example_parser/plugin.py"
    result = run("parser", path, prompt, name="example_commas")
    assert [(p.text, p.noun) for p in result.parsed.phrases] == [
        ("a red cat", "cat"),
        ("a wooden table", "table"),
    ]


def test_alignment_snippet_flags_the_missing_noun():
    result = run("alignment", "docs/snippets/alignment.py", "a cat and a unicorn")
    assert [(p.noun, p.defect) for p in result.alignment.phrases] == [
        ("cat", None),
        ("unicorn", "noun"),
    ]
    assert result.alignment.emphasis[0].text == "a unicorn" and result.A_defect.max() == 1.0
    again = run(
        "alignment",
        "docs/snippets/alignment.py",
        "a cat and a unicorn",
        plugins={"toy_alignment": {"missing": ["cat"]}},
    )
    assert [p.defect for p in again.alignment.phrases] == ["noun", None]


def test_fuser_snippet_masks_the_dark_half():
    result = run("fuser", "docs/snippets/fuser.py", "a cat")
    assert np.array_equal(result.mask.binary, result.P < 0.5)
    assert 0.0 < result.mask.fraction < 1.0


def test_stage1_snippet_is_the_example_refiner():
    path = "examples/grefine-example-refiner/grefine_example_refiner/plugin.py"
    result = run("stage1", path, name="example_sharpen")
    assert result.stage("stage1").info == {"radius": 2.0, "percent": 150}
    assert result.image.size == result.input_image.size


def test_stage2_snippet():
    result = run("stage2", "docs/snippets/stage2.py")
    assert result.stage("stage2").info == {"filter": "smooth"}
    assert result.image.size == result.input_image.size


def test_backbone_snippet_runs_the_real_indicators():
    pytest.importorskip("torch")
    cfg = load_config(
        preset="tiny",
        environ={},
        overrides={
            "select": {"stage1": "none", "stage2": "none"},
            "plugins": {"backbone": {"name": "toy"}},
        },
    )
    pipeline = GRefine(cfg, extra_plugins={"toy_backbone": load("docs/snippets/backbone.py")})
    result = pipeline.assess(make_test_image(), "a red cat on a table")
    assert result.stage("perceptual").plugin == "clip_pq" and result.P.shape == (48, 64)
    assert 0.0 <= result.p <= 1.0 and 0.0 <= result.a <= 1.0
    assert result.A_defect.shape == (48, 64)


def test_command_snippet(capsys):
    from grefine_core.app.cli import main

    with registered_plugin("doc_hello", load("docs/snippets/command.py")):
        assert main(["hello", "--name", "docs"]) == 0
    assert capsys.readouterr().out.strip() == "hello, docs"
