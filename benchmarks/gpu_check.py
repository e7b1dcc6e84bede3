"""GPU check: fixture parity on CUDA (float32, TF32 off) and reduced-precision timings of the
real-size architectures (random weights).

Sections (each one reports and goes on when it fails, so one short run on a lent GPU says as
much as it can):

1. parity: the shared CLIP Surgery, PQ-Map and PASD fixtures, computed on ``--device`` in
   float32 with TF32 off, against the reference arrays and the manifests' tolerances, through
   torch and through the ONNX backend (CUDA provider and IO binding on a GPU);
2. clip: the CLIP Surgery image pass of ViT-B/16, float32 vs ``--dtype``, batch 1 and 8, and
   surgery vs plain CLIP;
3. sdxl: one stage-1 denoising step of the SDXL inpainting UNet (CFG batch 2, ``--dtype``) on the
   full image and on stage 1's crop-to-mask working sizes for 5 / 20 / 50 % masks;
4. pasd: one stage-2 step of the SD-1.5 PASD architecture (ControlNet + UNet, CFG batch 2) with
   and without PACA, and a whole stage-2 call (10 steps x strength 0.1, VAE included).

Needs a CUDA GPU for real numbers; ``--device cpu --size 256 --reps 1`` is a slow dry run of the
same code. CI never runs it. The last line is ``parity_failures=<int> sections_failed=<int>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from grefine_quality import ops
from grefine_quality.ensemble import TextEnsemble

sys.path.insert(0, str(Path(__file__).resolve().parent))

IMAGES = ("gradient_256", "noise_224")
FACTORS = ("overall", "technical", "rational", "natural")


class Parity:
    """Collects ``max |actual - expected|`` against a tolerance, one row per array."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def check(self, what: str, actual: Any, expected: Any, atol: float) -> None:
        a = _numpy(actual)
        e = _numpy(expected)
        if a.shape != e.shape:
            self.rows.append((f"{what} (shape {a.shape} != {e.shape})", float("inf"), atol))
            return
        diff = float(np.abs(a - e).max()) if a.size else 0.0
        self.rows.append((what, diff, atol))

    @property
    def failures(self) -> list[tuple[str, float, float]]:
        return [r for r in self.rows if not r[1] <= r[2]]

    def report(self) -> None:
        worst = max(self.rows, key=lambda r: r[1] / r[2] if r[2] else r[1])
        print(
            f"parity: {len(self.rows)} arrays, {len(self.failures)} over tolerance; worst "
            f"{worst[0]}: {worst[1]:.2e} (atol {worst[2]:.0e})"
        )
        for what, diff, atol in self.failures:
            print(f"  FAIL {what}: {diff:.3e} > atol {atol:.0e}")


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _median_time(fn: Callable[[], Any], device: str, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def parity_clip(device: str, shared: Path, parity: Parity) -> None:
    """The CLIP Surgery and PQ-Map fixtures (docs/indicators.md) on ``device``, in float32."""
    import torch
    from grefine_clip import SurgeryCLIP
    from grefine_quality import PerceptualQuality, load_pq_prompts
    from PIL import Image

    fx = shared / "fixtures" / "clip_surgery"
    manifest = json.loads((fx / "manifest.json").read_text())

    def atol(npz: str, key: str) -> float:
        return float(manifest["arrays"][f"expected/{npz}.npz"][key]["atol"])

    clip = SurgeryCLIP.from_pretrained(fx / "tiny_clip_vitb16_openai_format.safetensors")
    clip.to(device, "float32")
    prompts = load_pq_prompts(shared / "data" / "pq_embeddings")
    txt = np.load(fx / "expected" / "text.npz")
    for name in IMAGES:
        exp = np.load(fx / "expected" / f"{name}.npz")
        image = Image.open(fx / "images" / f"{name}.png")
        h, w = image.height, image.width
        x = clip.preprocess(image)
        with torch.inference_mode():
            x_new, x_ori = clip.visual.forward_streams(x.to(device))
        for key, value in (
            ("visual_transformer_out_new", x_new),
            ("visual_transformer_out_ori", x_ori),
            ("image_features_raw", raw := clip.encode_image(x)),
            ("plain_clip_image_tokens", clip.encode_image(x, surgery=False)),
            ("image_features_tokennorm", fn := ops.normalise_tokens(raw)),
        ):
            parity.check(f"{name}/{key}", value, exp[key], atol(name, key))
        ens = TextEnsemble(clip).encode(["cat", "dog", "tree"])
        red = TextEnsemble(clip).redundant()
        sims = {
            "raw": fn @ ens.t(),
            "fs_auto": ops.feature_surgery(fn, ens),
            "fs_redundant": ops.feature_surgery(fn, ens, red),
            "fs_single": ops.feature_surgery(fn, ens[:1], red),
        }
        for key, sim in sims.items():
            parity.check(f"{name}/sim_{key}", sim, exp[f"sim_{key}"], atol(name, f"sim_{key}"))
            maps = ops.similarity_map(sim[:, 1:], size=(h, w))
            parity.check(f"{name}/map_{key}", maps, exp[f"map_{key}"], atol(name, f"map_{key}"))
        r = PerceptualQuality(clip, prompts, compat="reference")(image)
        parity.check(
            f"{name}/pq_overall_map", r.map, exp["pq_overall_map"], atol(name, "pq_overall_map")
        )
        for f in FACTORS:
            key = f"pq_{f}_score"
            parity.check(f"{name}/{key}", r.factor_scores[f], exp[key], atol(name, key))
        parity.check(
            f"{name}/pq_multi_score", r.score, exp["pq_multi_score"], atol(name, "pq_multi_score")
        )
        paper = PerceptualQuality(clip, prompts, compat="paper", pq_map="minmax_cask")(image)
        for f in FACTORS:
            key = f"variant_pq_{f}_score_tokennorm"
            parity.check(f"{name}/{key}", paper.factor_scores[f], exp[key], atol(name, key))
        key = "variant_pq_overall_map_tokennorm_hw"
        parity.check(f"{name}/{key}", paper.factor_maps["overall"], exp[key], atol(name, key))

    tokens = torch.from_numpy(txt["plain_prompt_tokens"])
    plain_prompts = ["a photo of a cat.", "a photo of a dog.", "high quality", "low quality"]
    for key, value in (
        ("plain_prompt_text_features_cs", clip.encode_text(tokens)),
        ("plain_prompt_text_features_plain", clip.encode_text(plain_prompts, cut=False)),
        ("ensemble_text_features", TextEnsemble(clip).encode(["cat", "dog", "tree"])),
        ("redundant_features_empty", TextEnsemble(clip).redundant()),
    ):
        parity.check(f"text/{key}", value, txt[key], atol("text", key))
    pq_text = np.load(fx / "expected" / "pq_text.npz")
    pq = PerceptualQuality(clip, prompts, compat="reference")
    for f, feats in pq.factor_text_features().items():
        key = f"{f}_text_features"
        parity.check(f"pq_text/{key}", feats, pq_text[key], atol("pq_text", key))


def parity_pasd(device: str, shared: Path, parity: Parity) -> None:
    """The PASD ControlNet + UNet forward fixture on ``device``, float32 (atol 1e-4)."""
    import torch
    from grefine_pasd import PASDUNet2DConditionModel, load_pasd_controlnet
    from safetensors.torch import load_file

    fx = shared / "fixtures" / "pasd"
    unet = PASDUNet2DConditionModel.from_pretrained(str(fx / "models" / "unet")).eval().to(device)
    controlnet = load_pasd_controlnet(fx / "models" / "controlnet").to(device)
    inputs = {k: v.to(device) for k, v in load_file(str(fx / "inputs.safetensors")).items()}
    ref = load_file(str(fx / "unet_forward.safetensors"))
    with torch.no_grad():
        rgbs, downs, mid = controlnet(
            inputs["fwd_sample"],
            inputs["fwd_timestep"],
            encoder_hidden_states=inputs["prompt_embeds"],
            controlnet_cond=inputs["image01"],
            conditioning_scale=1.0,
            return_dict=False,
        )
        out = unet(
            inputs["fwd_sample"],
            inputs["fwd_timestep"],
            encoder_hidden_states=inputs["prompt_embeds"],
            down_block_additional_residuals=downs,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]
    for i, rgb in enumerate(rgbs):
        parity.check(f"pasd/controlnet.rgb{i}", rgb, ref[f"cs1.0.controlnet.rgb{i}"], 1e-4)
    for i, down in enumerate(downs):
        parity.check(
            f"pasd/controlnet.down{i:02d}", down, ref[f"cs1.0.controlnet.down{i:02d}"], 1e-4
        )
    parity.check("pasd/controlnet.mid", mid, ref["cs1.0.controlnet.mid"], 1e-4)
    parity.check("pasd/unet.sample", out, ref["cs1.0.unet.sample"], 1e-4)


def parity_onnx(device: str, shared: Path, parity: Parity) -> None:
    """The ONNX backend (float32 export; CUDA provider with IO binding on a GPU) against the
    CLIP Surgery / PQ fixtures, and against torch on the real ViT-B/16 architecture."""
    import tempfile

    import torch
    from grefine_clip import SurgeryCLIP
    from grefine_clip.loading import build_clip
    from grefine_clip.model import VIT_B_16_CONFIG
    from grefine_clip.settings import ClipSettings
    from grefine_onnx.runtime import load_onnx_clip
    from grefine_onnx.settings import OnnxSettings
    from grefine_quality import PerceptualQuality, load_pq_prompts
    from PIL import Image
    from safetensors.torch import save_file

    fx = shared / "fixtures" / "clip_surgery"
    manifest = json.loads((fx / "manifest.json").read_text())
    providers = ["cuda", "cpu"] if device == "cuda" else ["cpu"]
    work = Path(tempfile.mkdtemp(prefix="gpu_check_onnx_"))
    settings = OnnxSettings(cache_dir=str(work / "onnx"), providers=providers)
    weights = fx / "tiny_clip_vitb16_openai_format.safetensors"
    onnx_clip = load_onnx_clip(ClipSettings(model=str(weights)), settings)
    print(f"onnx: providers {onnx_clip.providers}, outputs on {onnx_clip.visual.device}")
    if device == "cuda" and not onnx_clip.on_gpu:
        raise RuntimeError(f"the CUDA provider did not start: {onnx_clip.providers}")
    prompts = load_pq_prompts(shared / "data" / "pq_embeddings")
    txt = np.load(fx / "expected" / "text.npz")
    parity.check(
        "onnx/text/ensemble_text_features",
        TextEnsemble(onnx_clip).encode(["cat", "dog", "tree"]),
        txt["ensemble_text_features"],
        float(manifest["arrays"]["expected/text.npz"]["ensemble_text_features"]["atol"]),
    )
    for name in IMAGES:
        exp = np.load(fx / "expected" / f"{name}.npz")
        image = Image.open(fx / "images" / f"{name}.png")
        tol = manifest["arrays"][f"expected/{name}.npz"]
        tokens = onnx_clip.encode_image(onnx_clip.preprocess(image))
        key = "image_features_raw"
        parity.check(f"onnx/{name}/{key}", tokens, exp[key], float(tol[key]["atol"]))
        r = PerceptualQuality(onnx_clip, prompts, compat="reference")(image)
        for key, value in (("pq_overall_map", r.map), ("pq_multi_score", r.score)):
            parity.check(f"onnx/{name}/{key}", value, exp[key], float(tol[key]["atol"]))

    # Real ViT-B/16 architecture, random weights: ONNX vs torch on the same device, float32.
    clip = SurgeryCLIP(build_clip(VIT_B_16_CONFIG, seed=0), description="random ViT-B/16")
    big = work / "vitb16_random.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(big))
    onnx_big = load_onnx_clip(ClipSettings(model=str(big)), settings)
    clip.to(device, "float32")
    for batch in (1, 4):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        ref = clip.encode_image(x)
        parity.check(f"onnx/vitb16/tokens_batch{batch}", onnx_big.encode_image(x), ref, 1e-4)
    texts = ["a red cat", "a photo of a dog on a wooden table"]
    parity.check(
        "onnx/vitb16/text_features",
        onnx_big.encode_text(texts),
        clip.encode_text(texts),
        1e-4,
    )


def time_clip(device: str, dtype: str, reps: int) -> None:
    """ViT-B/16 surgery image pass: float32 vs ``dtype``; surgery vs plain CLIP."""
    import torch
    from grefine_clip import SurgeryCLIP
    from grefine_clip.loading import build_clip
    from grefine_clip.model import VIT_B_16_CONFIG

    clip = SurgeryCLIP(build_clip(VIT_B_16_CONFIG, seed=0), description="random ViT-B/16")
    times: dict[tuple[str, int, bool], float] = {}
    for dt in ("float32", dtype):
        clip.to(device, dt)
        for batch in (1, 8):
            x = torch.randn(batch, 3, 224, 224, device=device)
            for surgery in (True, False):
                times[(dt, batch, surgery)] = _median_time(
                    lambda x=x, s=surgery: clip.encode_image(x, surgery=s), device, reps
                )
    print(f"clip ViT-B/16 image pass ({device}), median of {reps}:")
    print(f"  {'dtype':<8} {'batch':>5} {'surgery ms':>11} {'plain ms':>9} {'surgery/plain':>14}")
    for dt in ("float32", dtype):
        for batch in (1, 8):
            s, p = times[(dt, batch, True)], times[(dt, batch, False)]
            print(f"  {dt:<8} {batch:>5} {s * 1e3:>11.2f} {p * 1e3:>9.2f} {s / p:>14.3f}")
    for batch in (1, 8):
        ratio = times[(dtype, batch, True)] / times[("float32", batch, True)]
        print(f"  {dtype} / float32, surgery, batch {batch}: {ratio:.3f}")


def _materialised(build: Callable[[], Any], seed: int, device: str, dtype: Any) -> Any:
    import torch
    from bench_pasd import fill_random_

    with torch.device("meta"):
        module = build()
    return fill_random_(module, seed, device).to(dtype)


def time_sdxl(device: str, dtype: str, size: int, reps: int) -> None:
    """One SDXL inpainting UNet step (CFG batch 2) at the full size and at crop working sizes."""
    import torch
    from bench_refine import plans_for_fractions, sdxl_inpaint_unet

    dt = getattr(torch, dtype)
    t0 = time.perf_counter()
    unet = _materialised(sdxl_inpaint_unet, 0, device, dt)
    n = sum(p.numel() for p in unet.parameters())
    print(f"sdxl inpainting UNet {n / 1e9:.3f} B params, built in {time.perf_counter() - t0:.1f} s")
    context = torch.randn(2, 77, 2048, device=device, dtype=dt)
    added = {
        "text_embeds": torch.randn(2, 1280, device=device, dtype=dt),
        "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, device=device, dtype=dt),
    }

    def step(w: int, h: int) -> float:
        latents = torch.randn(2, 9, h // 8, w // 8, device=device, dtype=dt)
        t = torch.tensor([500], device=device)
        with torch.inference_mode():
            return _median_time(
                lambda: unet(latents, t, context, added_cond_kwargs=added), device, reps
            )

    scale = size / 1024
    full = step(size, size)
    print(f"  one CFG step, {dtype}, {size}x{size}: {full * 1e3:.1f} ms")
    for frac, (masked, plan) in plans_for_fractions().items():
        w, h = (int(round(v * scale / 32)) * 32 for v in plan.working_size)
        t = step(w, h)
        print(
            f"  mask {frac:.0%} (masked {masked:.1%}): crop working size {w}x{h}: "
            f"{t * 1e3:.1f} ms, ratio vs full {t / full:.3f}"
        )
    if device == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def time_pasd(device: str, dtype: str, size: int, reps: int) -> None:
    """One PASD step with and without PACA (CFG batch 2) and a whole stage-2 call."""
    import torch
    from bench_pasd import build, make_pipeline, run_stage2
    from PIL import Image

    dt = getattr(torch, dtype)
    t0 = time.perf_counter()
    unet, stock, controlnet, vae = (m.to(dt) for m in build(0, device))
    print(f"pasd SD-1.5 architecture built in {time.perf_counter() - t0:.1f} s")

    pasd, plain = make_pipeline(unet, controlnet, vae), make_pipeline(stock, controlnet, vae)
    side = size // 8
    gen = torch.Generator(device=device).manual_seed(0)
    latents = torch.randn(1, 4, side, side, generator=gen, device=device, dtype=dt)
    control = torch.rand(1, 3, size, size, generator=gen, device=device, dtype=dt)
    embeds = torch.randn(2, 77, 768, generator=gen, device=device, dtype=dt)

    def step(pipe: Any) -> float:
        with torch.no_grad():
            return _median_time(
                lambda: pipe.predict_noise(latents, 500, embeds, control, 9.0, 1.0), device, reps
            )

    t_paca, t_stock = step(pasd), step(plain)
    print(
        f"  one CFG step, {dtype}, {size}x{size}: with PACA {t_paca * 1e3:.1f} ms, without "
        f"{t_stock * 1e3:.1f} ms, ratio {t_paca / t_stock:.3f}"
    )
    image = Image.fromarray(
        (control[0].float().permute(1, 2, 0).cpu().numpy() * 255).astype("uint8")
    )

    t_call = _median_time(
        lambda: run_stage2(pasd, image, embeds), device, max(1, reps // 2), warmup=1
    )
    print(
        f"  whole stage-2 call (10 steps x strength 0.1 = 1 step, VAE encode/decode, colour fix) "
        f"at {size}x{size}: {t_call * 1e3:.1f} ms; a full 20-step run would denoise for "
        f"{20 * t_paca * 1e3:.0f} ms"
    )
    if device == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--size", type=int, default=1024, help="image side for sdxl and pasd")
    parser.add_argument("--reps", type=int, default=5, help="timed runs per measure (median)")
    parser.add_argument(
        "--sections", default="parity,clip,sdxl,pasd", help="comma-separated subset to run"
    )
    args = parser.parse_args(argv)

    import torch
    from diffusers.utils import logging as diffusers_logging

    from grefine_core.testing.shared_data import ENV_VAR, shared_path

    # Casting random-weight models with .to(dtype) is intended here; keep the log to results.
    diffusers_logging.set_verbosity_error()

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    # Parity is judged in true float32: TF32 matmuls/convolutions would exceed the fixtures' atol.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    gpu = f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(f"torch {torch.__version__}, device {args.device}{gpu}, TF32 off")

    shared = shared_path()
    parity = Parity()
    failed: list[str] = []
    sections = {
        "parity": lambda: (
            parity_clip(args.device, shared, parity),
            parity_pasd(args.device, shared, parity),
            parity_onnx(args.device, shared, parity),
            parity.report(),
        ),
        "clip": lambda: time_clip(args.device, args.dtype, args.reps),
        "sdxl": lambda: time_sdxl(args.device, args.dtype, args.size, args.reps),
        "pasd": lambda: time_pasd(args.device, args.dtype, args.size, args.reps),
    }
    for name in args.sections.split(","):
        if name == "parity" and shared is None:
            print(f"parity: skipped, shared fixtures not found (set {ENV_VAR})")
            continue
        t0 = time.perf_counter()
        try:
            sections[name]()
        except Exception:  # noqa: BLE001 - report and go on: one run must say all it can
            failed.append(name)
            traceback.print_exc()
        print(f"[{name}: {time.perf_counter() - t0:.1f} s]", flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    print(f"parity_failures={len(parity.failures)} sections_failed={len(failed)}")
    return 1 if failed or parity.failures else 0


if __name__ == "__main__":
    sys.exit(main())
