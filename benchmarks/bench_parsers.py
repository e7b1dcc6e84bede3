"""Benchmark: prompt-parser latency over PartiPrompts, then the AQ text-side speed-up.

Run: ``.venv/bin/python benchmarks/bench_parsers.py [--prompts PATH] [--no-aq]``

* Parsers: every one of the 1,632 PartiPrompts parsed one at a time (models loaded and warmed
  first); the median milliseconds per prompt of each parser (targets: NLTK <= 2 ms,
  spaCy <= 5 ms on the 2-core build machine). The spaCy batch path (``nlp.pipe``) is reported too.
* AQ text side: :func:`bench_aq_text.measure_aq_text_speedup` (6-phrase prompt, real ViT-B/16
  text tower with random weights, optimised cold cache vs naive), printed as it returns.

The last line is ``nltk_ms=<float> spacy_ms=<float> aq_text_speedup=<float>``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_prompts(path: str | None) -> list[str]:
    if path is None:
        from grefine_core.testing.shared_data import shared_path

        found = shared_path("data", "prompts", "PartiPrompts.tsv")
        if found is None:
            raise SystemExit("PartiPrompts.tsv not found: pass --prompts PATH")
        path = str(found)
    with open(path, encoding="utf-8", newline="") as f:
        return [row["Prompt"] for row in csv.DictReader(f, delimiter="\t")]


def time_each(fn, prompts: list[str]) -> list[float]:
    """Milliseconds of ``fn(prompt)`` for every prompt, one call each."""
    out = []
    for p in prompts:
        t0 = time.perf_counter()
        fn(p)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def describe(name: str, ms: list[float], target: float) -> float:
    med = statistics.median(ms)
    p90 = statistics.quantiles(ms, n=10)[-1]
    verdict = "ok" if med <= target else "OVER TARGET"
    print(
        f"{name:>6}: median {med:.3f} ms/prompt, p90 {p90:.3f} ms, max {max(ms):.1f} ms, "
        f"total {sum(ms) / 1e3:.2f} s  (target <= {target:g} ms: {verdict})"
    )
    return med


def bench_parsers(prompts: list[str]) -> tuple[float, float]:
    from grefine_nltk import parse_prompt as parse_nltk
    from grefine_nltk.taggers import resolve_tagger
    from grefine_spacy.parser import load_nlp, parse_prompts, parse_with

    t0 = time.perf_counter()
    parse_nltk("a warm-up prompt")
    print(f"nltk tagger: {resolve_tagger('auto')} (first call {time.perf_counter() - t0:.2f} s)")
    t0 = time.perf_counter()
    nlp = load_nlp()
    parse_with(nlp, "a warm-up prompt")
    print(f"spaCy model loaded in {time.perf_counter() - t0:.2f} s")

    print(f"{len(prompts)} PartiPrompts, one parse call each:")
    nltk_ms = describe("nltk", time_each(parse_nltk, prompts), 2.0)
    spacy_ms = describe("spacy", time_each(lambda p: parse_with(nlp, p), prompts), 5.0)
    t0 = time.perf_counter()
    parse_prompts(prompts)
    batch = (time.perf_counter() - t0) * 1e3 / len(prompts)
    print(f"{'spacy':>6}: batched nlp.pipe {batch:.3f} ms/prompt (mean)")
    return nltk_ms, spacy_ms


def bench_aq_text() -> float:
    """Run the CLIP helper's AQ text benchmark; nan (with a message) when it is unavailable."""
    sys.path.insert(0, str(HERE))
    try:
        from bench_aq_text import measure_aq_text_speedup
    except ImportError as e:
        print(f"AQ text benchmark unavailable (benchmarks/bench_aq_text.py: {e}); reporting nan")
        return math.nan
    print("AQ text side (6-phrase prompt, ViT-B/16 text tower, random weights) ...", flush=True)
    try:
        r = measure_aq_text_speedup()
    except Exception as e:  # noqa: BLE001 - report, do not hide the parser numbers
        print(f"AQ text benchmark failed: {type(e).__name__}: {e}; reporting nan")
        return math.nan
    if isinstance(r, dict):
        for key, value in r.items():
            print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
        return float(r.get("speedup", math.nan))
    print(f"  speedup: {r}")
    return float(r)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", help="PartiPrompts.tsv (default: the shared folder's)")
    ap.add_argument("--no-aq", action="store_true", help="skip the AQ text benchmark (nan)")
    args = ap.parse_args(argv)

    nltk_ms, spacy_ms = bench_parsers(load_prompts(args.prompts))
    speedup = math.nan if args.no_aq else bench_aq_text()
    print(f"nltk_ms={nltk_ms:.3f} spacy_ms={spacy_ms:.3f} aq_text_speedup={speedup:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
