"""Batches: many images through one :class:`GRefine` (models loaded once), resumable."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grefine_core.app.manifest import BatchItem, unique_items
from grefine_core.app.outputs import clean_stale_staging, output_lock, verify_item
from grefine_core.errors import GRefineError, OutputError

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
    items: Iterable[Any],
    out_dir: str | Path | None,
    *,
    mode: str = "refine",
    resume: bool = True,
    keep_results: bool = False,
    on_item: Callable[[ItemOutcome], Any] | None = None,
) -> BatchReport:
    """Run every item; a failing item is reported and the batch goes on with the next one.

    With ``out_dir``, the folder is locked for the whole batch (a second writer refuses before
    any model loads) and staging folders left by an interrupted run are removed first.

    :param items: :class:`~grefine_core.app.manifest.BatchItem` s or ``(image, prompt)`` pairs
        (named after their file stems, made unique).
    :param out_dir: where results are saved (``<name>.png``, ``<name>.json``, ``<name>_maps/``);
        ``None`` keeps results in memory only.
    :param resume: skip an item only when its report carries the same run fingerprint (input
        sha256, prompt, seed, mode, preset, resolved settings, plugins, versions, models) and
        every file it vouches for matches its sha256; otherwise rerun it and say why.
    :param keep_results: keep each :class:`RefineResult` in the outcome (always when no out_dir).
    :param on_item: called after each item (progress bars).
    """
    from grefine_core.pipeline import check_seed

    listed = list(items)
    if not all(isinstance(i, BatchItem) for i in listed):
        listed = unique_items([(img, prompt) for img, prompt in listed])
    items = listed
    base_seed = check_seed(pipeline.config.seed)
    check_seed(base_seed + max(len(items) - 1, 0))
    out = Path(out_dir) if out_dir is not None else None
    if out is None:
        return _run_all(pipeline, items, None, mode, resume, keep_results, on_item, base_seed)
    check_not_overwriting_inputs(items, out)
    existed = out.exists()
    with output_lock(out):
        clean_stale_staging(out, [i.name for i in items])
        report = _run_all(pipeline, items, out, mode, resume, keep_results, on_item, base_seed)
    try:
        if not existed and not any(out.iterdir()):
            out.rmdir()  # a run that wrote nothing leaves no empty folder behind
    except OSError:
        pass  # another run has just started writing there: its folder now
    return report


def _run_all(pipeline, items, out, mode, resume, keep_results, on_item, base_seed) -> BatchReport:
    outcomes = []
    run = pipeline.assess if mode == "assess" else pipeline.refine
    for index, item in enumerate(items):
        seed = base_seed + index
        fingerprint = pipeline.fingerprint(item.image, item.prompt, seed, mode)
        outcome = None
        why = None
        if out is not None and resume:
            done, why = verify_item(out, item.name, fingerprint)
            if done:
                outcome = ItemOutcome(item, "resumed")
            elif why == "no report yet":
                why = None
            else:
                log.warning("rerunning %s: %s", item.name, why)
        if outcome is None:
            outcome = _run_item(run, pipeline, item, out, seed, keep_results, fingerprint, why)
        outcomes.append(outcome)
        if on_item is not None:
            on_item(outcome)
    return BatchReport(outcomes)


def _run_item(run, pipeline, item, out, seed, keep_results, fingerprint, why) -> ItemOutcome:
    try:
        result = run(item.image, item.prompt, name=item.name, seed=seed, fingerprint=fingerprint)
        result.rerun_because = why
        paths = {}
        if out is not None:
            cfg = pipeline.config.output
            paths = result.save(out, item.name, cfg.maps, cfg.overlay_alpha, cfg.strip_metadata)
        keep = keep_results or out is None
        return ItemOutcome(item, "done", result=result if keep else None, paths=paths)
    except GRefineError as e:
        log.debug("item %s failed: %s", item.name, e)
        return ItemOutcome(item, "failed", error=str(e), exit_code=e.exit_code)
    except Exception as e:  # noqa: BLE001 - a bug must not abort the rest of the batch
        log.debug("traceback of item %s", item.name, exc_info=True)
        return ItemOutcome(item, "failed", error=f"unexpected {type(e).__name__}: {e}", exit_code=1)
