"""The ONNX backend for PQ / AQ: same results as the torch backend, the ``onnx_pq`` / ``onnx_aq``
plugins in a whole ``assess`` of the tiny preset, and light imports."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from grefine_core.types import ParsedPrompt, Phrase  # noqa: E402

MODEL_FILE = "tiny_clip_vitb16_openai_format.safetensors"
TOL = 1e-4
PROMPT = "a red cat sitting on a wooden table next to a blue vase"
PHRASES = [
    Phrase("red cat sitting", "cat", (0, 19), 0, (6, 9)),
    Phrase("wooden table", "table", (20, 37), 0, (32, 37)),
    Phrase("next", None, (38, 42), 1),
    Phrase("blue vase", "vase", (43, 55), 1, (51, 55)),
]


@pytest.fixture(scope="module")
def backends(clip_fixture_dir: Path, tmp_path_factory):
    """The fixture CLIP in torch and the same weights through ONNX Runtime (CPU)."""
    from grefine_clip import SurgeryCLIP
    from grefine_onnx.backend import OnnxSurgeryCLIP
    from grefine_onnx.cache import ensure_export
    from grefine_onnx.export import ExportOptions
    from grefine_onnx.providers import SessionConfig

    torch_clip = SurgeryCLIP.from_pretrained(clip_fixture_dir / MODEL_FILE)
    folder, manifest = ensure_export(
        torch_clip, ExportOptions(), cache_dir=tmp_path_factory.mktemp("onnx_plugin_cache")
    )
    onnx_clip = OnnxSurgeryCLIP(folder, manifest, SessionConfig(providers=("cpu",)))
    return torch_clip, onnx_clip


@pytest.fixture(scope="module")
def images(clip_fixture_dir: Path) -> list[Image.Image]:
    noise = Image.open(clip_fixture_dir / "images" / "noise_224.png").convert("RGB")
    rng = np.random.default_rng(5)
    wide = Image.fromarray((rng.random((90, 160, 3)) * 255).astype(np.uint8))  # non-square
    return [noise, wide]


def _close(a, b, what: str) -> None:
    diff = float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
    assert diff <= TOL, f"{what}: max abs diff {diff:.3g} > {TOL}"


@pytest.mark.parametrize("compat", ["paper", "reference"])
def test_pq_through_onnx_equals_torch(backends, images, pq_embeddings_dir, compat):
    from grefine_quality import PerceptualQuality, load_pq_prompts

    torch_clip, onnx_clip = backends
    prompts = load_pq_prompts(pq_embeddings_dir)
    pq_t = PerceptualQuality(torch_clip, prompts, compat)
    pq_o = PerceptualQuality(onnx_clip, prompts, compat)
    _close(pq_o.text_features, pq_t.text_features, "PQ text features")
    for image in images:
        a, b = pq_t(image), pq_o(image)
        assert b.map.shape == (image.height, image.width) and b.map.dtype == np.float32
        _close(b.score, a.score, "p")
        _close(b.map, a.map, "P")
        for f in a.factor_scores:
            _close(b.factor_scores[f], a.factor_scores[f], f"p_{f}")
            _close(b.factor_maps[f], a.factor_maps[f], f"P_{f}")


def test_aq_through_onnx_equals_torch(backends, images):
    from grefine_quality import AlignmentQuality

    torch_clip, onnx_clip = backends
    parsed = ParsedPrompt(PROMPT, PHRASES, "test")
    for merge in ("paper", "union"):
        aq_t = AlignmentQuality(torch_clip, merge=merge)
        aq_o = AlignmentQuality(onnx_clip, merge=merge)
        for image in images:
            a, b = aq_t(image, parsed), aq_o(image, parsed)
            _close(b.score, a.score, "a")
            _close(b.prompt_score, a.prompt_score, "a_prompt")
            _close(b.defect_map, a.defect_map, "A_defect")
            assert [p.defect for p in b.phrases] == [p.defect for p in a.phrases]
            assert b.emphasised_prompt == a.emphasised_prompt
            for pa, pb in zip(a.phrases, b.phrases, strict=True):
                _close(pb.score, pa.score, f"a_phs {pa.text}")
                _close(pb.noun_score, pa.noun_score, f"a_pns {pa.text}")
                _close(pb.map, pa.map, f"A_phs {pa.text}")
                _close(pb.noun_map, pa.noun_map, f"A_pns {pa.text}")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_tiny_cache")


def _tiny_config(tiny_cache: Path, perceptual: str, alignment: str, **onnx):
    from grefine_core.config import load_config

    return load_config(
        preset="tiny",
        overrides={
            "select": {"perceptual": perceptual, "alignment": alignment},
            "plugins": {"onnx": {"cache_dir": str(tiny_cache), "providers": ["cpu"], **onnx}},
        },
        environ={},
    )


def test_tiny_preset_assess_runs_on_the_onnx_backend(tiny_cache):
    from grefine_core.pipeline import GRefine

    image = Image.fromarray((np.random.default_rng(1).random((80, 112, 3)) * 255).astype(np.uint8))
    prompt = "a red cat sitting on a wooden table next to a blue vase"
    onnx_run = GRefine(_tiny_config(tiny_cache, "onnx_pq", "onnx_aq"))
    result = onnx_run.assess(image, prompt)
    plugins = {r.slot: (r.plugin, r.status) for r in result.trace}
    assert plugins["perceptual"] == ("onnx_pq", "ran") and plugins["alignment"] == (
        "onnx_aq",
        "ran",
    )
    assert result.perceptual.map.shape == (80, 112) and result.alignment.defect_map.shape == (
        80,
        112,
    )
    assert list(tiny_cache.iterdir()), "the tiny CLIP was exported into the cache on first use"
    torch_run = GRefine(_tiny_config(tiny_cache, "clip_pq", "clip_aq"))
    ref = torch_run.assess(image, prompt)
    _close(result.perceptual.score, ref.perceptual.score, "p")
    _close(result.perceptual.map, ref.perceptual.map, "P")
    _close(result.alignment.score, ref.alignment.score, "a")
    _close(result.alignment.defect_map, ref.alignment.defect_map, "A_defect")
    # A second image reuses the loaded backend (one image pass, shared by PQ and AQ).
    key = next(k for k in onnx_run.models._items if k[0] == "grefine_onnx.OnnxSurgeryCLIP")
    backend = onnx_run.models._items[key]
    encoder, calls = backend.visual, []

    def counting(x):
        calls.append(tuple(x.shape))
        return encoder(x)

    backend.visual = counting
    try:
        onnx_run.assess(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), prompt)
    finally:
        backend.visual = encoder
    assert calls == [(1, 3, 224, 224)]


def test_fp16_request_without_gpu_uses_the_float32_export(tiny_cache, caplog):
    from grefine_clip.settings import ClipSettings
    from grefine_onnx.runtime import load_onnx_clip
    from grefine_onnx.settings import OnnxSettings

    settings = OnnxSettings(fp16=True, providers=["cpu"], cache_dir=str(tiny_cache))
    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        clip = load_onnx_clip(ClipSettings(model="tiny"), settings)
    assert "fp16 was requested but no GPU provider is usable" in caplog.text
    assert clip.manifest["dtype"] == "float32" and clip.providers == ["CPUExecutionProvider"]


def test_onnx_pq_and_onnx_aq_are_the_indicators_on_the_onnx_backbone():
    from grefine_onnx import plugin
    from grefine_onnx.settings import OnnxSettings
    from grefine_quality.onnx_aq import plugin as onnx_aq
    from grefine_quality.onnx_pq import plugin as onnx_pq
    from grefine_quality.settings import AQSettings, BackboneSettings, PQSettings

    assert plugin.grefine_settings_models() == {"onnx": OnnxSettings}
    assert set(plugin.grefine_backbones()) == {"onnx"}
    assert onnx_pq.backbone == onnx_aq.backbone == "onnx"
    assert onnx_pq.grefine_settings_models() == {"pq": PQSettings, "backbone": BackboneSettings}
    assert onnx_aq.grefine_settings_models() == {"aq": AQSettings, "backbone": BackboneSettings}


def test_bad_onnx_setting_is_a_config_error(tiny_cache):
    from grefine_core.errors import ConfigError
    from grefine_core.pipeline import GRefine

    with pytest.raises(ConfigError, match=r"plugins.onnx.*\n.*providers"):
        GRefine(_tiny_config(tiny_cache, "onnx_pq", "onnx_aq", providers=["gpu"]))


def test_importing_the_plugins_loads_neither_torch_nor_onnxruntime():
    code = (
        "import sys, grefine_onnx, grefine_onnx.plugin, grefine_quality.onnx_pq, grefine_quality.onnx_aq, "
        "grefine_onnx.cli, grefine_onnx.settings, grefine_onnx.manifest; "
        "print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
