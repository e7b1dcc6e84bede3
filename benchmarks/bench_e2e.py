"""Benchmark: the ``paper`` preset end to end on one 1024x1024 image, real architectures with
random weights, through the real pipeline (``GRefine.refine``: PQ, parser, AQ, fuser, stage 1,
stage 2) with the models put in its model cache instead of loaded from weights.

Models: CLIP ViT-B/16 Surgery (the indicators, random PQ prompts), the SDXL inpainting UNet +
VAE + both text encoders, the SD-1.5 PASD UNet + ControlNet + VAE + text encoder. The fuser is a
planted mask per case (the indicators still run in full); the stage-1 strength is pinned.

Cases:

* ``hq``: a high-quality image (the HQ bounds at 0, so the scores pass them): indicators only;
* ``empty``: an empty mask below the bounds: indicators + stage 2;
* ``mask5``: a 5 % mask (one blob); ``mask20``: a 20 % mask in two far blobs, per-region
  (``mask20_bbox``: the same mask as one box, ``per_region = false``); ``mask50``: a 50 % mask
  (the full-image path).

Printed: seconds per stage and the total of every case, then the ratios ``region_vs_bbox``
(stage-1 seconds of the two-blob mask, per region vs one box) and ``hq_vs_full`` (the HQ image's
total vs the 50 % mask's total). Targets: region_vs_bbox <= 0.6, hq_vs_full <= 0.05. The last line
is ``region_vs_bbox_ratio=<float> hq_vs_full_ratio=<float>``.

On the CPU (the default): float32, one denoising step per stage, and the models loaded one group
after another (indicators + SDXL, then PASD: all of them at once would not fit in 24 GB), so a
case's total is the sum of its stages measured in the two phases; stage 2 does not depend on the
mask and is measured once. About 20 minutes on 2 cores; never part of CI.

On a GPU (``--device cuda``): float16, all models at once, the paper's steps (stage 1: 10 steps at
the pinned strength; stage 2: 10 steps x 0.1), ``--compile`` puts ``torch.compile`` on the UNets
(stage 1 sees at most two shapes here: the 512 and 1024 buckets), one warm-up pass, then every
case measured in steady state; peak memory and the card are printed for benchmarks/RESULTS.md.

Random weights: the images are noise; this measures time, not quality.

Usage: ``python benchmarks/bench_e2e.py [--device cpu|cuda] [--compile] [--repeats 1]``
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from grefine_core.markers import hookimpl  # noqa: E402 - after the environment is set

SIZE = 1024
PROMPT = "ball"  # one phrase whose text is its noun: no alignment defect, so "hq" can be HQ
STAGE1_STRENGTH = 0.5
INDICATOR_SLOTS = ("perceptual", "parser", "alignment", "fuser")
SDXL_TEXT_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, projection_dim=768)  # fmt: skip
SDXL_TEXT_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                   num_attention_heads=20, projection_dim=1280, hidden_act="gelu")  # fmt: skip
SDXL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4,
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
                norm_num_groups=32, sample_size=1024, scaling_factor=0.13025)  # fmt: skip


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- masks


def case_masks(size: int) -> dict[str, Any]:
    """The planted mask of each case (``fuse_paper`` of a P map that is bad in the blobs)."""
    import numpy as np
    from grefine_masks.ops import fuse_paper

    from grefine_core.types import PerceptualResult

    def mask(*boxes: tuple[int, int, int, int]) -> Any:
        P = np.ones((size, size), np.float32)
        for x0, y0, x1, y1 in boxes:
            P[y0:y1, x0:x1] = 0.0
        return fuse_paper(PerceptualResult(0.5, P), None, tau=0.5, dilate_px=4, feather_sigma=3.0)

    blob10 = int(round((0.1**0.5) * size))  # a square of 10 % of the image
    blob5 = int(round((0.05**0.5) * size))
    lo5 = (size - blob5) // 2
    half = int(round((0.5**0.5) * size))
    lo50 = (size - half) // 2
    two_far = mask((16, 16, 16 + blob10, 16 + blob10),
                   (size - 16 - blob10, size - 16 - blob10, size - 16, size - 16))  # fmt: skip
    return {
        "hq": mask(),
        "empty": mask(),
        "mask5": mask((lo5, lo5, lo5 + blob5, lo5 + blob5)),
        "mask20": two_far,
        "mask20_bbox": two_far,
        "mask50": mask((lo50, lo50, lo50 + half, lo50 + half)),
    }


class PlantedMask:
    """A fuser that returns the mask of the current case (the indicators still run)."""

    def __init__(self) -> None:
        self.mask: Any = None

    @hookimpl
    def grefine_fuse_masks(self, perceptual: Any, alignment: Any, context: Any) -> Any:
        return self.mask


# --------------------------------------------------------------------------- models


def sdxl_pipeline(dtype: Any, device: str) -> Any:
    """The SDXL inpainting pipeline with random weights: real UNet, VAE and text encoders."""
    import torch
    from bench_refine import sdxl_inpaint_unet
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline
    from grefine_sdxl.tiny import bundled_clip_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                  eos_token_id=49407, pad_token_id=49407)  # fmt: skip
    te1 = CLIPTextModel(CLIPTextConfig(**common, **SDXL_TEXT_L))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**common, **SDXL_TEXT_G))
    tok = bundled_clip_tokenizer()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1,
                                       timestep_spacing="leading")  # fmt: skip
    pipe = StableDiffusionXLInpaintPipeline(
        vae=AutoencoderKL(**SDXL_VAE), text_encoder=te1, text_encoder_2=te2, tokenizer=tok,
        tokenizer_2=tok, unet=sdxl_inpaint_unet(), scheduler=scheduler, image_encoder=None,
        feature_extractor=None, requires_aesthetics_score=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def pasd_pipeline(dtype: Any, device: str) -> Any:
    """The SD-1.5 PASD pipeline with random weights (bench_pasd's models plus a text encoder)."""
    from bench_pasd import build
    from diffusers import UniPCMultistepScheduler
    from grefine_pasd.pipeline import PASDPipeline
    from grefine_pasd.tiny import SD15_SCHEDULER_CONFIG
    from grefine_sdxl.tiny import bundled_clip_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    unet, _stock, controlnet, vae = build(seed=0, device="cpu")
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77,
                                        **{k: v for k, v in SDXL_TEXT_L.items()
                                           if k != "projection_dim"}))  # fmt: skip
    pipe = PASDPipeline(
        vae=vae, text_encoder=text.eval(), tokenizer=bundled_clip_tokenizer(), unet=unet,
        controlnet=controlnet,
        scheduler=UniPCMultistepScheduler.from_config(dict(SD15_SCHEDULER_CONFIG)),
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def compile_unets(pipe: Any) -> None:
    import torch

    pipe.unet = torch.compile(pipe.unet, dynamic=False)
    if getattr(pipe, "controlnet", None) is not None:
        pipe.controlnet = torch.compile(pipe.controlnet, dynamic=False)


# --------------------------------------------------------------------------- the pipeline


def config(device: str, stage1: bool, stage2: bool, hq: bool, per_region: bool, gpu: bool) -> Any:
    from grefine_core.config import load_config

    steps = 10 if gpu else 2  # 2 x strength 0.5 = one step on the CPU
    bound = 0.0 if hq else 2.0  # 0: every image passes; 2: none does
    overrides = {
        "device": device,
        "dtype": "auto" if gpu else "float32",  # auto: float16 diffusion, float32 CLIP
        "select": {
            "fuser": "bench_mask",
            "stage1": "sdxl" if stage1 else "none",
            "stage2": "pasd" if stage2 else "none",
        },  # fmt: skip
        "hq_skip": {"p_bound": bound, "a_bound": bound},
        "plugins": {
            "clip": {"model": "ViT-B-16-quickgelu", "pretrained": ""},
            "pq": {"random_fallback": True},
            "aq": {"a_bound": 0.0},  # with PROMPT: no defect, so the bounds alone decide HQ
            "sdxl": {
                "model": "bench/sdxl-inpainting-random",
                "steps": steps,
                "strength_mode": "fixed",
                "strength": STAGE1_STRENGTH,
                "per_region": per_region,
            },  # fmt: skip
            "pasd": {
                "sd_model": "bench/sd15-random",
                "pasd_checkpoint": "bench/pasd-random",
                "process_size": 768,
            },  # fmt: skip
        },
    }
    return load_config(preset="paper", overrides=overrides, environ={})


def preload(pipe: Any, clip: Any, sdxl: Any, pasd: Any) -> None:
    """Put the random-weight models into the pipeline's model cache under the plugins' keys."""
    from grefine_clip.runtime import clip_key
    from grefine_sdxl.loading import cache_key

    ctx = pipe.run_context(0, "bench", PROMPT)
    pipe.models.get_or_create(clip_key(ctx), lambda: clip)
    if sdxl is not None:
        key = cache_key(ctx.settings("sdxl"), ctx.device, ctx.dtype)
        pipe.models.get_or_create(key, lambda: sdxl)
    if pasd is not None:
        s = ctx.settings("pasd")
        key = ("pasd", s.sd_model, s.pasd_checkpoint, s.cpu_offload, ctx.device, ctx.dtype)
        pipe.models.get_or_create(key, lambda: pasd)


def run_case(pipe: Any, fuser: PlantedMask, mask: Any, image: Any, sync: Any) -> dict[str, float]:
    """Seconds per stage (``indicators``, ``stage1``, ``stage2``) and ``total`` of one refine."""
    fuser.mask = mask
    sync()
    start = time.perf_counter()
    result = pipe.refine(image, PROMPT, name="bench", seed=0)
    sync()
    total = time.perf_counter() - start
    seconds = {r.slot: r.seconds for r in result.trace if r.status == "ran"}
    failed = [r for r in result.trace if r.status == "failed"]
    if failed:
        raise RuntimeError(f"{failed[0].slot} failed: {failed[0].reason}")
    out = {
        "indicators": sum(seconds.get(s, 0.0) for s in INDICATOR_SLOTS),
        "stage1": seconds.get("stage1", 0.0),
        "stage2": seconds.get("stage2", 0.0),
        "total": total,
        "hq": bool(result.high_quality),
    }
    regions = (result.stage("stage1").info or {}).get("regions") if result.stage("stage1") else None
    out["regions"] = [(r["box"], r["working_size"]) for r in regions or []]
    return out


def pipeline(cfg: Any, fuser: PlantedMask, models: Any) -> Any:
    from grefine_core.pipeline import GRefine

    return GRefine(cfg, extra_plugins={"bench_mask": fuser}, models=models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNets (GPU)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per case (best kept)")
    parser.add_argument(
        "--size", type=int, default=SIZE, help="image side (default 1024; smaller: a dry run)"
    )
    args = parser.parse_args()

    import numpy as np
    import torch
    from bench_aq_text import build_vitb16_clip
    from PIL import Image

    from grefine_core.context import ModelCache

    gpu = args.device.startswith("cuda")
    dtype = torch.float16 if gpu else torch.float32
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    say("bench_e2e: the paper preset end to end, real architectures, RANDOM weights (time only)")
    say(f"  device {args.device}, {'float16' if gpu else 'float32'}, torch threads "
        f"{torch.get_num_threads()}, image {args.size}x{args.size}, stage-1 strength {STAGE1_STRENGTH}")  # fmt: skip
    if gpu:
        say(f"  card: {torch.cuda.get_device_name()}")
    else:
        say("  CPU: one denoising step per stage; indicators + SDXL first, then PASD (one group "
            "of models at a time), stage 2 measured once")  # fmt: skip
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.size,) * 2 + (3,), dtype=np.uint8), "RGB")
    masks = case_masks(args.size)
    fuser = PlantedMask()
    models = ModelCache()
    t = time.perf_counter()
    clip = build_vitb16_clip().to(args.device, "float32")  # the indicators stay float32 (auto)
    clip.random_weights = True  # so PQ runs on seeded random prompts (no prompt files here)
    say(f"  built CLIP ViT-B/16 in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    sdxl = sdxl_pipeline(dtype, args.device)
    say(f"  built SDXL inpainting (UNet, VAE, 2 text encoders) in {time.perf_counter() - t:.0f} s")
    pasd = None
    if gpu:
        pasd = pasd_pipeline(dtype, args.device)
        if args.compile:
            compile_unets(sdxl)
            compile_unets(pasd)
    results: dict[str, dict[str, float]] = {}

    def measure(name: str, stage1: bool, stage2: bool) -> None:
        cfg = config(args.device, stage1, stage2, name == "hq", name != "mask20_bbox", gpu)
        pipe = pipeline(cfg, fuser, models)
        preload(pipe, clip, sdxl if stage1 else None, pasd if stage2 else None)
        best = None
        for _ in range(max(args.repeats, 1)):
            got = run_case(pipe, fuser, masks[name], image, sync)
            best = got if best is None or got["total"] < best["total"] else best
        results[name] = best
        say(f"  {name:<12} indicators {best['indicators']:7.2f} s  stage1 {best['stage1']:7.2f} s"
            f"  stage2 {best['stage2']:7.2f} s  total {best['total']:7.2f} s"
            f"  {'HQ: unchanged' if best['hq'] else ''} regions {best['regions']}")  # fmt: skip

    if gpu:
        say("  warm-up (compilation when --compile) ...")
        for name in ("mask20", "mask20_bbox", "mask5"):
            run_case(pipeline(config(args.device, True, True, False, name != "mask20_bbox", gpu),
                              fuser, models), fuser, masks[name], image, sync)  # fmt: skip
        torch.cuda.reset_peak_memory_stats()
        for name in masks:
            measure(name, stage1=name not in ("hq", "empty"), stage2=name != "hq")
    else:
        for name in masks:
            if name != "hq":
                measure(name, stage1=name != "empty", stage2=False)
        measure("hq", stage1=False, stage2=False)
        del sdxl
        models = ModelCache()
        gc.collect()
        t = time.perf_counter()
        pasd = pasd_pipeline(dtype, args.device)
        say(f"  built SD-1.5 PASD (UNet + PACA, ControlNet, VAE, text encoder) in "
            f"{time.perf_counter() - t:.0f} s")  # fmt: skip
        cfg = config(args.device, False, True, False, True, gpu)
        pipe = pipeline(cfg, fuser, models)
        preload(pipe, clip, None, pasd)
        stage2 = run_case(pipe, fuser, masks["empty"], image, sync)["stage2"]
        say(f"  stage 2 (one PASD step at {args.size} px, VAE included): {stage2:.2f} s")
        for name, r in results.items():
            if name != "hq":
                r["stage2"] = stage2
                r["total"] = r["indicators"] + r["stage1"] + stage2
    say("")
    say(f"{'case':<12} {'indicators':>10} {'stage1':>8} {'stage2':>8} {'total':>8}")
    for name, r in results.items():
        say(f"{name:<12} {r['indicators']:>10.2f} {r['stage1']:>8.2f} {r['stage2']:>8.2f} "
            f"{r['total']:>8.2f}")  # fmt: skip
    if gpu:
        say(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    region = results["mask20"]["stage1"] / results["mask20_bbox"]["stage1"]
    hq = results["hq"]["total"] / results["mask50"]["total"]
    say(f"region_vs_bbox (target <= 0.6): {region:.3f}; hq_vs_full (target <= 0.05): {hq:.4f}")
    say(f"region_vs_bbox_ratio={region:.4f} hq_vs_full_ratio={hq:.4f}")


if __name__ == "__main__":
    main()
