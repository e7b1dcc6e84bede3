"""The GRefine-backed runner and scorer, against a stand-in ``grefine_core.pipeline`` module."""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
from grefine_metrics.runner import GRefineRunner, GRefineScorer, load_method_config
from PIL import Image

from grefine_core.errors import ConfigError


@dataclass
class _Mask:
    binary: np.ndarray


@dataclass
class _Score:
    score: float
    neutral: bool = False


@dataclass
class _Result:
    image: Image.Image
    mask: _Mask | None
    perceptual: _Score
    alignment: _Score | None

    def save(self, out_dir, stem, maps="png"):
        """Like ``RefineResult.save``: writes ``<stem>.png`` (and a report) and returns the paths."""
        paths = {"image": out_dir / f"{stem}.png", "json": out_dir / f"{stem}.json"}
        out_dir.mkdir(parents=True, exist_ok=True)
        self.image.save(paths["image"])
        paths["json"].write_text("{}")
        return paths


@pytest.fixture(params=["refine-only", "with-assess"])
def fake_pipeline(monkeypatch, request):
    """Install a ``grefine_core.pipeline`` whose GRefine records its configs and calls (with and
    without an ``assess`` method)."""
    built: list = []

    class GRefine:
        def __init__(self, config, models=None):
            self.config = config
            self.models = models
            built.append(self)
            self.calls: list = []

        def refine(self, image, prompt, name=None):
            self.calls.append((image, prompt, name))
            img = Image.open(image).convert("RGB")
            mask = np.zeros((img.height, img.width), bool)
            mask[:2, :2] = True
            flipped = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            return _Result(flipped, _Mask(mask), _Score(0.25), _Score(0.75))

    class GRefineWithAssess(GRefine):
        def assess(self, image, prompt):
            self.calls.append(("assess", image, prompt))
            return _Result(Image.open(image).convert("RGB"), None, _Score(0.5), _Score(0.125))

    module = types.ModuleType("grefine_core.pipeline")
    module.GRefine = GRefine if request.param == "refine-only" else GRefineWithAssess
    monkeypatch.setitem(sys.modules, "grefine_core.pipeline", module)
    return built


def test_runner_builds_one_engine_per_method_and_saves_the_result(fake_pipeline, tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(src)
    abl = tmp_path / "no_stage2.toml"
    abl.write_text('preset = "tiny"\ndisable = ["pasd"]\n')
    runner = GRefineRunner(device="cpu")
    for method, work in (("tiny", "w1"), ("tiny", "w2"), (str(abl), "w3")):
        path, mask = runner(method, src, "a prompt", tmp_path / work)
        assert path == tmp_path / work / "refined.png" and path.is_file()
        assert mask.dtype == bool and mask.shape == (4, 4) and mask.sum() == 4
    assert len(fake_pipeline) == 2  # "tiny" built once, reused
    assert fake_pipeline[0].config.preset == "tiny" and fake_pipeline[0].config.device == "cpu"
    assert fake_pipeline[1].config.disable == ["pasd"]
    # the run is named after its work folder
    assert fake_pipeline[0].calls == [(str(src), "a prompt", "w1"), (str(src), "a prompt", "w2")]
    flipped = np.asarray(Image.open(path))
    np.testing.assert_array_equal(flipped, np.asarray(Image.open(src))[:, ::-1])


def test_scorer_runs_the_indicators_only(fake_pipeline, tmp_path):
    src = tmp_path / "in.png"
    Image.new("RGB", (4, 4)).save(src)
    scorer = GRefineScorer("tiny")
    engine = scorer.engine()
    cfg = engine.config
    if hasattr(engine, "assess"):  # the facade's maps-only mode, on the method's own config
        assert scorer(src, "x") == {"pq": 0.5, "aq": 0.125}
        assert engine.calls == [("assess", str(src), "x")] and cfg.disable == []
    else:  # refine with both refiner plugins blocked
        assert scorer(src, "x") == {"pq": 0.25, "aq": 0.75}
        assert cfg.select["stage1"] in cfg.disable and cfg.select["stage2"] in cfg.disable


def test_scorer_reports_nan_for_disabled_indicators(fake_pipeline, tmp_path, monkeypatch):
    src = tmp_path / "in.png"
    Image.new("RGB", (4, 4)).save(src)
    scorer = GRefineScorer("tiny")
    engine = scorer.engine()

    def neutral(image, prompt):
        return _Result(Image.new("RGB", (4, 4)), None, _Score(1.0, neutral=True), None)

    monkeypatch.setattr(engine, "assess" if hasattr(engine, "assess") else "refine", neutral)
    values = scorer(src, "x")
    assert math.isnan(values["pq"]) and math.isnan(values["aq"])


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_method_config("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_method_config("missing/ablation.toml")


def test_runner_methods_share_one_model_cache(fake_pipeline, tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(image)
    runner = GRefineRunner()
    first, second = runner.engine("tiny"), runner.engine("paper")
    assert first is not second and first.models is second.models is not None
