"""Tensor operations of CLIP Surgery and the indicators (docs/indicators.md): normalisation, feature surgery,
similarity maps, the cask effect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from grefine_quality.constants import SIM_MAP_EPS, SIM_MAP_FLAT

Compat = Literal["paper", "reference"]


def normalise_tokens(tokens: torch.Tensor, compat: Compat = "paper") -> torch.Tensor:
    """L2-normalise image tokens ``[B, N, D]``.

    :param compat: ``"paper"`` normalises each token (``dim=-1``); ``"reference"`` reproduces the
        released code, which normalised over the token axis (``dim=1``).
    """
    if compat not in ("paper", "reference"):
        raise ValueError(f"compat must be 'paper' or 'reference', got {compat!r}")
    dim = -1 if compat == "paper" else 1
    return tokens / tokens.norm(dim=dim, keepdim=True)


def feature_surgery(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    redundant: torch.Tensor | None = None,
    temperature: float = 2.0,
) -> torch.Tensor:
    """CLIP Surgery's feature surgery: similarities ``[B, N, K]``.

    With ``redundant`` (``[1, D]`` or ``[K, D]``): ``F @ (T - R)^T``. Without: the element-wise
    products ``F_i * T_k`` are weighted by ``w_k = softmax(t * s_cls)_k / mean_k(...)`` and their
    mean over the classes is subtracted before summing over the channels.

    :param image_features: normalised tokens ``[B, N, D]``.
    :param text_features: normalised text features ``[K, D]``.
    """
    if redundant is not None:
        return image_features @ (text_features - redundant).t()
    prob = (image_features[:, :1, :] @ text_features.t() * temperature).softmax(-1)  # [B, 1, K]
    weight = prob / prob.mean(-1, keepdim=True)
    feats = image_features.unsqueeze(2) * text_features.unsqueeze(0).unsqueeze(0)  # [B, N, K, D]
    feats = feats * weight.unsqueeze(-1)
    feats = feats - feats.mean(2, keepdim=True)
    return feats.sum(-1)


def similarity_map(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Patch similarities ``[B, N-1, K]`` -> maps ``[B, H, W, K]`` in [0, 1] (docs/indicators.md).

    Min-max per ``(b, k)`` over the patches (with an epsilon; a map whose range is within float32
    rounding, :data:`~grefine_quality.constants.SIM_MAP_FLAT`, gives 0), reshaped to
    the square ``g x g`` grid (row-major y, x), bilinear resize to ``size = (H, W)`` with
    ``align_corners=False``. Computed in float32.
    """
    if scores.ndim != 3:
        raise ValueError(f"scores must be [B, N-1, K], got shape {tuple(scores.shape)}")
    s = scores.float()
    lo = s.amin(1, keepdim=True)
    hi = s.amax(1, keepdim=True)
    span = hi - lo
    # A map that is constant up to float32 rounding is constant: 0, not amplified rounding noise.
    flat = span <= SIM_MAP_FLAT * torch.maximum(hi.abs(), lo.abs()).clamp_min(1.0)
    s = torch.where(flat, torch.zeros_like(s), (s - lo) / (span + SIM_MAP_EPS))
    return grid_to_map(s, size, "bilinear")


def grid_to_map(
    values: torch.Tensor, size: tuple[int, int], mode: str = "bilinear"
) -> torch.Tensor:
    """Patch values ``[B, N-1, K]`` on the square token grid (row-major y, x) -> ``[B, H, W, K]``,
    resized with ``mode`` (``"bilinear"`` or ``"bicubic"``, ``align_corners=False``), no rescaling.
    """
    if values.ndim != 3:
        raise ValueError(f"values must be [B, N-1, K], got shape {tuple(values.shape)}")
    b, n, k = values.shape
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"{n} patch tokens do not form a square grid")
    h, w = int(size[0]), int(size[1])
    s = values.float().reshape(b, side, side, k).permute(0, 3, 1, 2)
    s = F.interpolate(s, size=(h, w), mode=mode, align_corners=False)
    return s.permute(0, 2, 3, 1)


def cask_score(factor_scores: Mapping[str, float], bounds: Sequence[float]) -> float:
    """The cask effect (paper Eq. 3): ``p_overall * prod_i min(p_i / alpha_i, 1)``.

    :param factor_scores: scores keyed ``overall``, ``technical``, ``rational``, ``natural``.
    :param bounds: ``alpha`` for (technical, rational, natural).
    """
    p = float(factor_scores["overall"])
    for name, alpha in zip(("technical", "rational", "natural"), bounds, strict=True):
        p *= min(float(factor_scores[name]) / float(alpha), 1.0)
    return p


def cask_map(factor_maps: Mapping[str, torch.Tensor], bounds: Sequence[float]) -> torch.Tensor:
    """The cask effect element-wise: ``P_overall * prod_i min(P_i / alpha_i, 1)``, in [0, 1].

    Works on any shape: per token (``absolute`` PQ map) or per pixel (``minmax_cask``).
    """
    out = factor_maps["overall"].clone()
    for name, alpha in zip(("technical", "rational", "natural"), bounds, strict=True):
        out = out * torch.clamp(factor_maps[name] / float(alpha), max=1.0)
    return out.clamp_(0.0, 1.0)
