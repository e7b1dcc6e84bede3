"""Batches: many images through one :class:`GRefine` (models loaded once), resumable."""

from __future__ import annotations

import json
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
    #: for a failure: 2 when the item's input was unusable, 1 when the run failed.
    exit_code: int = 0


@dataclass
class BatchReport:
    """All outcomes of a batch, in input order."""

    outcomes: list[ItemOutcome]

    @property
    def failed(self) -> list[ItemOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 2 when every failure was a bad input, else 1."""
        codes = {o.exit_code for o in self.failed}
        if not codes:
            return 0
        return 2 if codes == {2} else 1

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"done": 0, "resumed": 0, "failed": 0}
        for o in self.outcomes:
            out[o.status] += 1
        return out


def check_not_overwriting_inputs(items: Iterable[BatchItem], out_dir: Path) -> None:
    """Refuse an output layout that would overwrite an input image (``<name>.png``,
    ``<name>.json``, or a file inside the ``<name>_maps/`` folder that a save replaces)."""
    items = list(items)
    inputs = {Path(i.image).resolve() for i in items if isinstance(i.image, str | Path)}
    for item in items:
        maps = (out_dir / f"{item.name}_maps").resolve()
        for target in (
            (out_dir / f"{item.name}.png").resolve(),
            (out_dir / f"{item.name}.json").resolve(),
        ):
            if target in inputs:
                raise OutputError(
                    f"refusing to overwrite the input {str(target)!r}: choose another --out folder"
                )
        inside = next((i for i in inputs if maps in i.parents), None)
        if inside is not None:
            raise OutputError(
                f"refusing to replace the folder {str(maps)!r}, which holds the input "
                f"{str(inside)!r}: choose another --out folder"
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
    :param resume: skip items whose ``<name>.json`` already exists in ``out_dir`` (written in the
        same ``mode`` for the same prompt).
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
        if out is not None and resume and _already_done(out / f"{item.name}.json", item, mode):
            outcome = ItemOutcome(item, "resumed")
        else:
            outcome = _run_item(pipeline, run, item, out, base_seed + index, keep_results)
        outcomes.append(outcome)
        if on_item is not None:
            on_item(outcome)
    return BatchReport(outcomes)


def _already_done(report: Path, item: BatchItem, mode: str) -> bool:
    """Whether ``report`` is a finished result of this item: same mode and prompt.

    An ``assess`` report does not count for ``refine`` (its image is the unrefined input), nor does
    a report written for another prompt; an unreadable report is recomputed.
    """
    if not report.is_file():
        return False
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.info("recomputing %s: %s is unreadable", item.name, report)
        return False
    if not isinstance(data, dict) or data.get("mode", "refine") != mode:
        log.info("recomputing %s: %s was written by another mode", item.name, report)
        return False
    if data.get("prompt") != item.prompt:
        log.info("recomputing %s: %s was written for another prompt", item.name, report)
        return False
    return True


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
        return ItemOutcome(item, "failed", error=str(e), exit_code=e.exit_code)
    except Exception as e:  # noqa: BLE001 - a bug must not abort the rest of the batch
        log.error("item %s failed: unexpected %s: %s", item.name, type(e).__name__, e)
        log.debug("traceback of item %s", item.name, exc_info=True)
        return ItemOutcome(item, "failed", error=f"unexpected {type(e).__name__}: {e}", exit_code=1)
