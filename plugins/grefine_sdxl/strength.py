"""Stage-1 denoising strength from the quality scores (docs/refiners.md): pure functions, no torch."""

from __future__ import annotations

import math
from typing import Literal

from grefine_core.errors import InputError

StrengthMode = Literal["quality", "literal", "fixed"]

#: Below this strength stage 1 does nothing visible; the refiner skips it instead of scheduling
#: thousands of steps to run one.
MIN_STRENGTH = 1e-3


def _unit(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{what} must be a finite number in [0, 1], got {value!r}")
    return min(max(v, 0.0), 1.0)


def combined_quality(p: float | None, a: float | None) -> float:
    """``q`` of docs/refiners.md: ``(p + a) / 2``; ``p`` alone when AQ is off, ``a`` alone when PQ is off.

    :param p: the perceptual score, or ``None`` when the PQ slot is disabled (its neutral
        stand-in ``p = 1`` would otherwise make every image look half good).
    :param a: the alignment score, or ``None`` when the alignment slot is disabled.
    :returns: ``q`` in [0, 1]; 1 (nothing to fix) when both are ``None``.
    :raises InputError: a score that is NaN or infinite.
    """
    terms = [_unit(v, name) for v, name in ((p, "p"), (a, "a")) if v is not None]
    return sum(terms) / len(terms) if terms else 1.0


def stage1_strength(
    q: float,
    mode: StrengthMode = "quality",
    strength_min: float = 0.3,
    strength_max: float = 0.9,
    fixed: float = 0.9,
) -> float:
    """The img2img/inpainting strength of stage 1.

    * ``quality`` (default): ``strength_min + (strength_max - strength_min) * (1 - q)``: the better
      the image, the gentler the edit; monotone non-increasing in ``q``, always within
      ``[strength_min, strength_max]``.
    * ``literal``: ``q`` itself (the paper's ``z1 = (p + a) / 2 * ...`` read literally; ablation).
    * ``fixed``: ``fixed`` (the released code used 0.9).

    :param q: the combined quality (clamped to [0, 1]).
    :returns: the strength in [0, 1].
    :raises InputError: an unknown mode or a non-finite ``q``.
    """
    q = _unit(q, "q")
    lo, hi = sorted((_unit(strength_min, "strength_min"), _unit(strength_max, "strength_max")))
    if mode == "quality":
        return min(max(lo + (hi - lo) * (1.0 - q), lo), hi)
    if mode == "literal":
        return q
    if mode == "fixed":
        return _unit(fixed, "strength")
    raise InputError(f"unknown strength_mode {mode!r}; valid: 'quality', 'literal', 'fixed'")


def scheduled_steps(steps: int, strength: float) -> tuple[int, int]:
    """How many steps to schedule so that at least one denoising step runs.

    diffusers runs ``min(int(n * strength), n)`` of ``n`` scheduled steps and fails on 0.

    :param steps: the configured number of steps (before strength scaling, paper: n1 = 10).
    :param strength: the strength in (0, 1].
    :returns: ``(n_scheduled, n_run)``; ``n_scheduled > steps`` only when ``steps * strength < 1``.
    """
    n = max(int(steps), 1)
    if not MIN_STRENGTH <= strength <= 1.0:
        raise InputError(
            f"strength must be in [{MIN_STRENGTH}, 1] to run a denoising step, got {strength}"
        )
    n = max(n, math.ceil(1.0 / strength) - 1)
    while min(int(n * strength), n) < 1:
        n += 1
    return n, min(int(n * strength), n)
