"""Benchmark: cost of PACA and of the stage-2 "mild" PASD pass, on the real SD-1.5 PASD architecture.

Random weights (built on the meta device, then filled), float32, CPU, CFG batch of 2, at a reduced
latent size (default 32x32 latent = 256x256 px; the reference runs at >= 768 px, where PACA's dense
attention weighs more). Prints:

* ``paca_step_ratio``: time of one denoising step (ControlNet + PASD UNet with PACA, CFG) over
  the same step with the stock UNet (identical weights, PACA blocks left out);
* ``stage2_fraction``: the denoising time of the stage-2 default (10 steps, strength 0.1 ->
  ``int(10 * 0.1) = 1`` step, measured inside a real ``PASDPipeline`` call) over a full 20-step
  PASD run (20 x the measured per-step cost).

The last line is ``paca_step_ratio=<float> stage2_fraction=<float>``.

Timing uses the process CPU time with one torch thread by default (``--clock cpu``), which
stays meaningful on a loaded shared machine; ``--clock wall --threads 0`` gives wall time with
torch's default threads.

Usage: ``python benchmarks/bench_pasd.py [--latent 32] [--reps 3] [--threads 1] [--clock cpu]``
"""

from __future__ import annotations

import argparse
import math
import time

SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
}


def fill_random_(module, seed: int, device: str = "cpu"):
    """Materialise a meta-built module on ``device`` with scaled random weights."""
    import torch

    module.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(p.numel() // p.shape[0]), generator=gen)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return module.eval()


def build(seed: int = 0, device: str = "cpu"):
    """The SD-1.5 PASD UNet, a stock UNet sharing its weights, the ControlNet and the VAE, with
    float32 random weights on ``device``."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from grefine_pasd.controlnet import PASDControlNetModel
    from grefine_pasd.unet import PASDUNet2DConditionModel

    cn_cfg = {
        k: v
        for k, v in SD15_UNET.items()
        if k not in ("sample_size", "out_channels", "up_block_types")
    }
    with torch.device("meta"):
        unet = PASDUNet2DConditionModel(**SD15_UNET)
        stock = UNet2DConditionModel(**SD15_UNET)
        controlnet = PASDControlNetModel(
            **cn_cfg, conditioning_embedding_out_channels=(16, 32, 96, 256), return_rgbs=True
        )
        vae = AutoencoderKL(**SD15_VAE)
    fill_random_(unet, seed, device)
    fill_random_(controlnet, seed + 1, device)
    fill_random_(vae, seed + 2, device)
    shared = {k: v for k, v in unet.state_dict().items() if ".pixel_attentions." not in k}
    stock.load_state_dict(shared, assign=True, strict=True)
    return unet, stock.eval(), controlnet, vae


def make_pipeline(unet, controlnet, vae):
    """A text-encoder-less PASD pipeline (prompt embeddings are passed in) with UniPC."""
    from diffusers import UniPCMultistepScheduler
    from grefine_pasd.pipeline import PASDPipeline
    from grefine_pasd.tiny import SD15_SCHEDULER_CONFIG

    pipe = PASDPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        controlnet=controlnet,
        scheduler=UniPCMultistepScheduler.from_config(dict(SD15_SCHEDULER_CONFIG)),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_stage2(pipe, image, embeds, **extra):
    """The stage-2 default through ``pipe``: 10 steps at strength 0.1 (one step), CFG 9.

    :param embeds: ``[negative, positive]`` prompt embeddings, batch 2.
    """
    import torch

    return pipe(
        image=image,
        prompt_embeds=embeds[1:],
        negative_prompt_embeds=embeds[:1],
        num_inference_steps=10,
        strength=0.1,
        guidance_scale=9.0,
        generator=torch.Generator(device=embeds.device).manual_seed(0),
        output_type="np",
        **extra,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=int, default=32, help="latent side (px = 8x); default 32")
    parser.add_argument("--reps", type=int, default=3, help="timed steps per variant (min taken)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = default)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="what is timed")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    t0 = time.perf_counter()
    unet, stock, controlnet, vae = build()
    print(f"built SD-1.5 PASD on meta + filled in {time.perf_counter() - t0:.1f} s")
    n_unet = sum(p.numel() for p in unet.parameters())
    print(
        f"params: PASD UNet {n_unet / 1e6:.1f} M (PACA {unet.paca_parameters() / 1e6:.1f} M, "
        f"{sum(len(b.pixel_attentions) for b in unet.up_blocks)} blocks), ControlNet "
        f"{sum(p.numel() for p in controlnet.parameters()) / 1e6:.1f} M, VAE "
        f"{sum(p.numel() for p in vae.parameters()) / 1e6:.1f} M"
    )

    pasd, plain = make_pipeline(unet, controlnet, vae), make_pipeline(stock, controlnet, vae)
    side = args.latent
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, side, side, generator=gen)
    control = torch.rand(1, 3, side * 8, side * 8, generator=gen)
    embeds = torch.randn(2, 77, 768, generator=gen)  # CFG: [negative, positive]
    print(
        f"latent {side}x{side} ({side * 8}x{side * 8} px), CFG batch 2, float32, "
        f"{torch.get_num_threads()} threads, {args.clock} time"
    )

    def step(pipe) -> float:
        start = clock()
        with torch.no_grad():
            pipe.predict_noise(latents, 500, embeds, control, 9.0, 1.0)
        return clock() - start

    step(pasd)  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {"paca": [], "stock": []}
    for _ in range(args.reps):  # interleaved so that machine load affects both alike
        times["stock"].append(step(plain))
        times["paca"].append(step(pasd))
    t_paca, t_stock = min(times["paca"]), min(times["stock"])
    print(
        f"step with PACA    : {t_paca:.2f} s  (runs {', '.join(f'{t:.2f}' for t in times['paca'])})"
    )
    print(
        f"step without PACA : {t_stock:.2f} s  (runs {', '.join(f'{t:.2f}' for t in times['stock'])})"
    )

    # Stage-2 default: 10 steps at strength 0.1 -> int(10 * 0.1) = 1 step, through the pipeline.
    starts: list[float] = []
    ends: list[float] = []
    hook = controlnet.register_forward_pre_hook(lambda *a: starts.append(clock()))

    def on_step(_pipe, _i, _t, _tensors):
        ends.append(clock())
        return {}

    from PIL import Image

    image = Image.fromarray((control[0].permute(1, 2, 0).numpy() * 255).astype("uint8"))
    call_start = clock()
    out = run_stage2(pasd, image, embeds, callback_on_step_end=on_step)
    call_total = clock() - call_start
    hook.remove()
    stage2_denoise = sum(e - s for s, e in zip(starts, ends, strict=True))
    full_denoise = 20 * t_paca
    stage2_fraction = stage2_denoise / full_denoise
    vae_and_rest = call_total - stage2_denoise
    print(
        f"stage 2 (10 steps x strength 0.1): {out.steps_run} step(s) run, denoising "
        f"{stage2_denoise:.2f} s, whole call {call_total:.2f} s (VAE encode/decode + rest "
        f"{vae_and_rest:.2f} s)"
    )
    print(f"full 20-step PASD denoising: 20 x {t_paca:.2f} s = {full_denoise:.2f} s")
    print(
        "end-to-end fraction incl. VAE (same VAE cost in both): "
        f"{call_total / (full_denoise + vae_and_rest):.4f}"
    )
    print(f"paca_step_ratio={t_paca / t_stock:.4f} stage2_fraction={stage2_fraction:.4f}")


if __name__ == "__main__":
    main()
