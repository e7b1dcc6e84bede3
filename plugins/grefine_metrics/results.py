"""Per-image results of ``grefine eval refine``: the CSV rows and their aggregation.

``per_image.csv`` has one row per (method, image, metric) with the columns
``method,image,metric,before,after,delta``: ``before`` is the metric on the original image (empty
for full-reference metrics and for informational ones), ``after`` on the refined image,
``delta = after - before``. Undefined values are written ``nan``; PSNR of identical pixels ``inf``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grefine_core import atomic as _atomic
from grefine_core.errors import InputError
from grefine_metrics.registry import Metric

CSV_COLUMNS = ("method", "image", "metric", "before", "after", "delta")


@dataclass(frozen=True)
class ResultRow:
    """One value pair of one metric for one image and method."""

    method: str
    image: str
    metric: str
    before: float | None
    after: float

    @property
    def delta(self) -> float | None:
        """``after - before`` (0 for two equal infinities; ``None`` without a before-value)."""
        if self.before is None:
            return None
        if self.after == self.before:
            return 0.0
        return self.after - self.before


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def _parse(text: str, where: str) -> float | None:
    text = text.strip()
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a number") from None


def rows_to_csv(rows: Iterable[ResultRow]) -> str:
    """The CSV text of ``rows`` (header included)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r.method, r.image, r.metric, _fmt(r.before), _fmt(r.after), _fmt(r.delta)])
    return buf.getvalue()


def write_rows(path: Path, rows: Iterable[ResultRow]) -> None:
    """Write ``per_image.csv`` atomically."""
    _atomic.write_text(path, rows_to_csv(rows))


def read_rows(path: Path) -> list[ResultRow]:
    """Read a ``per_image.csv`` written by :func:`write_rows` (empty list when absent).

    :raises InputError: the header or a line is not in the expected layout (named ``file:line``).
    """
    if not path.is_file():
        return []
    rows: list[ResultRow] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != CSV_COLUMNS:
            raise InputError(
                f"{path}:1: unexpected columns {header}; expected {list(CSV_COLUMNS)} "
                "(is this folder the output of another tool? use a new --out folder)"
            )
        for line in reader:
            where = f"{path}:{reader.line_num}"
            if not line:
                continue
            if len(line) != len(CSV_COLUMNS):
                raise InputError(f"{where}: expected {len(CSV_COLUMNS)} fields, got {len(line)}")
            after = _parse(line[4], where)
            rows.append(
                ResultRow(
                    line[0],
                    line[1],
                    line[2],
                    _parse(line[3], where),
                    math.nan if after is None else after,
                )
            )
    return rows


# ----------------------------------------------------------------------------- aggregation


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def _std(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v) and not math.isinf(v)]
    if len(finite) < 2:
        return 0.0
    m = math.fsum(finite) / len(finite)
    return math.sqrt(math.fsum((v - m) ** 2 for v in finite) / len(finite))


def summarise(
    rows: Iterable[ResultRow],
    methods: Sequence[str],
    metrics: Sequence[Metric],
    images: Sequence[str],
) -> dict[str, Any]:
    """Aggregate the rows of the requested methods, metrics and images.

    :returns: a JSON-ready dict: ``original`` (mean before-values of metrics whose before-value
        does not depend on the method's mask), and per method: ``mean_after``, ``std_after``,
        ``mean_before`` (same images), ``n`` (images with a value), ``negative_by_metric``
        (images where after is worse than before), ``comparisons``, ``negative_optimisations``
        (their totals) and ``negative_mean_metrics`` (metrics whose mean got worse).
    """
    by_name = {m.name: m for m in metrics}
    wanted_images = set(images)
    cell: dict[tuple[str, str], list[ResultRow]] = {}
    for r in rows:
        if r.method in methods and r.metric in by_name and r.image in wanted_images:
            cell.setdefault((r.method, r.metric), []).append(r)

    original: dict[str, float] = {}
    for metric in metrics:
        if not metric.has_before or "mask" in metric.needs:
            continue
        per_image: dict[str, float] = {}
        for method in methods:
            for r in cell.get((method, metric.name), []):
                if r.before is not None:
                    per_image.setdefault(r.image, metric.capped(r.before))
        original[metric.name] = _mean(list(per_image.values()))

    per_method: dict[str, Any] = {}
    for method in methods:
        out: dict[str, Any] = {
            "mean_after": {},
            "std_after": {},
            "mean_before": {},
            "n": {},
            "negative_by_metric": {},
            "comparisons_by_metric": {},
            "negative_mean_metrics": [],
        }
        for metric in metrics:
            rs = cell.get((method, metric.name), [])
            afters = [metric.capped(r.after) for r in rs]
            out["mean_after"][metric.name] = _mean(afters)
            out["std_after"][metric.name] = _std(afters)
            out["n"][metric.name] = sum(1 for v in afters if not math.isnan(v))
            if not metric.has_before:
                continue
            pairs = [
                (metric.capped(r.after), metric.capped(r.before))
                for r in rs
                if r.before is not None and not math.isnan(r.after) and not math.isnan(r.before)
            ]
            out["mean_before"][metric.name] = _mean([b for _, b in pairs])
            compare = metric.higher_is_better is not None
            out["comparisons_by_metric"][metric.name] = len(pairs) if compare else 0
            out["negative_by_metric"][metric.name] = sum(metric.is_worse(a, b) for a, b in pairs)
            if pairs and metric.is_worse(
                _mean([a for a, _ in pairs]), _mean([b for _, b in pairs])
            ):
                out["negative_mean_metrics"].append(metric.name)
        out["negative_optimisations"] = sum(out["negative_by_metric"].values())
        out["comparisons"] = sum(out["comparisons_by_metric"].values())
        per_method[method] = out

    best: dict[str, float | None] = {}
    for metric in metrics:
        best[metric.name] = metric.best([per_method[m]["mean_after"][metric.name] for m in methods])
    return {
        "methods": list(methods),
        "metrics": [m.name for m in metrics],
        "images": len(images),
        "original": original,
        "per_method": per_method,
        "best": best,
    }
