"""Stage-1 cost: crop-to-mask vs the full image on the real SDXL inpainting UNet; tiny-preset split.

Part 1 builds the SDXL inpainting UNet architecture (2.57 B parameters, 9 input channels, random
weights, float32) once and times one forward pass (one denoising step without CFG; CFG doubles
both sides alike) in CPU seconds with one torch thread, at the working size stage 1 would use for
a centred square mask covering 5 %, 20 % and 50 % of a 1024x1024 image (paper-preset mask:
dilation 4 px, feather sigma 3), and at the full 1024x1024 image. Peak memory stays near 11 GB.

Part 2 runs the whole ``tiny`` preset through the ``GRefine`` facade on an example image and prints
each slot's seconds from the trace (first run: includes model loading; second: warm).

Run: ``.venv/bin/python benchmarks/bench_refine.py`` (several minutes on 2 CPU cores; set
``BENCH_REFINE_SKIP_UNET=1`` to run part 2 only). The last line is
``crop_step_ratio_5=<float> crop_step_ratio_20=<float> crop_step_ratio_50=<float>``: the cost of
one step at the crop working size divided by the cost at the full image.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FRACTIONS = (0.05, 0.20, 0.50)
FULL = 1024
NEEDED_GB = 11.5  # fp32 weights 10.3 GB + activations at 1024x1024 (batch 1)


def sdxl_inpaint_unet():
    """The SDXL inpainting UNet (diffusers/stable-diffusion-xl-1.0-inpainting-0.1 config),
    random weights."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=128,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ).eval()


def plans_for_fractions() -> dict[float, object]:
    """Stage 1's plan (box, working size) for a centred square mask of each area fraction.

    The crop path is forced (``crop_max_fraction = 1``) so that every fraction shows the crop
    cost; with the default 0.5 a 50 % mask takes the full path anyway.
    """
    from grefine_masks.ops import fuse_paper
    from grefine_sdxl.refine import stage1_regions
    from grefine_sdxl.settings import SDXLSettings

    from grefine_core.types import PerceptualResult

    s = SDXLSettings(crop_max_fraction=1.0, per_region=False)
    plans = {}
    for frac in FRACTIONS:
        side = int(round(math.sqrt(frac) * FULL))
        lo = (FULL - side) // 2
        P = np.ones((FULL, FULL), np.float32)
        P[lo : lo + side, lo : lo + side] = 0.0
        mask = fuse_paper(PerceptualResult(0.5, P), None, tau=0.5, dilate_px=4, feather_sigma=3.0)
        # SDXL: sizes in multiples of 32 (VAE factor 8 x two UNet downsamplings)
        path, [region], _ = stage1_regions(mask.binary, s, FULL, 32)
        plans[frac] = (mask.fraction, Plan(path, region.box, region.working_size))
    return plans


@dataclass(frozen=True)
class Plan:
    """Where stage 1 inpaints a mask: its path, box and working size."""

    path: str
    box: tuple[int, int, int, int]
    working_size: tuple[int, int]


