"""Defaults for real use: ``device``/``dtype = "auto"``, ``cuda:N`` and ``mps`` accepted, the flags
people change most (declared by the plugins' settings), the float16 VAE fix, PASD CPU offload."""

from __future__ import annotations

import pytest

from grefine_core.app.cli import _config, build_parser
from grefine_core.config import load_config
from grefine_core.errors import ConfigError
from grefine_core.placement import auto_dtype, resolve_device
from grefine_core.testing import standalone_context


def test_paper_defaults_to_auto_and_auto_means_the_best_device(monkeypatch):
    import torch

    cfg = load_config(preset="paper")
    assert (cfg.device, cfg.dtype) == ("auto", "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    ctx = standalone_context(cfg)
    assert (ctx.device, ctx.dtype) == ("cpu", "float32")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps" and auto_dtype("mps", "auto") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (ctx.device, ctx.dtype) == ("cuda", "float16")
    assert resolve_device("cuda:1") == "cuda:1" and auto_dtype("cuda:1", "auto") == "float16"
    assert auto_dtype("cuda", "bfloat16") == "bfloat16"  # an explicit dtype is kept


@pytest.mark.parametrize("device", ["auto", "cpu", "mps", "cuda", "cuda:0", "cuda:12"])
def test_device_names_accepted(device):
    assert load_config(preset="tiny", overrides={"device": device}).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CUDA", "tpu"])
def test_device_names_refused(device):
    with pytest.raises(ConfigError, match="device"):
        load_config(preset="tiny", overrides={"device": device})


def _args(*argv: str):
    return build_parser().parse_args(["refine", "x.png", "--prompt", "p", "--out", "o", *argv])


def test_the_common_flags_map_onto_the_stage1_settings():
    args = _args(
        "--steps", "7", "--strength", "0.4", "--negative-prompt", "blurry", "--guidance", "3.5",
        "--sdxl-model", "org/my-sdxl-inpaint", "--device", "cuda:1", "--dtype", "bfloat16",
        "--maps", "all",
    )  # fmt: skip
    cfg = _config(args)
    sdxl = cfg.plugins["sdxl"]
    assert sdxl["steps"] == 7 and sdxl["guidance_scale"] == 3.5
    assert sdxl["strength"] == 0.4 and sdxl["strength_mode"] == "fixed"  # --strength means fixed
    assert sdxl["negative_prompt"] == "blurry" and sdxl["model"] == "org/my-sdxl-inpaint"
    assert (cfg.device, cfg.dtype, cfg.output.maps) == ("cuda:1", "bfloat16", "all")
    untouched = _config(_args())
    assert untouched.plugins["sdxl"]["strength_mode"] == "quality"


def test_the_flags_say_which_setting_they_set(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["refine", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--steps N", "--strength X", "--negative-prompt TEXT", "--guidance X",
                 "--sdxl-model TEXT"):  # fmt: skip
        assert flag in text, flag
    assert "(sets [plugins.sdxl] steps)" in text


def test_float16_runs_get_the_fp16_fix_vae_unless_one_is_named():
    from grefine_sdxl.settings import FP16_FIX_VAE, SDXLSettings

    s = SDXLSettings()
    assert s.vae_for("float16") == FP16_FIX_VAE
    assert s.vae_for("float32") == "" and s.vae_for("bfloat16") == ""
    assert SDXLSettings(vae="org/vae").vae_for("float16") == "org/vae"
    assert SDXLSettings(fp16_fix_vae="").vae_for("float16") == ""
    assert SDXLSettings(model="tiny").vae_for("float16") == ""


def test_the_fp16_vae_is_a_listed_weight_of_a_float16_run(tmp_path, monkeypatch):
    from grefine_sdxl.settings import FP16_FIX_VAE, SDXLSettings
    from grefine_sdxl.weights import sdxl_weights

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    names = [w["source"] for w in sdxl_weights(SDXLSettings(), "float16")]
    assert names == [f"hf://{SDXLSettings().model}", f"hf://{FP16_FIX_VAE}"]
    assert len(sdxl_weights(SDXLSettings(), "float32")) == 1
    assert len(sdxl_weights(SDXLSettings(), None)) == 1  # device not resolved yet


def test_pasd_offloads_to_the_cpu_on_a_gpu_only(monkeypatch):
    from grefine_pasd import loading

    calls = []

    class FakePipe:
        def __init__(self, **parts):
            pass

        def enable_model_cpu_offload(self, device=None):
            calls.append(("offload", device))

        def to(self, device):
            calls.append(("to", device))
            return self

    class Part:
        @classmethod
        def from_pretrained(cls, *a, **k):
            return cls()

        def eval(self):
            return self

    monkeypatch.setattr(
        loading, "check_pasd_checkpoint", lambda folder: __import__("pathlib").Path(folder)
    )
    monkeypatch.setattr(loading, "_sd_part", lambda *a, **k: Part())
    import grefine_pasd.controlnet as controlnet
    import grefine_pasd.pipeline as pipeline
    import grefine_pasd.unet as unet

    monkeypatch.setattr(unet, "PASDUNet2DConditionModel", Part)
    monkeypatch.setattr(controlnet, "load_pasd_controlnet", lambda *a, **k: Part())
    monkeypatch.setattr(pipeline, "PASDPipeline", FakePipe)
    loading.load_pasd_pipeline("sd", "ckpt", device="cuda:1", cpu_offload=True)
    loading.load_pasd_pipeline("sd", "ckpt", device="cpu", cpu_offload=True)
    loading.load_pasd_pipeline("sd", "ckpt", device="cuda", cpu_offload=False)
    assert calls == [("offload", "cuda:1"), ("to", "cpu"), ("to", "cuda")]


def test_a_result_made_on_another_device_is_not_reused(monkeypatch):
    import torch

    from grefine_core.app.fingerprint import resolved_config
    from grefine_core.pipeline import GRefine

    pipe = GRefine(load_config(preset="tiny", overrides={"device": "auto", "dtype": "auto"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    on_cpu = resolved_config(pipe)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = resolved_config(pipe)
    assert (on_cpu["device"], on_cpu["dtype"]) == ("cpu", "float32")
    assert (on_gpu["device"], on_gpu["dtype"]) == ("cuda:0", "float16")  # as explicit cuda:0


def test_the_loader_passes_the_fp16_vae_on_a_float16_run(monkeypatch):
    import grefine_sdxl.loading as loading
    from grefine_sdxl.settings import FP16_FIX_VAE, SDXLSettings

    seen = []
    monkeypatch.setattr(loading, "from_pretrained_source", lambda src, **kw: seen.append(kw) or "p")
    monkeypatch.setattr(loading, "prepare_pipeline", lambda pipe, *a: pipe)
    monkeypatch.setattr(loading, "_cached", lambda *a: False)
    loading.load_inpaint_pipeline(SDXLSettings(), device="cuda", dtype="float16")
    loading.load_inpaint_pipeline(SDXLSettings(), device="cuda", dtype="float32")
    loading.load_inpaint_pipeline(SDXLSettings(), device="cpu", dtype="float16")  # falls back
    assert [kw["vae"] for kw in seen] == [FP16_FIX_VAE, "", ""]


def test_clip_stays_float32_under_auto(monkeypatch):
    import torch
    from grefine_clip.runtime import device_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    auto = standalone_context(load_config(preset="paper"))
    assert device_dtype(auto) == ("cuda", "float32") and auto.dtype == "float16"
    half = standalone_context(load_config(preset="paper", overrides={"dtype": "float16"}))
    assert device_dtype(half) == ("cuda", "float16")
