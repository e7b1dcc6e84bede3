"""Correlation of predicted scores with subjective labels (MOS): SRCC and PLCC.

* SRCC: Spearman's rank correlation (ties get average ranks).
* PLCC: Pearson's linear correlation of the raw scores with the MOS.
* PLCC after the 4-parameter logistic mapping customary in IQA (VQEG):
  ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` fitted by least squares, then Pearson of
  ``f(x)`` with the MOS; reported separately as ``plcc_logistic`` when asked for (NaN when the
  fit does not converge).

Pairs where either value is NaN or infinite are dropped; fewer than 3 pairs give NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats


def _clean(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D sequences of equal length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _degenerate(a: np.ndarray, b: np.ndarray) -> bool:
    return a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0


def srcc(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank-order correlation (NaN under 3 valid pairs or for a constant input)."""
    a, b = _clean(x, y)
    if _degenerate(a, b):
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def plcc(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson linear correlation (NaN under 3 valid pairs or for a constant input)."""
    a, b = _clean(x, y)
    if _degenerate(a, b):
        return math.nan
    return float(stats.pearsonr(a, b).statistic)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    z = np.clip(-(x - b3) / (abs(b4) + 1e-12), -500, 500)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic4(
    x: Sequence[float], y: Sequence[float]
) -> tuple[float, float, float, float] | None:
    """Least-squares fit of :func:`logistic4` mapping scores ``x`` to MOS ``y`` (``None`` if it fails)."""
    a, b = _clean(x, y)
    if _degenerate(a, b):
        return None
    p0 = [float(b.max()), float(b.min()), float(np.mean(a)), float(np.std(a)) or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, a, b, p0=p0, maxfev=20000)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    if not np.all(np.isfinite(params)):
        return None
    return tuple(float(p) for p in params)  # type: ignore[return-value]


def plcc_logistic(x: Sequence[float], y: Sequence[float]) -> float:
    """PLCC after the 4-parameter logistic fit (NaN when the fit fails)."""
    a, b = _clean(x, y)
    params = fit_logistic4(a, b)
    if params is None:
        return math.nan
    fitted = logistic4(a, *params)
    if np.ptp(fitted) == 0:
        return math.nan
    return float(stats.pearsonr(fitted, b).statistic)


def correlations(
    x: Sequence[float], y: Sequence[float], logistic: bool = False
) -> dict[str, float]:
    """``{"n", "srcc", "plcc"}`` (and ``"plcc_logistic"`` when ``logistic``)."""
    a, b = _clean(x, y)
    out: dict[str, float] = {"n": int(a.size), "srcc": srcc(a, b), "plcc": plcc(a, b)}
    if logistic:
        out["plcc_logistic"] = plcc_logistic(a, b)
    return out
