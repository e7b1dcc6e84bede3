"""Batches: many images through one :class:`GRefine` (models loaded once), resumable."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grefine_core.app.location import ArrowPath, output_target
from grefine_core.app.manifest import BatchItem, unique_items
from grefine_core.app.outputs import clean_stale_staging, output_lock, verify_item
from grefine_core.errors import GRefineError, OutputError, UsageError

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
    engine: str = "local",
    ray: Any = None,
) -> BatchReport:
    """Run every item; a failing item is reported and the batch goes on with the next one.

    With a local ``out_dir``, the folder is locked for the whole batch (a second writer refuses
    before any model loads) and staging folders left by an interrupted run are removed first.

    :param items: :class:`~grefine_core.app.manifest.BatchItem` s or ``(image, prompt)`` pairs
        (named after their file stems, made unique).
    :param out_dir: where results are saved (``<name>.png``, ``<name>.json``, ``<name>_maps/``):
        a folder or a pyarrow filesystem URI (:mod:`grefine_core.app.location`); ``None`` keeps
        results in memory only.
    :param resume: skip an item only when its report carries the same run fingerprint (input
        sha256, prompt, seed, mode, preset, resolved settings, plugins, versions, models) and
        every file it vouches for matches its sha256; otherwise rerun it and say why.
    :param keep_results: keep each :class:`RefineResult` in the outcome (always when no out_dir).
    :param on_item: called after each item (progress bars).
    :param engine: ``local`` (this process) or ``ray`` (a Ray Data pipeline,
        :func:`grefine_core.app.engine_ray.run_batch_ray`; ``ray`` takes its
        :class:`~grefine_core.app.engine_ray.RayOptions`).
    """
    if engine == "ray":
        from grefine_core.app.engine_ray import run_batch_ray

        return run_batch_ray(
            pipeline,
            items,
            out_dir,
            mode=mode,
            resume=resume,
            on_item=on_item,
            options=ray,
            keep_results=keep_results,
        )
    if engine != "local":
        raise UsageError(f"engine must be 'local' or 'ray', got {engine!r}")
    items, base_seed = prepare_items(pipeline, items)
    target = output_target(out_dir) if out_dir is not None else None
    with writing_to(target, items):
        outcomes = []
        run = pipeline.assess if mode == "assess" else pipeline.refine
        for index, item in enumerate(items):
            seed = base_seed + index
            fingerprint = pipeline.fingerprint(item.image, item.prompt, seed, mode)
            done, why = resume_check(target, item, fingerprint, resume)
            if done:
                outcome = ItemOutcome(item, "resumed")
            else:
                outcome = _run_item(
                    run, pipeline, item, target, seed, keep_results, fingerprint, why
                )
            outcomes.append(outcome)
            if on_item is not None:
                on_item(outcome)
    return BatchReport(outcomes)


def prepare_items(pipeline: GRefine, items: Iterable[Any]) -> tuple[list[BatchItem], int]:
    """The items as uniquely named :class:`BatchItem` s and the base seed (item ``i`` gets
    ``base + i``, whatever the order in which an engine runs them).

    :raises UsageError: the last item's seed would leave the valid range.
    """
    from grefine_core.pipeline import check_seed

    listed = list(items)
    if not all(isinstance(i, BatchItem) for i in listed):
        listed = unique_items([(img, prompt) for img, prompt in listed])
    base_seed = check_seed(pipeline.config.seed)
    check_seed(base_seed + max(len(listed) - 1, 0))
    return listed, base_seed


@contextmanager
def writing_to(target: Path | ArrowPath | None, items: list[BatchItem]) -> Iterator[None]:
    """Hold a local output folder for a batch: refuse a layout that overwrites an input, lock
    it, remove stale staging folders, and remove it again when the batch wrote nothing. A URI
    (object store) has no lock (docs/scale-out.md); ``None`` (in memory) needs nothing."""
    if not isinstance(target, Path):
        yield
        return
    check_not_overwriting_inputs(items, target)
    existed = target.exists()
    with output_lock(target):
        clean_stale_staging(target, [i.name for i in items])
        yield
    try:
        if not existed and not any(target.iterdir()):
            target.rmdir()  # a run that wrote nothing leaves no empty folder behind
    except OSError:
        pass  # another run has just started writing there: its folder now


def resume_check(
    target: Path | ArrowPath | None, item: BatchItem, fingerprint: Any, resume: bool
) -> tuple[bool, str | None]:
    """``(already done, why it is rerun)``: done when its outputs are a finished result of
    ``fingerprint`` (:func:`~grefine_core.app.outputs.verify_item`); the reason is logged."""
    if target is None or not resume:
        return False, None
    done, why = verify_item(target, item.name, fingerprint)
    if done or why == "no report yet":
        return done, None
    log.warning("rerunning %s: %s", item.name, why)
    return False, why


def save_outcome(result: RefineResult, target: Path | ArrowPath, name: str, output: Any) -> dict:
    """Publish one result at ``target`` with the ``output`` settings; its final paths."""
    from grefine_core.app.location import publish_to
    from grefine_core.app.saving import item_writers, maps_format

    maps = maps_format(output.maps)
    writers = item_writers(result, name, maps, output.overlay_alpha, output.strip_metadata)
    return publish_to(target, name, *writers)


def failure(item: BatchItem, error: BaseException) -> ItemOutcome:
    """The outcome of an item whose run raised ``error`` (a bug too: the batch goes on)."""
    if isinstance(error, GRefineError):
        log.debug("item %s failed: %s", item.name, error)
        return ItemOutcome(item, "failed", error=str(error), exit_code=error.exit_code)
    log.debug("traceback of item %s", item.name, exc_info=error)
    message = f"unexpected {type(error).__name__}: {error}"
    return ItemOutcome(item, "failed", error=message, exit_code=1)


def _run_item(run, pipeline, item, target, seed, keep_results, fingerprint, why) -> ItemOutcome:
    try:
        result = run(item.image, item.prompt, name=item.name, seed=seed, fingerprint=fingerprint)
        result.rerun_because = why
        paths = {}
        if target is not None:
            paths = save_outcome(result, target, item.name, pipeline.config.output)
        keep = keep_results or target is None
        return ItemOutcome(item, "done", result=result if keep else None, paths=paths)
    except Exception as e:  # noqa: BLE001 - a bug must not abort the rest of the batch
        return failure(item, e)
