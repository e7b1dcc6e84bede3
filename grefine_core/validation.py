"""Checks on what slot plugins return, with errors that name the plugin and the slot."""

from __future__ import annotations

from typing import Any

import numpy as np

from grefine_core.errors import PluginError
from grefine_core.types import AlignmentResult, MaskResult, PerceptualResult, StageOutput


def _returned(plugin: str, slot: str, what: str) -> PluginError:
    """``plugin 'x' (slot 'y') returned <what>``, attributed to the plugin and the slot."""
    return PluginError(f"plugin {plugin!r} (slot {slot!r}) returned {what}", plugin, slot)


def check_map(values: Any, shape: tuple[int, int], what: str, plugin: str, slot: str) -> np.ndarray:
    """A float32 ``(H, W)`` map, finite, within [0, 1] (tiny float overshoot is clipped)."""
    arr = np.asarray(values)
    if arr.shape != shape:
        raise _returned(plugin, slot, f"{what} of shape {arr.shape}; expected (H, W) = {shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise _returned(plugin, slot, f"{what} with {bad} NaN/inf values")
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise _returned(
            plugin, slot, f"{what} with values in [{lo:.4g}, {hi:.4g}]; expected [0, 1]"
        )
    return arr.clip(0.0, 1.0)


def check_score(value: Any, what: str, plugin: str, slot: str) -> float:
    """A finite score in [0, 1]."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise _returned(plugin, slot, f"{what} = {value!r}; expected a number") from None
    if not np.isfinite(score) or score < -1e-6 or score > 1 + 1e-6:
        raise _returned(plugin, slot, f"{what} = {score!r}; expected [0, 1]")
    return min(max(score, 0.0), 1.0)


def _check_type(value: Any, cls: type, plugin: str, slot: str) -> None:
    if not isinstance(value, cls):
        raise _returned(plugin, slot, f"{type(value).__name__}; expected {cls.__name__}")


def check_perceptual(r: Any, shape: tuple[int, int], plugin: str) -> PerceptualResult:
    _check_type(r, PerceptualResult, plugin, "perceptual")
    r.map = check_map(r.map, shape, "the perceptual map P", plugin, "perceptual")
    r.score = check_score(r.score, "the perceptual score p", plugin, "perceptual")
    r.factor_maps = {
        k: check_map(v, shape, f"the {k} factor map", plugin, "perceptual")
        for k, v in r.factor_maps.items()
    }
    return r


def check_alignment(r: Any, shape: tuple[int, int], plugin: str) -> AlignmentResult:
    _check_type(r, AlignmentResult, plugin, "alignment")
    r.defect_map = check_map(r.defect_map, shape, "the alignment defect map", plugin, "alignment")
    r.score = check_score(r.score, "the alignment score a", plugin, "alignment")
    for ph in r.phrases:
        ph.map = check_map(ph.map, shape, f"the map of phrase {ph.text!r}", plugin, "alignment")
        ph.noun_map = check_map(
            ph.noun_map, shape, f"the noun map of phrase {ph.text!r}", plugin, "alignment"
        )
    return r


def check_mask(r: Any, shape: tuple[int, int], plugin: str) -> MaskResult:
    _check_type(r, MaskResult, plugin, "fuser")
    r.soft = check_map(r.soft, shape, "the soft mask", plugin, "fuser")
    binary = np.asarray(r.binary)
    if binary.shape != shape:
        raise _returned(
            plugin, "fuser", f"a binary mask of shape {binary.shape}; expected (H, W) = {shape}"
        )
    r.binary = binary.astype(bool)
    r.fraction = float(r.binary.mean()) if r.binary.size else 0.0
    return r


def check_stage(r: Any, size: tuple[int, int], plugin: str, slot: str) -> StageOutput:
    _check_type(r, StageOutput, plugin, slot)
    image = r.image
    if not hasattr(image, "size") or not hasattr(image, "mode"):
        raise _returned(plugin, slot, f"{type(image).__name__} as image; expected a PIL image")
    if tuple(image.size) != tuple(size):
        raise _returned(
            plugin, slot, f"an image of size {image.size}; expected the input size {size} (W, H)"
        )
    if image.mode != "RGB":
        r.image = image.convert("RGB")
    return r
