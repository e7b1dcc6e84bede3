"""The ``pasd`` plugin: settings, presets, the stage-2 hook on tiny models, real-weight loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pluggy
import pytest
from grefine_pasd import plugin
from grefine_pasd.prompts import DEFAULT_NEGATIVE_PROMPT, assemble_prompt, load_captioner
from grefine_pasd.settings import PasdSettings
from grefine_pasd.stage import working_size
from PIL import Image
from pydantic import ValidationError

from grefine_core import hookspecs
from grefine_core.config import GRefineConfig, preset_data
from grefine_core.context import ModelCache, RunContext
from grefine_core.errors import ConfigError, MissingWeightsError

TINY = {
    "sd_model": "tiny",
    "pasd_checkpoint": "tiny",
    "steps": 4,
    "strength": 0.5,
    "process_size": 64,
}


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, 0.5 + 0 * x], -1) * 200
    return Image.fromarray((base + rng.rand(height, width, 3) * 55).astype("uint8"))


def _context(seed: int = 0, models: ModelCache | None = None, **settings) -> RunContext:
    ctx = RunContext(
        config=GRefineConfig(),
        models=models if models is not None else ModelCache(),
        plugin_settings={"pasd": PasdSettings(**{**TINY, **settings})},
        seed=seed,
        slot="stage2",
    )
    ctx.progress_calls = []  # type: ignore[attr-defined]
    ctx._progress = lambda slot, step, total: ctx.progress_calls.append((slot, step, total))  # type: ignore[attr-defined]
    return ctx


@pytest.fixture(scope="module")
def manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("grefine")
    pm.add_hookspecs(hookspecs)
    pm.register(plugin, name="pasd")
    return pm


@pytest.fixture(scope="module")
def shared_models() -> ModelCache:
    return ModelCache()


def test_plugin_import_is_light():
    code = "import sys, grefine_pasd, grefine_pasd.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_settings_defaults_and_validation():
    s = PasdSettings()
    assert (s.steps, s.strength, s.guidance_scale, s.added_noise_level) == (10, 0.1, 9.0, 900)
    assert s.negative_prompt == DEFAULT_NEGATIVE_PROMPT and s.color_fix == "wavelet"
    assert s.steps_to_run() == 1
    assert PasdSettings(steps=20, strength=1.0).steps_to_run() == 20
    assert PasdSettings(steps=4, strength=0.2).steps_to_run() == 0
    with pytest.raises(ValidationError, match="latent_tiled_overlap"):
        PasdSettings(latent_tiled_size=8, latent_tiled_overlap=8)
    with pytest.raises(ValidationError, match="both be 'tiny'"):
        PasdSettings(sd_model="tiny")
    with pytest.raises(ValidationError, match="extra"):
        PasdSettings(stepz=3)
    assert plugin.grefine_settings_models() == {"pasd": PasdSettings}


@pytest.mark.parametrize("preset", ["paper", "reference", "tiny"])
def test_presets_validate(preset):
    s = PasdSettings(**preset_data(preset)["plugins"]["pasd"])
    expected = {"paper": (10, 0.1, 1), "reference": (20, 1.0, 20), "tiny": (4, 0.5, 2)}[preset]
    assert (s.steps, s.strength, s.steps_to_run()) == expected


def test_prompt_assembly_and_captioner():
    assert assemble_prompt("a cat", "clean, 8k") == "a cat, clean, 8k"
    assert (
        assemble_prompt("", "clean, 8k", caption="a blurry noisy dog")
        == "a clear clean dog, clean, 8k"
    )
    assert assemble_prompt(None, None) == ""
    assert load_captioner("none") is None
    assert load_captioner("os.path:basename")("a/b") == "b"
    with pytest.raises(ConfigError, match="plugins.pasd.captioner = 'nocolon' must be"):
        load_captioner("nocolon")
    with pytest.raises(ConfigError, match="'no_such_module_xyz:f' could not be imported"):
        load_captioner("no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="'os:sep' is not callable"):
        load_captioner("os:sep")


def test_bad_captioner_fails_before_any_model_loads():
    models = ModelCache()
    ctx = _context(models=models, captioner="no_such_module_xyz:caption")
    with pytest.raises(ConfigError, match="plugins.pasd.captioner = 'no_such_module_xyz:caption'"):
        plugin.grefine_refine_stage2(image=_image(64, 64), prompt="", context=ctx)
    assert len(models._items) == 0


def test_working_size():
    assert working_size(128, 96, 64) == (128, 96)
    assert working_size(65, 47, 64) == (88, 64)
    assert working_size(1030, 770, 768) == (1024, 768)
    assert working_size(5, 3, 8) == (8, 8)


def test_stage2_hook_tiny(manager, shared_models):
    ctx = _context(seed=3, models=shared_models)
    image = _image(96, 64)
    out = manager.hook.grefine_refine_stage2(image=image, prompt="a red cat", context=ctx)
    assert out.image.size == image.size and out.image.mode == "RGB"
    info = out.info
    assert info["steps_run"] == 2 and info["strength"] == 0.5 and info["seed"] == 3
    assert info["timesteps"] == [500, 250] and info["plumbing_only"] is True
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["prompt"] == "a red cat, clean, high-resolution, 8k"
    assert ctx.progress_calls == [("stage2", 1, 2), ("stage2", 2, 2)]
    assert not np.array_equal(np.asarray(out.image), np.asarray(image))
    # Same seed -> same image, model reused from the cache; another seed -> another image.
    again = manager.hook.grefine_refine_stage2(
        image=image, prompt="a red cat", context=_context(3, shared_models)
    )
    assert np.array_equal(np.asarray(again.image), np.asarray(out.image))
    other = manager.hook.grefine_refine_stage2(
        image=image, prompt="a red cat", context=_context(4, shared_models)
    )
    assert not np.array_equal(np.asarray(other.image), np.asarray(out.image))
    assert len(shared_models._items) == 1


@pytest.mark.parametrize(("dtype", "expected"), [("bfloat16", "bfloat16"), ("float16", "float32")])
def test_stage2_tiny_follows_the_run_dtype(manager, dtype, expected):
    """float16 on the CPU falls back to float32; the report says what really ran."""
    ctx = _context(seed=1)
    ctx.config = GRefineConfig(dtype=dtype)
    out = manager.hook.grefine_refine_stage2(image=_image(64, 64), prompt="a cat", context=ctx)
    assert out.info["device"] == "cpu" and out.info["dtype"] == expected
    assert out.image.size == (64, 64) and np.isfinite(np.asarray(out.image, np.float32)).all()


@pytest.mark.parametrize("size", [(65, 47), (33, 90), (130, 72)])
def test_stage2_odd_sizes_keep_input_size(shared_models, size):
    image = _image(*size, seed=1).convert("RGBA")
    out = plugin.grefine_refine_stage2(image=image, prompt="", context=_context(0, shared_models))
    assert out.image.size == size and out.image.mode == "RGB"
    w, h = out.info["working_size"]
    assert w % 8 == 0 and h % 8 == 0 and min(w, h) >= 64
    arr = np.asarray(out.image)
    assert arr.dtype == np.uint8 and arr.std() > 0


def test_stage2_strength_zero_returns_input():
    models = ModelCache()
    ctx = _context(models=models, strength=0.0)
    image = _image(50, 40)
    out = plugin.grefine_refine_stage2(image=image, prompt="x", context=ctx)
    assert np.array_equal(np.asarray(out.image), np.asarray(image))
    assert out.info["steps_run"] == 0 and "skipped" in out.info
    assert ctx.progress_calls == [] and len(models._items) == 0  # nothing loaded


def test_stage2_tiles_large_latents(shared_models):
    ctx = _context(models=shared_models, latent_tiled_size=8, latent_tiled_overlap=2)
    out = plugin.grefine_refine_stage2(image=_image(96, 64), prompt="", context=ctx)
    assert out.info["tiled"] is True and out.image.size == (96, 64)


def test_missing_pasd_checkpoint_fails_clearly(tmp_path):
    ctx = _context(sd_model=str(tmp_path / "sd"), pasd_checkpoint=str(tmp_path / "ckpt"))
    with pytest.raises(MissingWeightsError, match="pasd_checkpoint.*pasd.zip") as info:
        plugin.grefine_refine_stage2(image=_image(64, 64), prompt="", context=ctx)
    assert "CreativeML OpenRAIL-M" in str(info.value)  # the licence, where users get the weights
    (tmp_path / "ckpt" / "unet").mkdir(parents=True)
    with pytest.raises(MissingWeightsError, match="unet.*config.json"):
        plugin.grefine_refine_stage2(image=_image(64, 64), prompt="", context=ctx)


@pytest.fixture(scope="module")
def official_layout(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny models saved the way official weights are laid out."""
    from grefine_pasd.tiny import (
        SD15_SCHEDULER_CONFIG,
        tiny_pasd_models,
        tiny_text_encoder,
        tiny_tokenizer,
    )

    root = tmp_path_factory.mktemp("pasd_weights")
    parts = tiny_pasd_models()
    ckpt, sd = root / "runs/pasd/checkpoint-100000", root / "stable-diffusion-v1-5"
    parts["unet"].save_pretrained(ckpt / "unet")
    parts["controlnet"].save_pretrained(ckpt / "controlnet")
    cfg_path = ckpt / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["_class_name"] = "UNet2DConditionModel"  # as the official checkpoints say
    cfg_path.write_text(json.dumps(cfg))
    parts["vae"].save_pretrained(sd / "vae")
    tiny_text_encoder().save_pretrained(sd / "text_encoder")
    tiny_tokenizer().save_pretrained(sd / "tokenizer")
    (sd / "scheduler").mkdir(parents=True)
    (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG))
    return sd, ckpt


