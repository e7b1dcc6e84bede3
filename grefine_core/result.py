"""The result of one run: images, maps, scores, defects and the trace; JSON and files on disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from grefine_core.imageio import ImageInfo
from grefine_core.types import (
    AlignmentResult,
    MaskResult,
    ParsedPrompt,
    PerceptualResult,
    StageRecord,
)

if TYPE_CHECKING:
    from grefine_core.app.fingerprint import Fingerprint

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
    :ivar fingerprint: everything that shaped this result (:mod:`grefine_core.app.fingerprint`); a
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

    # ---------------------------------------------------------------- delegates to the app
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report (:func:`grefine_core.app.report.result_report`)."""
        from grefine_core.app.report import result_report

        return result_report(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The JSON report (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    # ---------------------------------------------------------------- files
    def save(
        self,
        out_dir: str | Path,
        stem: str | None = None,
        maps: str = "png",
        overlay_alpha: float = 0.5,
        strip_metadata: bool = False,
    ) -> dict[str, Path]:
        """Write ``<stem>.png``, ``<stem>.json`` and ``<stem>_maps/`` as one item, all or nothing.

        A delegate of the application (:func:`grefine_core.app.saving.save_result`, which
        documents the files); the kernel imports it only when called.

        :param maps: what ``<stem>_maps/`` holds: ``"png"`` (overlay and mask PNGs,
            ``overview.png`` and one compressed ``maps.npz``), ``"all"`` (each map as a float
            ``.npy`` too) or ``"none"`` (no maps folder).

        :returns: the final paths by kind.
        :raises OutputError: an output grefine did not write is in the way, or writing failed.
        """
        from grefine_core.app.saving import save_result

        return save_result(self, out_dir, stem, maps, overlay_alpha, strip_metadata)
