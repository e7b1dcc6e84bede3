"""Benchmark: the AQ text side of a 6-phrase prompt on the real ViT-B/16 text tower (random weights).

Every phrase, head noun and the whole prompt (plus the empty string for the redundant feature) goes
through the 85-template prompt ensemble. Compared, in one run:

* optimised, cold cache: one batched pass per text over its 85 templates (length-sorted chunks,
  each cut after its longest end-of-text token, exact under the causal mask), as
  ``AlignmentQuality`` does (per text, so that a text's features never depend on which other texts
  were uncached with it);
* optimised, warm cache: the same call again (LRU cache of text features);
* naive: one padded 77-token ``encode_text`` call per template per text.

Run: ``.venv/bin/python benchmarks/bench_aq_text.py``. ``bench_parsers.py`` imports
:func:`measure_aq_text_speedup` and prints its result.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The benchmark prompt and its phrases (text, head noun), written by hand.
PROMPT = (
    "a red cat sitting on a wooden table next to a blue vase, a small dog with a yellow collar, "
    "a green plant in a clay pot"
)
PHRASES = [
    ("red cat sitting", "cat"),
    ("wooden table", "table"),
    ("blue vase", "vase"),
    ("small dog", "dog"),
    ("yellow collar", "collar"),
    ("green plant clay pot", "pot"),
]


def six_phrase_prompt() -> Any:
    """The benchmark prompt as a hand-built ``ParsedPrompt`` (6 phrases, all with a noun)."""
    from grefine_core.types import ParsedPrompt, Phrase

    phrases = []
    cursor = 0
    for i, (text, noun) in enumerate(PHRASES):
        first = text.split()[0]
        start = PROMPT.index(first, cursor)
        n_start = PROMPT.index(noun, start)
        end = n_start + len(noun)
        cursor = end
        phrases.append(Phrase(text, noun, (start, end), 0 if i in (1, 2) else i, (n_start, end)))
    return ParsedPrompt(prompt=PROMPT, phrases=phrases, parser="hand")


def build_vitb16_clip() -> Any:
    """``SurgeryCLIP`` over open_clip's ViT-B-16-quickgelu with random weights (offline)."""
    import logging

    import open_clip
    import torch
    from grefine_clip import SurgeryCLIP

    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns "initialized randomly"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    return SurgeryCLIP(model, description="ViT-B-16-quickgelu, random weights")


def naive_ensemble(clip: Any, texts: list[str]) -> Any:
    """Reference implementation: one padded 77-token call per template per text."""
    import torch

    out = []
    with torch.inference_mode():
        for text in texts:
            feats = []
            for template in clip.templates:
                tokens = clip.tokenize([template.replace("{}", text)])
                f = clip.encode_text(tokens, cut=False)[0]
                feats.append(f / f.norm())
            mean = torch.stack(feats).mean(0)
            out.append(mean / mean.norm())
    return torch.stack(out)


def measure_aq_text_speedup(clip: Any = None, cold_repeats: int = 2) -> dict[str, float]:
    """Time the AQ text side of the 6-phrase prompt: optimised (cold, warm) vs naive.

    :param clip: a ``SurgeryCLIP`` (default: ViT-B/16 with random weights, built here).
    :param cold_repeats: cold-cache runs (cache cleared before each); the median is reported.
    :returns: ``{"optimised_ms", "naive_ms", "warm_ms", "speedup", "max_abs_diff", "n_texts",
        "n_sequences"}``; ``speedup = naive_ms / optimised_ms``.
    """
    from grefine_quality import AlignmentQuality

    clip = clip if clip is not None else build_vitb16_clip()
    aq = AlignmentQuality(clip)
    phrase_texts, noun_texts, prompt = aq.texts_of(six_phrase_prompt())
    texts = list(dict.fromkeys([*phrase_texts, *noun_texts, prompt]))

    cold = []
    for _ in range(max(1, cold_repeats)):
        aq.texts.cache.clear()  # every cold run starts from an empty cache
        t0 = time.perf_counter()
        feats, redundant = aq.text_features(texts)
        cold.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    aq.text_features(texts)
    warm = time.perf_counter() - t0

    t0 = time.perf_counter()
    naive = naive_ensemble(clip, [*texts, ""])
    naive_s = time.perf_counter() - t0

    import torch

    optimised = torch.cat([feats, redundant], 0)
    cold_s = statistics.median(cold)
    return {
        "optimised_ms": cold_s * 1e3,
        "naive_ms": naive_s * 1e3,
        "warm_ms": warm * 1e3,
        "speedup": naive_s / cold_s,
        "max_abs_diff": float((optimised - naive).abs().max()),
        "n_texts": float(len(texts) + 1),
        "n_sequences": float((len(texts) + 1) * len(clip.templates)),
    }


def main() -> None:
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    r = measure_aq_text_speedup()
    print(
        f"AQ text side, 6-phrase prompt, {int(r['n_texts'])} texts x 85 templates = "
        f"{int(r['n_sequences'])} sequences, ViT-B/16 text tower (random weights, CPU fp32)"
    )
    print(f"  optimised, cold cache: {r['optimised_ms']:.1f} ms")
    print(f"  optimised, warm cache: {r['warm_ms']:.3f} ms")
    print(f"  naive (77-token call per template per text): {r['naive_ms']:.1f} ms")
    print(f"  max |optimised - naive| = {r['max_abs_diff']:.2e} (target <= 1e-5)")
    print(f"aq_text_speedup={r['speedup']:.2f} (target >= 4)")


if __name__ == "__main__":
    main()
