"""The result of one run: images, maps, scores, defects and the trace; JSON and files on disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from grefine_core.fingerprint import Fingerprint
from grefine_core.imageio import ImageInfo
from grefine_core.types import (
    AlignmentResult,
    MaskResult,
    ParsedPrompt,
    PerceptualResult,
    StageRecord,
    _jsonable,
)
from grefine_core.visual import heatmap_image, overlay, overview

PLUMBING_NOTICE = (
    "This run used random-weight models (plumbing_only): it proves the plumbing, not image "
    "quality. The output is not a meaningful refinement."
)


@dataclass
class RefineResult:
    """Everything one run produced.

    :ivar image: the final image (the input when nothing was refined), RGB, input working size.
    :ivar input_image: the input as the pipeline saw it (RGB, working size).
    :ivar perceptual: the PQ result (neutral ``P = 1`` when that slot was skipped).
    :ivar parsed: the parsed prompt or ``None``; :ivar alignment: the AQ result or ``None``.
    :ivar mask: the fused mask or ``None``; :ivar trace: one :class:`StageRecord` per slot.
    :ivar high_quality: why the image counts as high quality (left unchanged by both stages,
        docs/behaviour.md), or ``None``; decided in ``assess`` mode too.
    :ivar notices: what the outputs do and do not prove (e.g. random weights, planted truth).
    :ivar fingerprint: everything that shaped this result (:mod:`grefine_core.fingerprint`); a
        resumed batch compares it.
    :ivar rerun_because: why a batch recomputed an item that had a report (what changed).
    """

    image: Image.Image
    input_image: Image.Image
    prompt: str
    perceptual: PerceptualResult
    parsed: ParsedPrompt | None
    alignment: AlignmentResult | None
    mask: MaskResult | None
    trace: list[StageRecord]
    seed: int
    item_name: str
    preset: str
    select: dict[str, str] = field(default_factory=dict)
    disable: list[str] = field(default_factory=list)
    plumbing_only: bool = False
    input_info: ImageInfo | None = None
    mode: str = "refine"
    high_quality: str | None = None
    notices: list[str] = field(default_factory=list)
    fingerprint: Fingerprint | None = None
    rerun_because: str | None = None

    # ---------------------------------------------------------------- convenient views
    @property
    def p(self) -> float:
        """Perceptual quality score p."""
        return float(self.perceptual.score)

    @property
    def P(self) -> np.ndarray:  # noqa: N802 - the paper's name
        """Perceptual quality map P ``(H, W)``, high = good."""
        return self.perceptual.map

    @property
    def a(self) -> float | None:
        """Alignment score a, or ``None`` without the alignment slot."""
        return None if self.alignment is None else float(self.alignment.score)

    @property
    def A_defect(self) -> np.ndarray | None:  # noqa: N802 - the paper's name
        """Alignment defect map ``(H, W)``, or ``None`` without the alignment slot."""
        return None if self.alignment is None else self.alignment.defect_map

    @property
    def refined(self) -> bool:
        return any(r.slot in ("stage1", "stage2") and r.status == "ran" for r in self.trace)

    def stage(self, slot: str) -> StageRecord | None:
        return next((r for r in self.trace if r.slot == slot), None)

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A complete, JSON-ready description (arrays are summarised; they are saved as .npy)."""
        alignment = None
        if self.alignment is not None:
            al = self.alignment
            alignment = {
                "score": float(al.score),
                "prompt_score": float(al.prompt_score),
                "emphasised_prompt": al.emphasised_prompt,
                "phrases": [
                    {
                        "text": ph.text,
                        "noun": ph.noun,
                        "span": list(ph.span),
                        "parent": ph.parent,
                        "score": float(ph.score),
                        "noun_score": float(ph.noun_score),
                        "defect": ph.defect,
                    }
                    for ph in al.phrases
                ],
                "defects": [
                    {"text": ph.text, "noun": ph.noun, "kind": ph.defect} for ph in al.defects
                ],
                "emphasis": [
                    {"text": e.text, "span": list(e.span), "weight": e.weight} for e in al.emphasis
                ],
            }
        out: dict[str, Any] = {
            "item": self.item_name,
            "mode": self.mode,
            "prompt": self.prompt,
            "preset": self.preset,
            "select": dict(self.select),
            "disable": list(self.disable),
            "seed": self.seed,
            "plumbing_only": self.plumbing_only,
            "notice": " ".join(self.notices) or None,
            "high_quality": self.high_quality is not None,
            "high_quality_reason": self.high_quality,
            "input": self.input_info.to_dict() if self.input_info else None,
            "size": list(self.image.size),
            "refined": self.refined,
            "perceptual": {
                "score": self.p,
                "neutral": self.perceptual.neutral,
                "factor_scores": {k: float(v) for k, v in self.perceptual.factor_scores.items()},
            },
            "parsed": self.parsed.to_dict() if self.parsed is not None else None,
            "alignment": alignment,
            "mask": None
            if self.mask is None
            else {"fraction": float(self.mask.fraction), "empty": self.mask.empty},
            "trace": [r.to_dict() for r in self.trace],
            "fingerprint": self.fingerprint.to_dict() if self.fingerprint else None,
            "rerun_because": self.rerun_because,
        }
        return _jsonable(out)

    def to_json(self, indent: int | None = 2) -> str:
        """The JSON report (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    # ---------------------------------------------------------------- files
    def maps(self) -> dict[str, np.ndarray]:
        """Every map of the run, by file-friendly name."""
        maps: dict[str, np.ndarray] = {}
        if not self.perceptual.neutral:
            maps["pq_map"] = self.perceptual.map
            for factor, m in self.perceptual.factor_maps.items():
                maps[f"pq_{factor}_map"] = m
        if self.alignment is not None:
            maps["aq_defect_map"] = self.alignment.defect_map
            for j, ph in enumerate(self.alignment.phrases):
                maps[f"aq_phrase{j:02d}_map"] = ph.map
                maps[f"aq_phrase{j:02d}_noun_map"] = ph.noun_map
        if self.mask is not None:
            maps["mask_soft"] = self.mask.soft
            maps["mask_binary"] = self.mask.binary.astype(np.float32)
        return maps

    def save(
        self,
        out_dir: str | Path,
        stem: str | None = None,
        save_maps: bool = True,
        overlay_alpha: float = 0.5,
        strip_metadata: bool = False,
    ) -> dict[str, Path]:
        """Write ``<stem>.png``, ``<stem>.json`` and ``<stem>_maps/`` as one item
        (:func:`grefine_core.outputs.publish_item`: all or nothing, the JSON last, vouching for
        the other files by their sha256).

        Maps are written as float ``.npy`` and as heat-map overlay PNGs, the mask as a PNG, plus an
        ``overview.png`` (input | P | A_defect | mask | output). The image keeps the input's PNG
        text chunks and gets grefine's own (:mod:`grefine_core.metadata`) unless
        ``strip_metadata``.

        :returns: the final paths by kind.
        :raises OutputError: an output grefine did not write is in the way, or writing failed.
        """
        from grefine_core.metadata import png_info
        from grefine_core.outputs import output_lock, publish_item

        out = Path(out_dir)
        stem = stem or self.item_name
        report = self.to_dict()
        info = png_info(self, report, f"{stem}.json", strip=strip_metadata)

        def write_image(path: Path) -> None:
            self.image.save(path, pnginfo=info)

        def write_maps(folder: Path) -> None:
            self._write_maps(folder, overlay_alpha)

        with output_lock(out):
            return publish_item(out, stem, write_image, write_maps if save_maps else None, report)

    def _write_maps(self, folder: Path, alpha: float) -> None:
        for name, values in self.maps().items():
            np.save(folder / f"{name}.npy", values.astype(np.float32))
            if name.startswith("mask"):
                Image.fromarray((values.clip(0, 1) * 255).round().astype(np.uint8), "L").save(
                    folder / f"{name}.png"
                )
            else:
                overlay(self.input_image, values, alpha).save(folder / f"{name}_overlay.png")
        panels = [("input", self.input_image)]
        if not self.perceptual.neutral:
            panels.append((f"P (p={self.p:.3f})", heatmap_image(self.perceptual.map)))
        if self.alignment is not None:
            panels.append(
                (
                    f"A_defect (a={self.alignment.score:.3f})",
                    heatmap_image(self.alignment.defect_map),
                )
            )
        if self.mask is not None:
            panels.append((f"mask ({self.mask.fraction:.1%})", heatmap_image(self.mask.soft)))
        caption = "output"
        if self.high_quality:
            caption += " (high quality: unchanged)"
        elif self.plumbing_only:
            caption += f" ({self.preset}: random-weight refiners)"
        panels.append((caption, self.image))
        overview(panels).save(folder / "overview.png")