def test_real_weight_loading_from_folders(official_layout, shared_models):
    from grefine_pasd.loading import load_pasd_pipeline

    sd, ckpt = official_layout
    pipe = load_pasd_pipeline(str(sd), str(ckpt), local_files_only=True)
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    assert type(pipe.unet).__name__ == "PASDUNet2DConditionModel"
    assert pipe.unet.paca_parameters() == 156080
    ctx = _context(seed=2, sd_model=str(sd), pasd_checkpoint=str(ckpt))
    out = plugin.grefine_refine_stage2(image=_image(64, 64), prompt="a cat", context=ctx)
    # Loaded from disk == built in code (same weights, same seed).
    tiny = plugin.grefine_refine_stage2(
        image=_image(64, 64), prompt="a cat", context=_context(2, shared_models)
    )
    assert np.abs(np.asarray(out.image, int) - np.asarray(tiny.image, int)).max() <= 1


def test_half_precision_on_the_cpu_falls_back_to_float32(official_layout):
    import torch
    from grefine_pasd.loading import load_pasd_pipeline

    sd, ckpt = official_layout
    pipe = load_pasd_pipeline(str(sd), str(ckpt), dtype="float16", local_files_only=True)
    assert pipe.unet.dtype == pipe.controlnet.dtype == pipe.vae.dtype == torch.float32


