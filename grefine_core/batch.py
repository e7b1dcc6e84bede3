"""Batches: many images through one :class:`GRefine` (models loaded once), resumable."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grefine_core.atomic import ensure_writable_dir
from grefine_core.errors import GRefineError, OutputError
from grefine_core.manifest import BatchItem

if TYPE_CHECKING:
    from grefine_core.pipeline import GRefine
    from grefine_core.result import RefineResult

log = logging.getLogger(__name__)


@dataclass
class ItemOutcome:
    """What happened to one batch item: ``done``, ``resumed`` (output already there) or ``failed``."""

    item: BatchItem
    status: str
    error: str | None = None
    result: RefineResult | None = None
    paths: dict[str, Path] = field(default_factory=dict)


@dataclass
class BatchReport:
    """All outcomes of a batch, in input order."""

    outcomes: list[ItemOutcome]

    @property
    def failed(self) -> list[ItemOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"done": 0, "resumed": 0, "failed": 0}
        for o in self.outcomes:
            out[o.status] += 1
        return out


def check_not_overwriting_inputs(items: Iterable[BatchItem], out_dir: Path) -> None:
    """Refuse an output layout that would overwrite an input image."""
    inputs = {Path(i.image).resolve() for i in items if isinstance(i.image, str | Path)}
    for item in items:
        for suffix in (".png", ".json"):
            target = (out_dir / f"{item.name}{suffix}").resolve()
            if target in inputs:
                raise OutputError(
                    f"refusing to overwrite the input {str(target)!r}: choose another --out folder"
                )


def run_batch(
    pipeline: GRefine,
    items: list[BatchItem],
    out_dir: str | Path | None,
    *,
    mode: str = "refine",
    resume: bool = True,
    keep_results: bool = False,
    on_item: Callable[[ItemOutcome], Any] | None = None,
) -> BatchReport:
    """Run every item; a failing item is reported and the batch goes on with the next one.

    :param out_dir: where results are saved (``<name>.png``, ``<name>.json``, ``<name>_maps/``);
        ``None`` keeps results in memory only.
    :param resume: skip items whose ``<name>.json`` already exists in ``out_dir``.
    :param keep_results: keep each :class:`RefineResult` in the outcome (always when no out_dir).
    :param on_item: called after each item (progress bars).
    """
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        ensure_writable_dir(out)
        check_not_overwriting_inputs(items, out)
    outcomes = []
    base_seed = pipeline.config.seed
    run = pipeline.assess if mode == "assess" else pipeline.refine
    for index, item in enumerate(items):
        if out is not None and resume and (out / f"{item.name}.json").exists():
            outcome = ItemOutcome(item, "resumed")
        else:
            outcome = _run_item(pipeline, run, item, out, base_seed + index, keep_results)
        outcomes.append(outcome)
        if on_item is not None:
            on_item(outcome)
    return BatchReport(outcomes)


def _run_item(pipeline, run, item, out, seed, keep_results) -> ItemOutcome:
    try:
        result = run(item.image, item.prompt, name=item.name, seed=seed)
        paths = {}
        if out is not None:
            cfg = pipeline.config.output
            paths = result.save(out, item.name, cfg.save_maps, cfg.overlay_alpha)
        keep = keep_results or out is None
        return ItemOutcome(item, "done", result=result if keep else None, paths=paths)
    except GRefineError as e:
        log.error("item %s failed: %s", item.name, e)
        return ItemOutcome(item, "failed", error=str(e))
