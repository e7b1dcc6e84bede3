"""``evaluate_refine``: run refinement methods over an image set and measure them.

For every method (a preset name or a TOML config/ablation file) and image the injected
``run_method`` produces the refined image (and the mask it used); every metric is computed on the
original ("before", where meaningful) and on the refined image ("after"). Outputs in ``out_dir``:

* ``per_image.csv``: ``method,image,metric,before,after,delta`` (see :mod:`grefine_metrics.results`);
* ``table.md``: the paper's layout (:func:`grefine_metrics.report.render_table`);
* ``summary.json``: means, negative-optimisation counts, skipped metrics, failures;
* ``plots/<metric>.png``: per-metric bars per method;
* ``contact/<image>.png``: original, each method's result and mask;
* ``runs/<method>/<image>/``: each run's ``refined.png`` and report ``refined.json``, ``mask.npy`` and ``result.json``.

Resumable: a (method, image) pair whose metrics are all in the CSV is not recomputed; when only
some metrics are missing and the run's refined image is still in ``runs/``, only those metrics are
computed. A saved run is reused only for the image it was made from (its ``result.json`` names the
image), and a metric that raised is not stored, so a re-run tries it again. The CSV is rewritten
atomically every few seconds and at the end (also on errors).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from grefine_core import atomic as _atomic
from grefine_core.errors import InputError, MissingWeightsError, PluginError, UsageError
from grefine_metrics.manifest import ManifestItem
from grefine_metrics.registry import Metric
from grefine_metrics.report import contact_sheet, plot_metric, render_table, require_plots
from grefine_metrics.results import ResultRow, read_rows, summarise, write_rows

log = logging.getLogger(__name__)

#: ``run_method(method, image_path, prompt, work_dir) -> (refined image path or PIL image, mask)``.
RunMethod = Callable[[str, Path, str, Path], tuple[Any, Any]]

_SKIP = object()  # the metric became unavailable (missing weights): no value, no row
_ERROR = object()  # the metric raised: no row, so that a re-run computes it again


def method_label(method: str) -> str:
    """The name a method gets in tables: a preset's name, or a TOML file's stem."""
    text = method.strip()
    if text.lower().endswith(".toml"):
        return Path(text).stem
    return text


def method_labels(methods: Sequence[str]) -> dict[str, str]:
    """``{label: method}`` in order.

    :raises UsageError: no method, or two methods with the same label.
    """
    labels: dict[str, str] = {}
    for method in methods:
        if not method.strip():
            continue
        label = method_label(method)
        if label in labels:
            raise UsageError(
                f"methods {labels[label]!r} and {method!r} would both be called {label!r} in the "
                "results; rename one of the files"
            )
        labels[label] = method.strip()
    if not labels:
        raise UsageError("no method to evaluate: give at least one preset or TOML file")
    return labels


def unique_slugs(items: Sequence[ManifestItem]) -> dict[str, str]:
    """``{item.key: file-safe name}``; repeated slugs get ``-2``, ``-3``... in item order."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for item in items:
        slug, n = item.slug, 1
        while slug in used:
            n += 1
            slug = f"{item.slug}-{n}"
        used.add(slug)
        out[item.key] = slug
    return out


