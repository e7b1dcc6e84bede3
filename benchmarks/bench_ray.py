"""Benchmark: items per second of the Ray engine vs the local engine, the same items in one run.

Both engines refine the same ``--items`` images (``--size`` px, ``--preset``, default ``tiny``:
random-weight models of the real architectures at toy sizes) into fresh folders, models loaded
from scratch in each (the local engine once, the Ray engine once per actor). The Ray timing
starts after ``ray.init`` (reported on its own as ``ray_startup_s``) and includes the actors'
model loads, as the local timing includes its own. The outputs of both are checked equal
(pixels) before the numbers are printed.

On this 2-core machine the three actor pools (one actor each by default) share the cores with
each other: expect a ratio near or below 1; the engine pays off with GPUs, where each pool has its
own. ``--pool PART=SIZE[:GPUS[:CPUS]]`` (repeatable) sizes the pools, e.g. on a 4-GPU machine
``--preset paper --device cuda --pool start=1:0.5 --pool stage1=2:1 --pool stage2=1:1``.

The last line: ``ray_vs_local_throughput=<float> ray_startup_s=<float>``.

Usage: ``python benchmarks/bench_ray.py [--items 8] [--size 64] [--preset tiny] [--device cpu]``
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from grefine_core.app.engine_ray import RayOptions, parse_pool
from grefine_core.config import load_config
from grefine_core.pipeline import GRefine

PROMPTS = ["a red cat on a blue sofa", "two dogs under a green tree", "a yellow car"]


def make_items(folder: Path, n: int, size: int) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        path = folder / f"bench{i}.png"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
        items.append((path, PROMPTS[i % len(PROMPTS)]))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default=None, help="default: the preset's")
    parser.add_argument("--pool", action="append", default=[], metavar="PART=SIZE[:GPUS[:CPUS]]")
    args = parser.parse_args()

    import ray

    config = load_config(preset=args.preset)
    if args.device:
        config = config.model_copy(update={"device": args.device})
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    items = make_items(work, args.items, args.size)

    start = time.perf_counter()
    local = GRefine(config).refine_many(items, work / "local", resume=False)
    local_s = time.perf_counter() - start

    for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}.items():
        os.environ.setdefault(key, value)
    start = time.perf_counter()
    ray.init(include_dashboard=False, logging_level=logging.WARNING, _temp_dir=str(work / "ray"))
    startup_s = time.perf_counter() - start
    options = RayOptions(pools=dict(map(parse_pool, args.pool)))
    start = time.perf_counter()
    remote = GRefine(config).refine_many(
        items, work / "ray_out", resume=False, engine="ray", ray=options
    )
    ray_s = time.perf_counter() - start
    ray.shutdown()

    assert [o.status for o in local.outcomes] == [o.status for o in remote.outcomes]
    for path, _ in items:
        a = np.asarray(Image.open(work / "local" / f"{path.stem}.png"))
        b = np.asarray(Image.open(work / "ray_out" / f"{path.stem}.png"))
        assert np.array_equal(a, b), f"{path.stem}: the engines' images differ"
    print(f"items={args.items} size={args.size} preset={args.preset} cores={os.cpu_count()}")
    print(f"local: {local_s:.1f} s ({args.items / local_s:.3f} items/s)")
    print(
        f"ray:   {ray_s:.1f} s ({args.items / ray_s:.3f} items/s) after ray.init {startup_s:.1f} s"
    )
    print("outputs: identical pixels")
    print(f"ray_vs_local_throughput={local_s / ray_s:.4f} ray_startup_s={startup_s:.2f}")


if __name__ == "__main__":
    main()
