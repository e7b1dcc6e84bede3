"""``evaluate_assess``: how well quality scores predict human ratings (the paper's Tables 6-7).

Input: a CSV of images with mean opinion scores. Accepted layouts (``layout=``):

* ``agiqa3k``: AGIQA-3K's ``data.csv``:
  ``name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align``; ``name`` is the
  file name inside the image folder; ``mos_quality`` is the perceptual MOS (Table 6),
  ``mos_align`` the alignment MOS (Table 7).
* ``aigiqa20k``: AIGIQA-20K's annotation table saved as CSV: ``name,prompt,mos`` (one MOS
  combining perception and alignment; use the test split for Tables 6-7).
* ``auto`` (default): the image column is the first of ``name, image, image_name, img_name,
  filename, file, path``; the prompt column the first of ``prompt, text, caption`` (optional);
  the MOS columns every column whose name starts with ``mos`` (case-insensitive).
  ``image_column``, ``prompt_column`` and ``mos_columns`` override any of these.

Image names are resolved against ``images_dir`` (default: the CSV's folder). ``score_fn(path,
prompt)`` returns ``{score_name: value}`` (e.g. ``{"pq": 0.71, "aq": 0.64}``); every score is
correlated with every MOS column (SRCC, PLCC, optionally PLCC after a logistic fit).

Outputs in ``out_dir``: ``scores.csv`` (per image: name, MOS columns, scores; reused on a re-run,
so an interrupted run resumes), ``correlations.csv`` (``score,mos,n,srcc,plcc[,plcc_logistic]``),
``table.md`` and ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grefine_core import atomic as _atomic
from grefine_core.errors import InputError, UsageError
from grefine_metrics.report import format_value
from grefine_metrics.stats import correlations

log = logging.getLogger(__name__)

ScoreFn = Callable[[Path, str], Mapping[str, float]]

LAYOUTS: dict[str, dict[str, Any]] = {
    "agiqa3k": {"image": "name", "prompt": "prompt", "mos": ("mos_quality", "mos_align")},
    "aigiqa20k": {"image": "name", "prompt": "prompt", "mos": ("mos",)},
}
IMAGE_COLUMNS = ("name", "image", "image_name", "img_name", "filename", "file", "path")
PROMPT_COLUMNS = ("prompt", "text", "caption")


@dataclass(frozen=True)
class MOSItem:
    """One rated image."""

    name: str
    image: Path
    prompt: str
    mos: dict[str, float]


@dataclass(frozen=True)
class MOSTable:
    """A parsed MOS CSV: the items and the columns that were used."""

    items: list[MOSItem]
    image_column: str
    prompt_column: str | None
    mos_columns: list[str]


def _pick(header: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {h.strip().lower(): h for h in header}
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def read_mos_csv(
    csv_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    layout: str = "auto",
    image_column: str | None = None,
    prompt_column: str | None = None,
    mos_columns: Sequence[str] | None = None,
) -> MOSTable:
    """Parse a MOS CSV (see the module docstring for the layouts).

    :raises InputError: missing file or columns, a non-numeric MOS (named ``file:line``).
    :raises UsageError: an unknown layout.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(f"MOS file {str(path)!r} does not exist or is not a file")
    if layout != "auto" and layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}; valid: auto, {', '.join(LAYOUTS)}")
    base = Path(images_dir) if images_dir is not None else path.parent
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h for h in (reader.fieldnames or []) if h is not None]
        if not header:
            raise InputError(f"{path}:1: the file is empty or has no header")
        spec = LAYOUTS.get(layout, {})
        img_col = image_column or spec.get("image") or _pick(header, IMAGE_COLUMNS)
        if img_col is None or img_col not in header:
            raise InputError(
                f"{path}:1: no image column ({image_column or spec.get('image') or ' / '.join(IMAGE_COLUMNS)}) "
                f"in the header {header}; name it with --image-column"
            )
        if prompt_column is not None and prompt_column not in header:
            raise InputError(
                f"{path}:1: prompt column {prompt_column!r} not in the header {header}"
            )
        p_col = (
            prompt_column
            or (spec.get("prompt") if spec.get("prompt") in header else None)
            or _pick(header, PROMPT_COLUMNS)
        )
        if mos_columns:
            m_cols = list(mos_columns)
        elif spec:
            m_cols = list(spec["mos"])
        else:
            m_cols = [h for h in header if h.strip().lower().startswith("mos")]
        missing = [c for c in m_cols if c not in header]
        if not m_cols or missing:
            raise InputError(
                f"{path}:1: MOS column(s) {missing or '(none found)'} not in the header {header}; "
                "name them with --mos-columns"
            )
        items: list[MOSItem] = []
        seen: set[str] = set()
        for row in reader:
            where = f"{path}:{reader.line_num}"
            name = (row.get(img_col) or "").strip()
            if not name:
                raise InputError(f"{where}: empty image name in column {img_col!r}")
            if name in seen:
                raise InputError(f"{where}: image {name!r} is listed twice")
            seen.add(name)
            mos: dict[str, float] = {}
            for c in m_cols:
                text = (row.get(c) or "").strip()
                try:
                    mos[c] = float(text)
                except ValueError:
                    raise InputError(
                        f"{where}: MOS column {c!r} holds {text!r}, not a number"
                    ) from None
            image = Path(name) if Path(name).is_absolute() else base / name
            items.append(MOSItem(name, image, (row.get(p_col) or "") if p_col else "", mos))
    if not items:
        raise InputError(f"MOS file {str(path)!r} has a header but no rows")
    return MOSTable(items, img_col, p_col, m_cols)