def load_rgb(path: Path, what: str) -> Image.Image:
    """Open an image file as RGB, with an :class:`InputError` naming it on failure."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"{what} {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"{what} {str(path)!r} is not a readable image: {e}") from None


def _as_mask(mask: Any) -> np.ndarray | None:
    if mask is None:
        return None
    if hasattr(mask, "binary"):
        mask = mask.binary
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise PluginError(f"run_method returned a mask of shape {arr.shape}; expected (H, W)")
    return arr.astype(bool) if arr.dtype == bool else arr.astype(np.float64) > 0.5


def _fit_mask(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    w, h = size
    if mask is None or mask.shape == (h, w):
        return mask
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(img) > 127


@dataclass
class RunRecord:
    """What one (method, image) run left in its work folder.

    :ivar image: the item key the run was made from (``None`` in records of older versions).
    """

    refined: Path
    mask: np.ndarray | None
    image: str | None = None

    @staticmethod
    def load(work: Path, image: str | None = None) -> RunRecord | None:
        """The record saved by :meth:`save`, or ``None`` when absent, incomplete, or made from
        another image than ``image`` (folder names are unique per run, not across runs: a changed
        manifest can give a folder to another image)."""
        meta = work / "result.json"
        if not meta.is_file():
            return None
        try:
            data = json.loads(meta.read_text("utf-8"))
            saved_for = data.get("image")
            if image is not None and saved_for is not None and saved_for != image:
                log.info("%s was made for %r, not %r: refining again", work, saved_for, image)
                return None
            refined = Path(data["refined"])
            refined = refined if refined.is_absolute() else work / refined
            mask = np.load(work / data["mask"]) if data.get("mask") else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return RunRecord(refined, mask, saved_for) if refined.is_file() else None

    def save(self, work: Path) -> None:
        mask_name = None
        if self.mask is not None:
            mask_name = "mask.npy"
            with _atomic.atomic_path(work / mask_name) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, self.mask)
        try:
            refined = self.refined.resolve().relative_to(work.resolve()).as_posix()
        except ValueError:
            refined = str(self.refined.resolve())
        _atomic.write_text(
            work / "result.json",
            json.dumps({"refined": refined, "mask": mask_name, "image": self.image}),
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class RefineEvaluation:
    """What :func:`evaluate_refine` wrote and found."""

    out_dir: Path
    csv_path: Path
    table_path: Path
    summary_path: Path
    summary: dict[str, Any]
    plot_paths: list[Path] = field(default_factory=list)
    contact_paths: list[Path] = field(default_factory=list)
    skipped_metrics: dict[str, str] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    computed: int = 0
    reused: int = 0


class _Evaluator:
    def __init__(
        self,
        items: Sequence[ManifestItem],
        labels: dict[str, str],
        metrics: Sequence[Metric],
        out_dir: Path,
        run_method: RunMethod,
        flush_seconds: float,
    ) -> None:
        self.items = list(items)
        self.labels = labels
        self.out = out_dir
        self.run_method = run_method
        self.flush_seconds = flush_seconds
        self.csv_path = out_dir / "per_image.csv"
        self.rows: dict[tuple[str, str, str], ResultRow] = {
            (r.method, r.image, r.metric): r for r in read_rows(self.csv_path)
        }
        self.skipped: dict[str, str] = {}
        self.active: list[Metric] = []
        for m in metrics:
            ok, why = m.available()
            if ok:
                self.active.append(m)
            else:
                self.skipped[m.name] = why or "unavailable"
                log.warning("metric %r skipped: %s", m.name, why)
        self.all_metrics = list(metrics)
        self.metric_errors: dict[str, str] = {}
        self.failures: list[dict[str, str]] = []
        self.slugs = unique_slugs(self.items)
        self.before_cache: dict[tuple[str, str], float | None] = {}
        by_name = {m.name: m for m in self.active}
        for r in self.rows.values():
            m = by_name.get(r.metric)
            if m is not None and "mask" not in m.needs and r.before is not None:
                self.before_cache.setdefault((r.image, r.metric), r.before)
        self.computed = 0
        self.reused = 0
        self._last_flush = time.monotonic()

    def work_dir(self, label: str, item: ManifestItem) -> Path:
        return self.out / "runs" / label / self.slugs[item.key]

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_flush >= self.flush_seconds:
            write_rows(self.csv_path, self.rows.values())
            self._last_flush = now

    def _measure(
        self, m: Metric, before: Image.Image, after: Image.Image, mask: Any, prompt: str
    ) -> Any:
        try:
            return m(before, after, mask, prompt)
        except MissingWeightsError as e:
            self.skipped[m.name] = str(e)
            self.active = [a for a in self.active if a.name != m.name]
            log.warning("metric %r skipped: %s", m.name, e)
            return _SKIP
        except Exception as e:  # noqa: BLE001 - one bad value must not end a long evaluation
            self.metric_errors.setdefault(m.name, f"{type(e).__name__}: {e}")
            log.warning(
                "metric %r failed (value left undefined, retried on a re-run): %s: %s",
                m.name,
                type(e).__name__,
                e,
            )
            return _ERROR

    def _fail(self, label: str, item: ManifestItem, error: Exception) -> None:
        self.failures.append({"method": label, "image": item.key, "error": str(error)})
        log.warning("%s on %s failed: %s", label, item.key, error)

    def run_pair(self, label: str, item: ManifestItem, original: Image.Image) -> None:
        missing = [m for m in self.active if (label, item.key, m.name) not in self.rows]
        if not missing:
            self.reused += 1
            return
        work = self.work_dir(label, item)
        record = RunRecord.load(work, item.key)
        if record is None:
            work.mkdir(parents=True, exist_ok=True)
            try:
                refined, mask = self.run_method(self.labels[label], item.image, item.prompt, work)
                mask = _as_mask(mask)
            except (InputError, PluginError) as e:
                self._fail(label, item, e)
                return
            if isinstance(refined, Image.Image):
                path = work / "refined.png"
                with _atomic.atomic_path(path) as tmp:
                    refined.save(tmp, format="PNG")
                refined = path
            record = RunRecord(Path(refined), mask, item.key)
            record.save(work)
        try:
            after_img = load_rgb(record.refined, f"refined image of {label!r}")
        except InputError as e:
            self._fail(label, item, e)
            return
        before_img = original
        if original.size != after_img.size:
            log.warning(
                "%s: %s returned %dx%d for a %dx%d input; the original is resized for comparison",
                item.key,
                label,
                *after_img.size,
                *original.size,
            )
            before_img = original.resize(after_img.size, Image.Resampling.LANCZOS)
        mask = _fit_mask(record.mask, after_img.size)
        for m in missing:
            after = self._measure(m, before_img, after_img, mask, item.prompt)
            if after is _SKIP or after is _ERROR:
                continue
            before: float | None = None
            if m.has_before:
                key = (item.key, m.name)
                if "mask" not in m.needs and key in self.before_cache:
                    before = self.before_cache[key]
                else:
                    value = self._measure(m, before_img, before_img, mask, item.prompt)
                    if value is _SKIP or value is _ERROR:
                        continue
                    before = value
                    if "mask" not in m.needs:
                        self.before_cache[key] = before
            self.rows[(label, item.key, m.name)] = ResultRow(label, item.key, m.name, before, after)
        self.computed += 1

    def run(self, progress: bool) -> None:
        from tqdm import tqdm

        bar = tqdm(
            total=len(self.items) * len(self.labels),
            disable=not progress,
            unit="run",
            desc="eval refine",
        )
        try:
            for item in self.items:
                try:
                    original = load_rgb(item.image, "image")
                except InputError as e:
                    for label in self.labels:
                        self._fail(label, item, e)
                    bar.update(len(self.labels))
                    continue
                for label in self.labels:
                    bar.set_postfix_str(f"{label} {item.key}"[:60], refresh=False)
                    self.run_pair(label, item, original)
                    self.flush()
                    bar.update(1)
        finally:
            bar.close()
            self.flush(force=True)


def evaluate_refine(
    items: Sequence[ManifestItem],
    methods: Sequence[str],
    metrics: Sequence[Metric],
    out_dir: str | os.PathLike[str],
    run_method: RunMethod,
    *,
    progress: bool = True,
    plots: bool = True,
    contact_limit: int | None = None,
    flush_seconds: float = 5.0,
) -> RefineEvaluation:
    """Refine ``items`` with each method, measure every metric before and after, write reports.

    :param items: the image set (:func:`grefine_metrics.manifest.read_manifest`).
    :param methods: preset names or TOML file paths, in table order.
    :param metrics: the metrics, in column order; unavailable ones are skipped with their reason.
    :param out_dir: the output folder (created; an earlier run's results there are reused).
    :param run_method: ``(method, image_path, prompt, work_dir) -> (refined, mask)``: ``refined``
        is a path or a PIL image, ``mask`` a ``(H, W)`` array (or an object with ``.binary``) or
        ``None``. An :class:`InputError`/:class:`PluginError` fails that pair only (recorded);
        other errors stop the evaluation after saving what was computed.
    :param progress: show a tqdm progress bar on stderr.
    :param plots: write ``plots/`` and ``contact/`` (the plots need matplotlib, checked first:
        :class:`~grefine_quality.extras.MissingExtraError` without it).
    :param contact_limit: at most this many contact sheets (``None``: one per image; 0: none).
    :param flush_seconds: how often the CSV is rewritten during the run.
    """
    labels = method_labels(methods)
    if not items:
        raise InputError("the image set is empty")
    if plots:
        require_plots()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev = _Evaluator(items, labels, metrics, out, run_method, flush_seconds)
    ev.run(progress)

    active_names = {m.name for m in ev.active}
    shown = [m for m in ev.all_metrics if m.name in active_names]
    keys = [i.key for i in items]
    summary = summarise(ev.rows.values(), list(labels), shown, keys)
    table = render_table(summary, shown, ev.skipped, ev.failures)
    table_path = out / "table.md"
    _atomic.write_text(table_path, table)

    plot_paths: list[Path] = []
    contact_paths: list[Path] = []
    if plots:
        for m in shown:
            path = out / "plots" / f"{m.name}.png"
            plot_metric(path, m, summary)
            plot_paths.append(path)
        limit = len(items) if contact_limit is None else max(0, contact_limit)
        for item in list(items)[:limit]:
            path = _contact_for(ev, item)
            if path is not None:
                contact_paths.append(path)

    full = dict(summary)
    full.update(
        {
            "method_sources": labels,
            "metric_info": {
                m.name: {
                    "label": m.header,
                    "higher_is_better": m.higher_is_better,
                    "has_before": m.has_before,
                    "description": m.description,
                }
                for m in shown
            },
            "skipped_metrics": ev.skipped,
            "metric_errors": ev.metric_errors,
            "failures": ev.failures,
            "computed_pairs": ev.computed,
            "reused_pairs": ev.reused,
        }
    )
    summary_path = out / "summary.json"
    _atomic.write_text(
        summary_path, json.dumps(_json_safe(full), indent=2, ensure_ascii=False) + "\n"
    )
    return RefineEvaluation(
        out_dir=out,
        csv_path=ev.csv_path,
        table_path=table_path,
        summary_path=summary_path,
        summary=full,
        plot_paths=plot_paths,
        contact_paths=contact_paths,
        skipped_metrics=ev.skipped,
        failures=ev.failures,
        computed=ev.computed,
        reused=ev.reused,
    )


def _contact_for(ev: _Evaluator, item: ManifestItem) -> Path | None:
    try:
        original = load_rgb(item.image, "image")
    except InputError:
        return None
    panels = []
    for label in ev.labels:
        record = RunRecord.load(ev.work_dir(label, item), item.key)
        if record is None:
            panels.append((label, None, None))
            continue
        try:
            refined = load_rgb(record.refined, "refined image")
        except InputError:
            panels.append((label, None, None))
            continue
        panels.append((label, refined, _fit_mask(record.mask, refined.size)))
    path = ev.out / "contact" / f"{ev.slugs[item.key]}.png"
    title = f"{item.key}: {item.prompt}" if item.prompt else item.key
    contact_sheet(path, original, panels, title=title)
    return path
