"""Saving one result: the image with its metadata, the JSON report and the maps folder, published
as one item (:func:`grefine_core.app.outputs.publish_item`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from grefine_core.app.metadata import png_info
from grefine_core.app.outputs import output_lock, publish_item
from grefine_core.app.visual import heatmap_image, overlay, overview


def save_result(
    result: Any,
    out_dir: str | Path,
    stem: str | None = None,
    save_maps: bool = True,
    overlay_alpha: float = 0.5,
    strip_metadata: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>.png``, ``<stem>.json`` and ``<stem>_maps/`` of a
    :class:`~grefine_core.result.RefineResult` as one item (all or nothing, the JSON last,
    vouching for the other files by their sha256).

    Maps are written as float ``.npy`` and as heat-map overlay PNGs, the mask as a PNG, plus an
    ``overview.png`` (input | P | A_defect | mask | output). The image keeps the input's PNG
    text chunks and gets grefine's own (:mod:`grefine_core.app.metadata`) unless
    ``strip_metadata``.

    :returns: the final paths by kind.
    :raises OutputError: an output grefine did not write is in the way, or writing failed.
    """
    out = Path(out_dir)
    stem = stem or result.item_name
    report = result.to_dict()
    info = png_info(result, report, f"{stem}.json", strip=strip_metadata)

    def write_image(path: Path) -> None:
        result.image.save(path, pnginfo=info)

    def write_maps(folder: Path) -> None:
        write_maps_folder(result, folder, overlay_alpha)

    with output_lock(out):
        return publish_item(out, stem, write_image, write_maps if save_maps else None, report)


def write_maps_folder(result: Any, folder: Path, alpha: float) -> None:
    """Every map as ``.npy`` and overlay PNG, the masks as PNGs, and ``overview.png``."""
    for name, values in result_maps(result).items():
        np.save(folder / f"{name}.npy", values.astype(np.float32))
        if name.startswith("mask"):
            Image.fromarray((values.clip(0, 1) * 255).round().astype(np.uint8), "L").save(
                folder / f"{name}.png"
            )
        else:
            overlay(result.input_image, values, alpha).save(folder / f"{name}_overlay.png")
    panels = [("input", result.input_image)]
    if not result.perceptual.neutral:
        panels.append((f"P (p={result.p:.3f})", heatmap_image(result.perceptual.map)))
    if result.alignment is not None:
        panels.append(
            (
                f"A_defect (a={result.alignment.score:.3f})",
                heatmap_image(result.alignment.defect_map),
            )
        )
    if result.mask is not None:
        panels.append((f"mask ({result.mask.fraction:.1%})", heatmap_image(result.mask.soft)))
    caption = "output"
    if result.high_quality:
        caption += " (high quality: unchanged)"
    elif result.plumbing_only:
        caption += f" ({result.preset}: random-weight refiners)"
    panels.append((caption, result.image))
    overview(panels).save(folder / "overview.png")


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
