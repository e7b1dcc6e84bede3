"""Latent tiling with Gaussian blending (PASD.md section 2.6).

A latent of ``h x w`` is tiled only when ``h * w > T * T`` (``T`` = ``latent_tiled_size``). Tiles
are squares of side ``min(T, h, w)``; origins along an axis are ``k * (T - overlap)`` and the
last tile is pinned to the far edge. Each tile's noise prediction is weighted by a separable
Gaussian (variance 0.01 in tile-normalised coordinates; the x midpoint is ``(T - 1) / 2`` but the
y midpoint ``T / 2``, as in the reference) and the weighted sum is divided by the summed weights.
"""

from __future__ import annotations

import math

import numpy as np

GAUSSIAN_VAR = 0.01


def needs_tiling(height: int, width: int, tile_size: int) -> bool:
    """Whether a ``height x width`` latent is processed in tiles of ``tile_size``."""
    return height * width > tile_size * tile_size


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis of ``length`` for tiles of ``tile`` with ``overlap``.

    :raises ValueError: when ``overlap >= tile`` (the tiles would not advance).
    """
    if tile <= 0 or tile > length:
        raise ValueError(f"tile size {tile} must be in [1, {length}]")
    if not 0 <= overlap < tile:
        raise ValueError(f"latent_tiled_overlap {overlap} must be in [0, {tile - 1}]")
    origins = []
    k = 0
    while True:
        start = k * (tile - overlap)
        if start + tile >= length:
            origins.append(length - tile)
            return origins
        origins.append(start)
        k += 1


def tile_boxes(height: int, width: int, tile_size: int, overlap: int) -> list[tuple[int, int, int]]:
    """All tiles of a ``height x width`` latent as ``(y0, x0, side)``, x varying slowest."""
    side = min(tile_size, height, width)
    ys = tile_origins(height, side, min(overlap, side - 1))
    xs = tile_origins(width, side, min(overlap, side - 1))
    return [(y, x, side) for x in xs for y in ys]


def gaussian_weights(tile_height: int, tile_width: int) -> np.ndarray:
    """The ``(tile_height, tile_width)`` float64 blending weights of one tile."""
    norm = 1.0 / math.sqrt(2.0 * math.pi * GAUSSIAN_VAR)

    def axis(n: int, mid: float) -> np.ndarray:
        x = np.arange(n, dtype=np.float64)
        return np.exp(-((x - mid) ** 2) / (n * n) / (2.0 * GAUSSIAN_VAR)) * norm

    return np.outer(axis(tile_height, tile_height / 2.0), axis(tile_width, (tile_width - 1) / 2.0))


def blend_weight_sum(height: int, width: int, tile_size: int, overlap: int) -> np.ndarray:
    """The summed tile weights over a ``height x width`` latent (every entry > 0)."""
    total = np.zeros((height, width), np.float64)
    for y, x, side in tile_boxes(height, width, tile_size, overlap):
        total[y : y + side, x : x + side] += gaussian_weights(side, side)
    return total