def available_gb() -> float:
    """MemAvailable from /proc/meminfo (inf where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("inf")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def time_unet_steps() -> dict[float, float]:
    """One UNet forward at each crop working size and at the full image; CPU-time ratios.

    Costs are CPU seconds of this process with one torch thread (``time.process_time``): on a
    shared machine wall time swings with the other jobs' load, CPU time much less. Wall seconds
    are printed too.
    """
    import torch

    torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    plans = plans_for_fractions()
    t0 = time.perf_counter()
    unet = sdxl_inpaint_unet()
    n_params = sum(p.numel() for p in unet.parameters())
    print(
        f"SDXL inpainting UNet: {n_params / 1e9:.3f} B parameters, built in "
        f"{time.perf_counter() - t0:.1f} s; timing with 1 torch thread, batch 1, float32"
    )
    context = torch.randn(1, 77, 2048)
    added = {
        "text_embeds": torch.randn(1, 1280),
        "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]]),
    }

    def step(width: int, height: int) -> tuple[float, float]:
        latents = torch.randn(1, 9, height // 8, width // 8)
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            unet(latents, torch.tensor([500]), context, added_cond_kwargs=added)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        gc.collect()
        return cpu, wall

    step(256, 256)  # warm-up (allocator, kernels) at a small size
    sizes = [(FULL, FULL)] + [plan.working_size for _, plan in plans.values()]
    measured: dict[tuple[int, int], float] = {}
    for w, h in sizes:
        if (w, h) not in measured:
            cpu, wall = step(w, h)
            measured[(w, h)] = cpu
            print(
                f"  one step at {w}x{h}: {cpu:.1f} CPU s, {wall:.1f} wall s "
                f"(peak RSS {peak_rss_gb():.1f} GB)"
            )
    torch.set_num_threads(threads)
    full_s = measured[(FULL, FULL)]
    ratios = {}
    print(f"{'mask':>6} {'masked':>7} {'crop box':>22} {'working':>10} {'CPU s':>8} {'ratio':>6}")
    for frac, (masked, plan) in plans.items():
        w, h = plan.working_size
        ratios[frac] = measured[(w, h)] / full_s
        print(
            f"{frac:>6.0%} {masked:>7.1%} {str(plan.box):>22} {f'{w}x{h}':>10} "
            f"{measured[(w, h)]:>8.1f} {ratios[frac]:>6.3f}  ({plan.path})"
        )
    print(
        f"{'full':>6} {'':>7} {str((0, 0, FULL, FULL)):>22} {f'{FULL}x{FULL}':>10} "
        f"{full_s:>8.1f} {1.0:>6.3f}"
    )
    return ratios


def time_tiny_pipeline_by_stage(runs: int = 2) -> None:
    """The ``tiny`` preset end to end through ``GRefine``, seconds per slot from the trace.

    Falls back to fake indicator/parser/stage-2 plugins (grefine_core.testing) when a real
    plugin of the preset cannot run, so the mask fuser and stage 1 are always timed.
    """
    from grefine_core.config import load_config
    from grefine_core.pipeline import GRefine

    image = ROOT / "examples" / "images" / "cat_table.png"
    prompt = "a red cat on a wooden table"
    cfg = load_config(preset="tiny", environ={})
    try:
        refiner = GRefine(cfg)
        results = [refiner.refine(image, prompt) for _ in range(runs)]
        label = "tiny preset, all real plugins"
    except Exception as e:  # noqa: BLE001 - report and fall back, this is a benchmark
        print(f"tiny preset failed ({type(e).__name__}: {e}); timing with fake stand-ins")
        from grefine_core.testing import fake_config, fake_plugins

        cfg = fake_config(select={"fuser": "mask_paper", "stage1": "sdxl"})
        refiner = GRefine(cfg, extra_plugins=fake_plugins())
        results = [refiner.refine(image, prompt) for _ in range(runs)]
        label = "fakes for PQ/parser/AQ/stage 2, real mask_paper + sdxl"
    print(f"\nTiny pipeline by stage ({label}; {image.name}):")
    print(f"{'slot':<11} {'plugin':<12} " + " ".join(f"{f'run {i + 1} s':>9}" for i in range(runs)))
    for i, record in enumerate(results[0].trace):
        cells = " ".join(f"{r.trace[i].seconds:>9.3f}" for r in results)
        print(f"{record.slot:<11} {record.plugin or '-':<12} {cells}  {record.status}")
    totals = " ".join(f"{sum(rec.seconds for rec in r.trace):>9.3f}" for r in results)
    print(f"{'total':<11} {'':<12} {totals}")
    info = next((r.info for r in results[-1].trace if r.slot == "stage1"), {})
    if info:
        keys = ("path", "crop_box", "working_size", "strength", "steps_run")
        print("stage 1:", {k: info.get(k) for k in keys})


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ratios = None
    if os.environ.get("BENCH_REFINE_SKIP_UNET"):
        print("BENCH_REFINE_SKIP_UNET set: no UNet timings")
    elif available_gb() < NEEDED_GB:
        print(
            f"only {available_gb():.1f} GB of memory available, the SDXL UNet needs about "
            f"{NEEDED_GB} GB: UNet timings skipped"
        )
    else:
        ratios = time_unet_steps()  # first, before the tiny models take memory
    time_tiny_pipeline_by_stage()
    print()
    if ratios is None:
        print("crop_step_ratio_5=nan crop_step_ratio_20=nan crop_step_ratio_50=nan")
    else:
        print(" ".join(f"crop_step_ratio_{round(f * 100)}={ratios[f]:.3f}" for f in FRACTIONS))


if __name__ == "__main__":
    main()
