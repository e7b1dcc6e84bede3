"""Saving one result: the image with its metadata, the JSON report and the maps folder, published
as one item (:func:`grefine_core.app.outputs.publish_item`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from grefine_core.app.metadata import png_info
from grefine_core.app.outputs import output_lock, publish_item
from grefine_core.app.visual import (
    ColourBar,
    Panel,
    defect_colours,
    grey_colours,
    map_panel,
    overlay,
    overview,
    quality_colours,
)

#: The values of ``output.maps``: what a maps folder holds (docs/outputs.md).
MAPS_FORMATS = ("all", "png", "none")
#: The one compressed file of every map (``np.load(".../maps.npz")["pq_map"]``).
NPZ_NAME = "maps.npz"
NEEDS_FIXING = "yellow = needs fixing"


def maps_format(maps: str | bool) -> str:
    """``maps`` checked: one of :data:`MAPS_FORMATS` (a bool, the old ``save_maps``, stands for
    ``"all"`` or ``"none"``).

    :raises ValueError: another value.
    """
    if isinstance(maps, bool):
        return "all" if maps else "none"
    if maps not in MAPS_FORMATS:
        raise ValueError(f"maps must be one of {', '.join(MAPS_FORMATS)}, got {maps!r}")
    return maps


def save_result(
    result: Any,
    out_dir: str | Path,
    stem: str | None = None,
    maps: str = "png",
    overlay_alpha: float = 0.5,
    strip_metadata: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>.png``, ``<stem>.json`` and ``<stem>_maps/`` of a
    :class:`~grefine_core.result.RefineResult` as one item (all or nothing, the JSON last,
    vouching for the other files by their sha256).

    ``maps`` says what the maps folder holds (:func:`write_maps_folder`); ``"none"`` writes no
    folder. The image keeps the input's PNG text chunks and gets grefine's own
    (:mod:`grefine_core.app.metadata`) unless ``strip_metadata``.

    :returns: the final paths by kind.
    :raises ValueError: ``maps`` is not one of :data:`MAPS_FORMATS`.
    :raises OutputError: an output grefine did not write is in the way, or writing failed.
    """
    maps = maps_format(maps)
    out = Path(out_dir)
    stem = stem or result.item_name
    with output_lock(out):
        return publish_item(
            out, stem, *item_writers(result, stem, maps, overlay_alpha, strip_metadata)
        )


def item_writers(
    result: Any, stem: str, maps: str, overlay_alpha: float, strip_metadata: bool
) -> tuple[Callable[[Path], None], Callable[[Path], None] | None, dict[str, Any]]:
    """``(write_image, write_maps or None, report)`` of one result, as
    :func:`~grefine_core.app.outputs.publish_item` takes them (any output location does)."""
    report = result.to_dict()
    info = png_info(result, report, f"{stem}.json", strip=strip_metadata)

    def write_image(path: Path) -> None:
        result.image.save(path, pnginfo=info)

    def write_maps(folder: Path) -> None:
        write_maps_folder(result, folder, overlay_alpha, maps)

    return write_image, None if maps == "none" else write_maps, report


def write_maps_folder(result: Any, folder: Path, alpha: float, maps: str = "png") -> None:
    """Fill a maps folder: each map as a heat-map overlay PNG (quality maps coloured by
    ``1 - value``, so yellow = needs fixing), the masks as PNGs, ``overview.png``, and every map
    as float32 in one compressed ``maps.npz``; ``maps="all"`` adds each as a ``.npy`` too."""
    arrays = {name: np.asarray(v, dtype=np.float32) for name, v in result_maps(result).items()}
    for name, values in arrays.items():
        if name.startswith("mask"):
            Image.fromarray((values.clip(0, 1) * 255).round().astype(np.uint8), "L").save(
                folder / f"{name}.png"
            )
        else:
            colours = quality_colours if name.startswith("pq_") else defect_colours
            overlay(result.input_image, values, alpha, colours).save(folder / f"{name}_overlay.png")
        if maps == "all":
            np.save(folder / f"{name}.npy", values)
    np.savez_compressed(folder / NPZ_NAME, **arrays)
    overview(overview_panels(result)).save(folder / "overview.png")


def overview_panels(result: Any) -> list[Panel]:
    """What ``overview.png`` shows, panel by panel: the input, ``P`` and ``A_defect`` with colour
    bars in words (yellow = needs fixing in both), the mask (white = repainted) and the output
    (left out for an ``assess`` result, which refines nothing)."""
    assess = result.mode == "assess"
    first = Panel("input (assess: not refined)" if assess else "input", result.input_image)
    if assess and result.high_quality:
        first.notes.append("high quality: refine leaves it unchanged")
    panels = [first]
    if not result.perceptual.neutral:
        note = f"coloured by 1 - P: {NEEDS_FIXING}"
        bar = ColourBar("0: needs fixing", "1: good", quality_colours, note)
        panels.append(map_panel(f"P: perceptual quality (p={result.p:.3f})", result.P, bar))
    if result.alignment is not None:
        bar = ColourBar("0: fine", "1: needs fixing", defect_colours, NEEDS_FIXING)
        title = f"A_defect: alignment defects (a={result.alignment.score:.3f})"
        panels.append(map_panel(title, result.alignment.defect_map, bar))
    if result.mask is not None:
        stage1 = result.stage("stage1")
        ran = stage1 is not None and stage1.status == "ran"
        what = "repainted by stage 1" if ran else "stage 1 would repaint"
        bar = ColourBar("0: kept", "1: repainted", grey_colours, f"white: {what}")
        title = f"mask: {result.mask.fraction:.1%} of pixels"
        panels.append(map_panel(title, result.mask.soft, bar))
    if not assess:
        panels.append(Panel(_output_title(result), result.image))
        if result.plumbing_only:
            panels[-1].notes.append(f"{result.preset}: random-weight refiners")
    return panels


def _output_title(result: Any) -> str:
    if result.high_quality:
        return "unchanged (high quality)"
    return "output" if result.refined else "output (unchanged: nothing refined)"


def result_maps(result: Any) -> dict[str, np.ndarray]:
    """Every map of a run, by file-friendly name (``pq_map``, ``aq_phrase00_map``, ``mask_soft``...)."""
    maps: dict[str, np.ndarray] = {}
    if not result.perceptual.neutral:
        maps["pq_map"] = result.perceptual.map
        for factor, m in result.perceptual.factor_maps.items():
            maps[f"pq_{factor}_map"] = m
    if result.alignment is not None:
        maps["aq_defect_map"] = result.alignment.defect_map
        for j, ph in enumerate(result.alignment.phrases):
            maps[f"aq_phrase{j:02d}_map"] = ph.map
            maps[f"aq_phrase{j:02d}_noun_map"] = ph.noun_map
    if result.mask is not None:
        maps["mask_soft"] = result.mask.soft
        maps["mask_binary"] = result.mask.binary.astype(np.float32)
    return maps