def test_sd15_hub_id_never_touches_the_network_in_tests(official_layout, no_network):
    """With HF_HUB_OFFLINE=1 (tests/conftest.py) and local_files_only = false, an uncached SD-1.5
    hub id fails with the download advice and without a connection attempt."""
    import os

    from grefine_pasd.loading import load_pasd_pipeline

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    _, ckpt = official_layout
    with pytest.raises(MissingWeightsError, match="'grefine-tests/no-such-sd15'.*hf download"):
        load_pasd_pipeline("grefine-tests/no-such-sd15", str(ckpt))
    assert no_network == []


def test_missing_sd_part_fails_clearly(official_layout, tmp_path):
    import shutil

    sd, ckpt = official_layout
    broken = tmp_path / "sd"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "text_encoder")
    ctx = _context(sd_model=str(broken), pasd_checkpoint=str(ckpt))
    with pytest.raises(MissingWeightsError, match="text_encoder.*stable-diffusion-v1-5"):
        plugin.grefine_refine_stage2(image=_image(64, 64), prompt="", context=ctx)


def test_pipeline_prompt_assembly_with_captioner(shared_models):
    plugin.grefine_refine_stage2(
        image=_image(64, 64), prompt="", context=_context(0, shared_models)
    )
    (pipe,) = shared_models._items.values()
    out = pipe(
        prompt="a cat",
        image=_image(64, 64),
        num_inference_steps=2,
        added_prompt="clean, 8k",
        captioner=lambda image: "a blurry photo",
        output_type="np",
    )
    assert out.prompt == "a clear photo, a cat, clean, 8k"
    assert out.images.shape == (1, 64, 64, 3) and out.steps_run == 2