@dataclass
class AssessEvaluation:
    """What :func:`evaluate_assess` computed (and wrote, when ``out_dir`` was given)."""

    correlations: list[dict[str, Any]]
    scores: dict[str, dict[str, float]]
    table: MOSTable
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)


def _read_scores(path: Path, table: MOSTable) -> dict[str, dict[str, float]]:
    if not path.is_file():
        return {}
    out: dict[str, dict[str, float]] = {}
    fixed = {"name", "prompt", *table.mos_columns}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row.get("name")
            if not name:
                continue
            vals = {}
            for k, v in row.items():
                if k in fixed or k is None:
                    continue
                try:
                    vals[k] = float(v) if v not in ("", None) else math.nan
                except ValueError:
                    vals[k] = math.nan
            out[name] = vals
    return out


def _scores_csv(table: MOSTable, scores: dict[str, dict[str, float]], names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "prompt", *table.mos_columns, *names])
    for item in table.items:
        if item.name not in scores:
            continue
        s = scores[item.name]
        w.writerow(
            [
                item.name,
                item.prompt,
                *(repr(item.mos[c]) for c in table.mos_columns),
                *(repr(float(s[n])) if n in s else "" for n in names),
            ]
        )
    return buf.getvalue()


def _score_names(scores: dict[str, dict[str, float]]) -> list[str]:
    names: dict[str, None] = {}
    for s in scores.values():
        for k in s:
            names.setdefault(k, None)
    return list(names)


def render_assess_table(
    rows: list[dict[str, Any]], mos_columns: Sequence[str], logistic: bool, n_images: int
) -> str:
    """Markdown table like the paper's Tables 6-7: one row per score, SRCC/PLCC per MOS column."""
    sub = ["SRCC", "PLCC"] + (["PLCC (logistic)"] if logistic else [])
    headers = ["Score"] + [f"{c} {s}" for c in mos_columns for s in sub]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    scores = list(dict.fromkeys(r["score"] for r in rows))
    lookup = {(r["score"], r["mos"]): r for r in rows}
    best: dict[tuple[str, str], float] = {}
    for c in mos_columns:
        for key in ("srcc", "plcc", "plcc_logistic"):
            vals = [lookup[(s, c)].get(key, math.nan) for s in scores if (s, c) in lookup]
            vals = [v for v in vals if not math.isnan(v)]
            if vals:
                best[(c, key)] = max(vals)
    for s in scores:
        cells = [f"`{s}`"]
        for c in mos_columns:
            r = lookup.get((s, c), {})
            for key in ["srcc", "plcc"] + (["plcc_logistic"] if logistic else []):
                v = r.get(key, math.nan)
                text = format_value(v)
                if len(scores) > 1 and not math.isnan(v) and best.get((c, key)) == v:
                    text = f"**{text}**"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{n_images} rated images. SRCC: Spearman rank correlation; PLCC: Pearson correlation of the "
        "raw scores"
        + ("; PLCC (logistic): Pearson after the 4-parameter logistic fit" if logistic else "")
        + ". **Bold**: the highest in the column.",
    ]
    return "\n".join(lines) + "\n"


