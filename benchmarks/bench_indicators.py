"""Benchmark: CLIP Surgery and PQ-Map cost on the real ViT-B/16 architecture (random weights, CPU).

Measured in one run, interleaved (so load from other processes hits both sides alike), medians:

* ``surgery_vs_plain_ratio`` = surgery ``SurgeryCLIP.encode_image`` / plain open_clip
  ``encode_image`` (target <= 1.3);
* ``pq_vs_encode_ratio`` = ``PerceptualQuality(image)`` (preprocess, one surgery pass, score and
  map of all four factors; prompt features encoded once at construction) / one plain open_clip
  ``encode_image`` (target <= 1.5).

Run: ``.venv/bin/python benchmarks/bench_indicators.py [--repeats N]``. The last printed line is
``surgery_vs_plain_ratio=<float> pq_vs_encode_ratio=<float>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--image-size", type=int, default=512, help="side of the test image")
    args = parser.parse_args()

    import numpy as np
    import torch
    from bench_aq_text import build_vitb16_clip
    from grefine_quality import PerceptualQuality, load_pq_prompts
    from grefine_quality.pq import PQPrompts
    from PIL import Image

    from grefine_core.errors import MissingWeightsError

    clip = build_vitb16_clip()
    plain_model = clip.model
    try:
        prompts = load_pq_prompts()
        source = "released PQ prompts"
    except MissingWeightsError:
        prompts = PQPrompts.random(clip.text_width)
        source = "random PQ prompts (files not found)"
    pq = PerceptualQuality(clip, prompts, compat="paper")

    rng = np.random.default_rng(0)
    side = args.image_size
    image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    x = clip.preprocess(image)

    def plain() -> None:
        with torch.inference_mode():
            plain_model.encode_image(x)

    def surgery() -> None:
        clip.encode_image(x)

    def pq_call() -> None:
        pq(image)

    for fn in (plain, surgery, pq_call):  # warm-up
        fn()
    times: dict[str, list[float]] = {"plain": [], "surgery": [], "pq": []}
    for _ in range(args.repeats):
        times["plain"].append(_timed(plain))
        times["surgery"].append(_timed(surgery))
        times["pq"].append(_timed(pq_call))
    med = {k: statistics.median(v) for k, v in times.items()}

    # Row 0 of the surgery tokens is plain CLIP's image embedding.
    with torch.inference_mode():
        ref = plain_model.encode_image(x)
    diff = float((clip.encode_image(x)[:, 0] - ref).abs().max())

    print(f"torch threads: {torch.get_num_threads()}; model: {clip}; {source}")
    print(f"image {side}x{side}, {args.repeats} interleaved repeats, medians:")
    print(f"  plain open_clip encode_image: {med['plain'] * 1e3:.1f} ms")
    print(f"  surgery encode_image:         {med['surgery'] * 1e3:.1f} ms")
    print(f"  PQ score + map (4 factors):   {med['pq'] * 1e3:.1f} ms")
    print(f"  max |surgery cls - plain embedding| = {diff:.2e}")
    s_ratio = med["surgery"] / med["plain"]
    p_ratio = med["pq"] / med["plain"]
    print("targets: surgery_vs_plain_ratio <= 1.3, pq_vs_encode_ratio <= 1.5")
    print(f"surgery_vs_plain_ratio={s_ratio:.3f} pq_vs_encode_ratio={p_ratio:.3f}")


if __name__ == "__main__":
    main()
