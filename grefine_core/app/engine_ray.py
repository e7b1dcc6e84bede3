"""The Ray engine: one batch as a streaming Ray Data pipeline (docs/scale-out.md).

The driver (this process) does what needs no model: items, seeds, fingerprints, resume (an item
whose outputs match is never sent), the output folder's lock. The items then stream through
class-based UDFs, one actor pool per model group, each actor loading its models once:

    start (perceptual, parser, alignment, fuser) -> stage1 -> stage2, publishing in the last

(``assess`` runs only ``start``). A part is :meth:`GRefine.start` or :meth:`GRefine.advance`, the
same code the local engine runs, on one item at a time (never a batch across items) with the
driver's torch thread count, so results are bit-identical to the local engine's on a CPU. The
seed of item ``i`` is ``base + i``, fixed before anything is sent: order and partitioning do not
matter. A failing item travels on as a failure and is reported; the others finish.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grefine_core.app.batch import (
    BatchReport,
    ItemOutcome,
    failure,
    prepare_items,
    resume_check,
    save_outcome,
    writing_to,
)
from grefine_core.app.location import output_target
from grefine_core.app.outputs import crash_point
from grefine_core.errors import GRefineError, UsageError

if TYPE_CHECKING:
    from grefine_core.app.manifest import BatchItem
    from grefine_core.pipeline import GRefine

log = logging.getLogger(__name__)

#: The parts of a run, in order; each runs on its own actor pool.
PARTS = ("start", "stage1", "stage2")
#: Ray's defaults that grefine changes for an instance it starts itself (no usage report, no
#: token written to ~/.ray); a cluster you connect to keeps its own.
LOCAL_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@dataclass
class Pool:
    """One actor pool: ``size`` actors, each reserving ``num_cpus`` / ``num_gpus`` of Ray's
    logical resources (the indicators may share a GPU: ``num_gpus=0.5``; each diffusion stage
    takes one), fed ``batch_size`` items per call (still run one at a time inside)."""

    size: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 0.5
    batch_size: int = 1

    def __post_init__(self) -> None:
        if int(self.size) < 1 or int(self.batch_size) < 1:
            raise UsageError(f"a Ray pool needs size >= 1 and batch_size >= 1, got {self}")
        if self.num_gpus < 0 or self.num_cpus < 0:
            raise UsageError(f"a Ray pool's num_gpus and num_cpus must be >= 0, got {self}")


@dataclass
class RayOptions:
    """How the Ray engine runs.

    :ivar address: ``None`` starts a Ray instance on this machine for the batch (and stops it
        after); ``auto`` joins the cluster this machine belongs to; ``HOST:PORT`` or
        ``ray://HOST:PORT`` a given one. An instance already started in this process is used.
    :ivar pools: :class:`Pool` by part (``start``, ``stage1``, ``stage2``); missing ones default.
    :ivar num_cpus: the CPUs of a Ray instance started here (default: all).
    :ivar temp_dir: its session folder (default Ray's, ``/tmp/ray``).
    :ivar threads: torch threads per actor (default: the driver's, which keeps results
        bit-identical to the local engine; Ray alone would set 1).
    """

    address: str | None = None
    pools: dict[str, Pool] = field(default_factory=dict)
    num_cpus: int | None = None
    temp_dir: str | None = None
    threads: int | None = None

    def pool(self, part: str) -> Pool:
        return self.pools.get(part) or Pool()


def parse_pool(text: str) -> tuple[str, Pool]:
    """``PART=SIZE[:GPUS[:CPUS[:BATCH]]]`` (the CLI's ``--ray-pool``), e.g. ``stage1=2:1``.

    :raises UsageError: naming the value and the form.
    """
    form = "PART=SIZE[:GPUS[:CPUS[:BATCH]]] with PART one of start, stage1, stage2"
    part, _, spec = text.partition("=")
    fields = spec.split(":") if spec else []
    if part not in PARTS or not 1 <= len(fields) <= 4:
        raise UsageError(f"--ray-pool {text!r}: expected {form}, e.g. stage1=2:1")
    size, gpus, cpus, batch = fields + [""] * (4 - len(fields))
    try:
        pool = Pool(int(size), float(gpus or 0), float(cpus or 0.5), int(batch or 1))
    except ValueError:
        raise UsageError(f"--ray-pool {text!r}: expected numbers in {form}") from None
    return part, pool


def require_ray() -> Any:
    """The ``ray`` module with Ray Data.

    :raises UsageError: (exit 2) the ``ray`` extra is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part the engine needs
    except ImportError as e:
        raise UsageError(
            f"--engine ray needs Ray Data, which is not installed ({e}): pip install "
            "'grefine[ray]' (or use the default --engine local)"
        ) from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` / ``ray://HOST:PORT`` nobody answers (Ray itself would
    retry for minutes).

    :raises UsageError: (exit 2) naming the address and the reason.
    """
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise UsageError(
            f"--ray-address {address!r}: no Ray cluster answers there ({e.strerror or e}); "
            "start one (ray start --head) or check the address"
        ) from None


def connect(ray: Any, options: RayOptions) -> bool:
    """Start or join Ray; True when this call started it (and so must stop it).

    :raises UsageError: (exit 2) the address cannot be reached.
    """
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if options.address is not None:
        check_reachable(options.address)
        try:
            ray.init(address=options.address, **quiet)
        except (ConnectionError, RuntimeError) as e:
            raise UsageError(f"--ray-address {options.address!r}: {e}") from None
        return True
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(
        num_cpus=options.num_cpus,
        include_dashboard=False,
        _temp_dir=options.temp_dir,
        **quiet,
    )
    return True


def check_resources(ray: Any, options: RayOptions, mode: str) -> None:
    """Refuse pools that this machine's Ray cannot ever place (Ray would wait forever); a
    cluster joined by address may autoscale, so there it is a warning.

    :raises UsageError: (exit 2) naming what the pools ask for and what there is.
    """
    parts = PARTS if mode == "refine" else PARTS[:1]
    have = ray.cluster_resources()
    for resource, key in (("GPU", "num_gpus"), ("CPU", "num_cpus")):
        per_actor = max(getattr(options.pool(part), key) for part in parts)
        total = sum(getattr(options.pool(p), key) * options.pool(p).size for p in parts)
        there = have.get(resource, 0)
        if per_actor > there or total > there:
            message = (
                f"the Ray pools ask for {total:g} {resource}(s) in all ({per_actor:g} per actor "
                f"at most), the Ray cluster has {there:g}: lower them with --ray-pool "
                "PART=SIZE:GPUS:CPUS"
            )
            if options.address is None:  # a fixed machine: Ray would wait forever
                raise UsageError(message)
            log.warning("%s (waiting for the cluster to scale up)", message)


# --------------------------------------------------------------------------- the driver


@dataclass
class Task:
    """One pending item as it travels through the pools."""

    index: int
    item: BatchItem
    seed: int
    fingerprint: Any
    rerun_because: str | None
    result: Any = None
    outcome: ItemOutcome | None = None


@dataclass
class WorkerSpec:
    """What an actor needs to build the same pipeline as the driver's."""

    config: Any
    extra_plugins: dict[str, Any]
    mode: str
    out: Any
    threads: int | None
    keep_results: bool = False
    cwd: str = ""


def run_batch_ray(
    pipeline: GRefine,
    items: Iterable[Any],
    out_dir: str | Path | None,
    *,
    mode: str = "refine",
    resume: bool = True,
    on_item: Callable[[ItemOutcome], Any] | None = None,
    options: RayOptions | None = None,
    keep_results: bool = False,
) -> BatchReport:
    """:func:`~grefine_core.app.batch.run_batch` on Ray: the same outputs, resume and failure
    rules; results are published by the workers (``out_dir`` None keeps them in the outcomes).

    :raises UsageError: (exit 2) Ray is not installed, the address is unreachable, or pools mix
        GPU and CPU actors under ``device = "auto"``.
    :raises GRefineError: the Ray job itself failed (finished items are kept: rerun to resume).
    """
    options = options or RayOptions()
    ray = require_ray()
    pipeline = pinned_pipeline(pipeline, options, mode)
    items, base_seed = prepare_items(pipeline, items)
    target = output_target(out_dir) if out_dir is not None else None
    outcomes: dict[int, ItemOutcome] = {}
    with writing_to(target, items):
        pending = []
        for index, item in enumerate(items):
            seed = base_seed + index
            fingerprint = pipeline.fingerprint(item.image, item.prompt, seed, mode)
            done, why = resume_check(target, item, fingerprint, resume)
            if done:
                outcomes[index] = ItemOutcome(item, "resumed")
                if on_item is not None:
                    on_item(outcomes[index])
            else:
                pending.append(Task(index, item, seed, fingerprint, why))
        if pending:  # nothing pending: Ray is never started, no model ever loads
            spec = WorkerSpec(
                pipeline.config,
                pipeline.extra_plugins,
                mode,
                target.resolve() if isinstance(target, Path) else target,
                options.threads or _torch_threads(),
                keep_results,
                os.getcwd(),  # relative input paths mean what they mean here
            )
            for outcome_index, outcome in _stream(ray, pending, spec, options):
                outcomes[outcome_index] = outcome
                if on_item is not None:
                    on_item(outcome)
                crash_point("ray-outcome")
    return BatchReport([outcomes[i] for i in sorted(outcomes)])


def pinned_pipeline(pipeline: GRefine, options: RayOptions, mode: str) -> GRefine:
    """The pipeline with ``device = "auto"`` made what the actors get: ``cuda`` when every
    pool that loads models reserves GPUs, ``cpu`` when none does (the driver may have no GPU,
    and the fingerprint and the weights preflight must use the actors' device: float16 on
    CUDA needs the fp16-fix SDXL VAE).

    :raises UsageError: the pools mix GPU and CPU actors under ``auto``.
    """
    if pipeline.config.device != "auto":
        return pipeline
    parts = PARTS if mode == "refine" else PARTS[:1]
    gpus = {options.pool(part).num_gpus > 0 for part in parts}
    if len(gpus) > 1:
        raise UsageError(
            "the Ray pools mix GPU and CPU actors while device = auto: give --device (cuda or "
            "cpu) or give every pool GPUs (--ray-pool PART=SIZE:GPUS)"
        )
    from grefine_core.pipeline import GRefine

    config = pipeline.config.model_copy(update={"device": "cuda" if gpus == {True} else "cpu"})
    return GRefine(config, extra_plugins=pipeline.extra_plugins)


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def _stream(ray: Any, pending: list[Task], spec: WorkerSpec, options: RayOptions) -> Iterable:
    """``(index, outcome)`` of each pending task, as the pipeline finishes them."""
    started = connect(ray, options)
    try:
        check_resources(ray, options, spec.mode)
        from ray.data import ActorPoolStrategy, DataContext

        DataContext.get_current().enable_progress_bars = False  # grefine shows its own
        rows = [{"index": t.index, "task": pickle.dumps(t)} for t in pending]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        parts = PARTS if spec.mode == "refine" else PARTS[:1]
        for part in parts:
            pool = options.pool(part)
            ds = ds.map_batches(
                PartWorker,
                fn_constructor_kwargs={"spec": spec, "part": part, "last": part == parts[-1]},
                batch_size=pool.batch_size,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=pool.size),
                num_cpus=pool.num_cpus,
                num_gpus=pool.num_gpus,
            )
        try:
            for row in ds.iter_rows():
                task = pickle.loads(row["task"])
                yield task.index, task.outcome
        except GRefineError:
            raise
        except Exception as e:  # a worker died or could not start: the job, not one item
            root = e
            while root.__cause__ is not None or getattr(root, "cause", None) is not None:
                root = root.__cause__ or root.cause  # Ray wraps the user's error
            first = next((line for line in str(root).splitlines() if line.strip()), repr(root))
            raise GRefineError(
                f"the Ray job failed: {type(root).__name__}: {first} (finished items are kept; "
                "rerun to resume)"
            ) from e
    finally:
        if started:
            ray.shutdown()


class PartWorker:
    """A Ray Data UDF: one part of the run (:data:`PARTS`) on each item of a batch, with the
    pipeline (and its models) built once per actor."""

    def __init__(self, spec: WorkerSpec, part: str, last: bool) -> None:
        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        from grefine_core.pipeline import GRefine

        if spec.cwd and os.path.isdir(spec.cwd):  # Ray workers keep the raylet's folder
            os.chdir(spec.cwd)
        self.spec, self.part, self.last = spec, part, last
        self.pipeline = GRefine(spec.config, extra_plugins=spec.extra_plugins)
        self.target = output_target(spec.out) if spec.out is not None else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        tasks = [self._step(pickle.loads(blob)) for blob in batch["task"]]
        return {
            "index": np.array([t.index for t in tasks]),
            "task": np.array([self._dumps(t) for t in tasks], dtype=object),
        }

    @staticmethod
    def _dumps(task: Task) -> bytes:
        try:
            return pickle.dumps(task)
        except Exception as e:  # noqa: BLE001 - e.g. a plugin's unpicklable info: this item only
            task.outcome, task.result = failure(task.item, e), None
            return pickle.dumps(task)

    def _step(self, task: Task) -> Task:
        if task.outcome is not None:  # failed in an earlier part: pass it on
            return task
        try:
            self._run_part(task)
            if self.last:
                task.outcome = self._publish(task)
                task.result = None
        except Exception as e:  # noqa: BLE001 - one item's failure must not stop the job
            task.outcome, task.result = failure(task.item, e), None
        return task

    def _run_part(self, task: Task) -> None:
        item, pipe = task.item, self.pipeline
        if self.part == "start":
            task.result = pipe.start(
                item.image,
                item.prompt,
                mode=self.spec.mode,
                name=item.name,
                seed=task.seed,
                fingerprint=task.fingerprint,
            )
            task.result.rerun_because = task.rerun_because
            if self.spec.mode == "assess":  # both stages are skipped: no model, same actor
                for slot in PARTS[1:]:
                    pipe.advance(task.result, slot)
        else:
            pipe.advance(task.result, self.part)

    def _publish(self, task: Task) -> ItemOutcome:
        keep = task.result if self.target is None or self.spec.keep_results else None
        if self.target is None:
            return ItemOutcome(task.item, "done", result=keep)
        paths = save_outcome(task.result, self.target, task.item.name, self.pipeline.config.output)
        return ItemOutcome(task.item, "done", result=keep, paths=paths)