def evaluate_assess(
    csv_path: str | os.PathLike[str],
    score_fn: ScoreFn,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    layout: str = "auto",
    image_column: str | None = None,
    prompt_column: str | None = None,
    mos_columns: Sequence[str] | None = None,
    limit: int | None = None,
    logistic: bool = False,
    skip_missing: bool = False,
    progress: bool = True,
    flush_seconds: float = 5.0,
    required: Sequence[str] = (),
) -> AssessEvaluation:
    """Score every rated image with ``score_fn`` and correlate each score with each MOS column.

    :param csv_path: the MOS CSV (layouts in the module docstring).
    :param score_fn: ``(image_path, prompt) -> {score_name: value}``.
    :param out_dir: where to write the outputs (``None``: compute only).
    :param limit: use only the first ``limit`` rows (quick checks).
    :param logistic: also report PLCC after the 4-parameter logistic fit.
    :param skip_missing: leave out images that do not exist instead of failing.
    :param required: score names every image must have; an image whose saved scores (from an
        earlier run in ``out_dir``) lack one is scored again, so adding a score resumes correctly.
    :raises InputError: unreadable CSV, or missing images (unless ``skip_missing``).
    """
    table = read_mos_csv(csv_path, images_dir, layout, image_column, prompt_column, mos_columns)
    items = table.items[: limit if limit is not None and limit >= 0 else None]
    missing = [i.name for i in items if not i.image.is_file()]
    if missing and not skip_missing:
        raise InputError(
            f"{len(missing)} of {len(items)} images listed in {str(csv_path)!r} were not found in "
            f"{str(items[0].image.parent)!r} (e.g. {', '.join(missing[:5])}); pass the image folder "
            "with --images-dir, or --skip-missing"
        )
    items = [i for i in items if i.image.is_file()]
    table = MOSTable(items, table.image_column, table.prompt_column, table.mos_columns)

    out = Path(out_dir) if out_dir is not None else None
    scores_path = out / "scores.csv" if out else None
    scores: dict[str, dict[str, float]] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        previous = _read_scores(scores_path, table)  # type: ignore[arg-type]
        scores = {i.name: previous[i.name] for i in items if i.name in previous}

    from tqdm import tqdm

    last = time.monotonic()
    todo = [
        i for i in items if i.name not in scores or any(n not in scores[i.name] for n in required)
    ]
    try:
        for item in tqdm(todo, disable=not progress, unit="img", desc="eval assess"):
            values = score_fn(item.image, item.prompt)
            scores[item.name] = {
                **scores.get(item.name, {}),
                **{str(k): float(v) for k, v in values.items()},
            }
            if out is not None and time.monotonic() - last >= flush_seconds:
                _atomic.write_text(scores_path, _scores_csv(table, scores, _score_names(scores)))  # type: ignore[arg-type]
                last = time.monotonic()
    finally:
        if out is not None and scores:  # keep what was scored so a re-run resumes
            _atomic.write_text(scores_path, _scores_csv(table, scores, _score_names(scores)))  # type: ignore[arg-type]

    names = _score_names(scores)
    rows: list[dict[str, Any]] = []
    for name in names:
        for c in table.mos_columns:
            x = [scores[i.name].get(name, math.nan) for i in items]
            y = [i.mos[c] for i in items]
            rows.append({"score": name, "mos": c, **correlations(x, y, logistic)})

    files: list[Path] = []
    if out is not None:
        _atomic.write_text(scores_path, _scores_csv(table, scores, names))  # type: ignore[arg-type]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        keys = ["score", "mos", "n", "srcc", "plcc"] + (["plcc_logistic"] if logistic else [])
        w.writerow(keys)
        for r in rows:
            w.writerow([r[k] if k in ("score", "mos", "n") else repr(float(r[k])) for k in keys])
        _atomic.write_text(out / "correlations.csv", buf.getvalue())
        _atomic.write_text(
            out / "table.md", render_assess_table(rows, table.mos_columns, logistic, len(items))
        )
        summary = {
            "csv": str(csv_path),
            "images": len(items),
            "missing_images": missing,
            "image_column": table.image_column,
            "prompt_column": table.prompt_column,
            "mos_columns": table.mos_columns,
            "correlations": [
                {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in rows
            ],
        }
        _atomic.write_text(
            out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
        )
        files = [scores_path, out / "correlations.csv", out / "table.md", out / "summary.json"]  # type: ignore[list-item]
    return AssessEvaluation(rows, scores, table, out, files, missing)
