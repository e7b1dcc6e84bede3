"""Benchmark: ONNX Runtime vs torch for the CLIP Surgery indicators on the real ViT-B/16
architecture (random weights, QuickGELU).

Two measurements per backend, interleaved (torch, ONNX, torch, ONNX, ...) so load from other
processes hits both alike; medians per image:

* image: one surgery image pass (``encode_image`` of a preprocessed 224 px image, batch 1);
* assess: a full PQ + AQ assessment of one image with a 6-phrase prompt: preprocessing, one image
  pass shared by PQ and AQ, the PQ score and map (4 factors), the AQ prompt ensemble of the
  prompt's 6 phrases, 6 nouns, the whole prompt (85 templates each; a new prompt every repeat,
  so nothing but ``""`` comes from the text cache) and the defect map. The prompts are parsed
  beforehand (NLTK parser), outside the timing.

``--device cpu`` (default): torch float32 eager vs ONNX Runtime's CPU provider, same thread
count. ``--device cuda``: torch float16 eager vs ONNX Runtime with the CUDA provider and with the
TensorRT provider, both from the float16 export; the last line then reports the faster ONNX
provider. Ratios are ONNX time / torch time (target on CPU: <= 0.8).

Run: ``.venv/bin/python benchmarks/bench_onnx.py [--device cpu|cuda] [--repeats N]``. The last
printed line is ``onnx_vs_torch_image_ratio=<float> onnx_vs_torch_assess_ratio=<float>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


#: 6-phrase prompts (NLTK parser), with little vocabulary shared between them.
PROMPTS = [
    "a red cat sitting on a wooden table next to a blue vase with yellow flowers under a bright "
    "lamp in a cozy room",
    "an old fisherman with a grey beard holding a silver fish near a small boat on a calm lake at "
    "sunset",
    "a young girl in a green dress riding a brown horse across a wide field under a cloudy sky "
    "beside an old barn",
    "a tall robot with glowing eyes carrying a heavy crate through a narrow alley past a neon sign "
    "in a rainy city",
    "a white swan gliding over a frozen pond near a stone bridge below snowy mountains behind a "
    "pine forest",
    "a chef in a black apron slicing fresh tomatoes on a marble counter beside a copper pot in a "
    "busy kitchen",
    "a golden retriever chasing a red ball along a sandy beach toward a striped umbrella by a "
    "turquoise sea",
]


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str) -> float:
    # Let the other backend's worker threads stop spinning before the clock starts.
    time.sleep(0.25)
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _parse(prompts: list[str]) -> list[Any]:
    from grefine_core.config import load_config
    from grefine_core.pipeline import GRefine
    from grefine_core.types import SLOTS

    select = {s: "none" for s in SLOTS} | {"parser": "nltk"}
    pipe = GRefine(load_config(preset="paper", overrides={"select": select}, environ={}))
    return [pipe.parse(p) for p in prompts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=7, help="image passes per backend")
    parser.add_argument(
        "--assess-repeats", type=int, default=3, help="assessments per backend (new prompt each)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    parser.add_argument("--work-dir", default="", help="folder for the weights and the export")
    args = parser.parse_args(argv)
    if args.assess_repeats + 1 > len(PROMPTS):
        parser.error(f"--assess-repeats is at most {len(PROMPTS) - 1}")

    import numpy as np
    import onnxruntime as ort
    import torch
    from grefine_clip import SurgeryCLIP
    from grefine_clip.loading import build_clip
    from grefine_clip.model import VIT_B_16_CONFIG
    from grefine_clip.settings import ClipSettings
    from grefine_onnx.runtime import load_onnx_clip
    from grefine_onnx.settings import OnnxSettings
    from grefine_quality import AlignmentQuality, PerceptualQuality, load_pq_prompts
    from grefine_quality.pq import PQPrompts
    from PIL import Image
    from safetensors.torch import save_file

    from grefine_core.errors import MissingWeightsError

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_onnx_"))
    work.mkdir(parents=True, exist_ok=True)

    # Random ViT-B/16 written once as an OpenAI-format file: both backends load the same weights.
    t0 = time.perf_counter()
    clip = SurgeryCLIP(build_clip(VIT_B_16_CONFIG, seed=0), description="random ViT-B/16")
    weights = work / "vitb16_random.safetensors"
    if not weights.is_file():
        save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(weights))
    if cuda:
        clip = clip.to("cuda", "float16")
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, device {args.device}, "
        f"threads {args.threads}" + (f", GPU {torch.cuda.get_device_name()}" if cuda else "")
    )
    print(f"built ViT-B/16 (random weights) in {time.perf_counter() - t0:.1f} s")

    backends: dict[str, Any] = {"torch": clip}
    provider_sets = (
        [("cuda", ["cuda", "cpu"]), ("tensorrt", ["tensorrt", "cuda", "cpu"])]
        if cuda
        else [("cpu", ["cpu"])]
    )
    for name, providers in provider_sets:
        t0 = time.perf_counter()
        settings = OnnxSettings(
            cache_dir=str(work / "onnx"),
            providers=providers,
            fp16=cuda,
            intra_op_threads=args.threads,
        )
        onnx_clip = load_onnx_clip(ClipSettings(model=str(weights)), settings)
        if cuda and not onnx_clip.on_gpu:
            print(f"onnx/{name}: no GPU provider started ({onnx_clip.providers}); skipped")
            continue
        if name == "tensorrt" and "TensorrtExecutionProvider" not in onnx_clip.providers:
            # It fell back to CUDA (logged above): timing it again would be the CUDA row twice.
            print(f"onnx/tensorrt: TensorRT did not start ({onnx_clip.providers}); skipped")
            continue
        backends[f"onnx/{name}"] = onnx_clip
        print(
            f"onnx/{name}: export + sessions in {time.perf_counter() - t0:.1f} s, "
            f"providers {onnx_clip.providers}, dtype {onnx_clip.manifest['dtype']}"
        )

    try:
        prompts = load_pq_prompts()
        pq_source = "released PQ prompts"
    except MissingWeightsError:
        prompts = PQPrompts.random(clip.text_width)
        pq_source = "random PQ prompts (files not found)"
    pq = {k: PerceptualQuality(c, prompts, compat="paper") for k, c in backends.items()}
    aq = {k: AlignmentQuality(c) for k, c in backends.items()}
    parsed = _parse(PROMPTS[: args.assess_repeats + 1])
    n_phrases = [len([p for p in x.phrases if p.noun]) for x in parsed]

    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((384, 512, 3)) * 255).astype(np.uint8))
    x = clip.preprocess(image)

    # Parity of the tokens first (a fast wrong answer is no answer).
    ref = clip.encode_image(x).float().cpu()
    for k, c in backends.items():
        if k != "torch":
            diff = float((c.encode_image(x).float().cpu() - ref).abs().max())
            print(f"{k}: max |tokens - torch tokens| = {diff:.2e}")

    def assess(k: str, prompt_index: int) -> None:
        c = backends[k]
        tokens = c.encode_image(c.preprocess(image))
        pq[k](image, tokens=tokens)
        aq[k](image, parsed[prompt_index], tokens=tokens)

    image_times: dict[str, list[float]] = {k: [] for k in backends}
    assess_times: dict[str, list[float]] = {k: [] for k in backends}
    for k in backends:  # warm-up: first-run allocations, TensorRT engine builds, "" feature
        backends[k].encode_image(x)
        assess(k, 0)
    for _ in range(args.repeats):
        for k, c in backends.items():
            image_times[k].append(_timed(lambda c=c: c.encode_image(x), args.device))
    for i in range(1, args.assess_repeats + 1):
        for k in backends:
            assess_times[k].append(_timed(lambda k=k, i=i: assess(k, i), args.device))

    med_img = {k: statistics.median(v) for k, v in image_times.items()}
    med_ass = {k: statistics.median(v) for k, v in assess_times.items()}
    print(f"assess: {pq_source}; prompts with {n_phrases} phrases (first one = warm-up)")
    print(f"{'backend':<16} {'image pass':>12} {'PQ+AQ assess':>14}")
    for k in backends:
        print(f"{k:<16} {med_img[k] * 1e3:>9.1f} ms {med_ass[k]:>11.3f} s")
    onnx_keys = [k for k in backends if k != "torch"]
    if not onnx_keys:
        print("error: no ONNX backend could run", file=sys.stderr)
        return 1
    for k in onnx_keys:
        print(
            f"{k}: image ratio {med_img[k] / med_img['torch']:.3f}, "
            f"assess ratio {med_ass[k] / med_ass['torch']:.3f}"
        )
    best = min(onnx_keys, key=lambda k: med_img[k] + med_ass[k])
    print(f"target on CPU: ratio <= 0.8; reported backend: {best}")
    print(
        f"onnx_vs_torch_image_ratio={med_img[best] / med_img['torch']:.3f} "
        f"onnx_vs_torch_assess_ratio={med_ass[best] / med_ass['torch']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
