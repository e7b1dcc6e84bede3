"""MOS tables: the CSV layouts of AGIQA-3K and AIGIQA-20K (recognised by their column names) or
any other with named columns, their checks, MOS normalisation and the seeded train/validation
split (docs/training.md). Numpy and the standard library only.

Every error is one line naming the file, the line or the column and what would be valid.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grefine_core.errors import InputError, UsageError

#: The PQ factors other than ``overall`` that a MOS table may carry a column for.
FACTOR_NAMES: tuple[str, ...] = ("technical", "rational", "natural")
#: How many missing image names an error lists before the count.
LIST_FIRST = 5


@dataclass(frozen=True)
class Layout:
    """Which column holds what.

    :ivar name: ``"AGIQA-3K"``, ``"AIGIQA-20K"`` or ``"custom"``.
    :ivar image_col: the image file name (relative to the images folder).
    :ivar mos_col: the overall perceptual MOS (the ``overall`` prompt's target).
    :ivar factor_cols: ``{factor: column}`` for the technical / rational / natural MOS present.
    :ivar align_col: the alignment MOS, or ``None``.
    :ivar prompt_col: the prompt, or ``None``.
    """

    name: str
    image_col: str
    mos_col: str
    factor_cols: dict[str, str] = field(default_factory=dict)
    align_col: str | None = None
    prompt_col: str | None = None

    def columns(self) -> dict[str, str]:
        """``{role: column}`` of every column used (for the manifest)."""
        out = {"image": self.image_col, "overall": self.mos_col, **self.factor_cols}
        if self.align_col:
            out["align"] = self.align_col
        if self.prompt_col:
            out["prompt"] = self.prompt_col
        return out


#: Known layouts: ``(name, image column, MOS column, alignment column, prompt column)``. A layout
#: matches when its image and MOS columns are in the header (case-insensitive).
KNOWN_LAYOUTS: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    # AGIQA-3K data.csv: name, prompt, adj1, adj2, style, mos_quality, std_quality, mos_align, std_align
    ("AGIQA-3K", "name", "mos_quality", "mos_align", "prompt"),
    # AIGIQA-20K (as commonly distributed): Image, MOS (a prompt column is used when present)
    ("AIGIQA-20K", "image", "mos", None, "prompt"),
)
#: Column names recognised for the factor MOS (case-insensitive).
FACTOR_ALIASES: dict[str, tuple[str, ...]] = {f: (f, f"mos_{f}", f"{f}_mos") for f in FACTOR_NAMES}


@dataclass
class MosTable:
    """A checked MOS table.

    :ivar path: the CSV file; :ivar images: the images folder; :ivar layout: its columns.
    :ivar names: the image names as written; :ivar files: the resolved image paths.
    :ivar lines: each row's line number in the file (for messages).
    :ivar mos: ``{"overall": [n], factor: [n], "align": [n]}`` raw MOS values (float64).
    :ivar prompts: the prompts, or ``None`` without a prompt column.
    :ivar sha256: the CSV file's sha256.
    """

    path: Path
    images: Path
    layout: Layout
    names: list[str]
    files: list[Path]
    lines: list[int]
    mos: dict[str, np.ndarray]
    prompts: list[str] | None
    sha256: str

    def __len__(self) -> int:
        return len(self.names)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(line number, cells)])`` of a CSV/TSV file (delimiter sniffed; blank rows
    skipped; a UTF-8 byte-order mark dropped)."""
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not found"
        raise InputError(f"--mos {str(path)!r}: {what}; give the CSV file of the MOS table")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--mos {str(path)!r}: cannot read it as UTF-8 text ({e})") from None
    first = text.splitlines()[0] if text.strip() else ""
    if not first.strip():
        raise InputError(f"--mos {str(path)!r} is empty: it needs a header row and data rows")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    if delimiter == "," and first.count(",") == 0:
        delimiter = max(("\t", ";"), key=first.count) if ("\t" in first or ";" in first) else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip() for h in next(reader)]
    rows = []
    for cells in reader:
        if any(c.strip() for c in cells):
            rows.append((reader.line_num, cells))
    return header, rows


def _find(header: Sequence[str], name: str) -> str | None:
    """The header's spelling of column ``name`` (case-insensitive), or ``None``."""
    lowered = {h.lower(): h for h in header}
    return lowered.get(name.strip().lower())


def _require(header: Sequence[str], name: str, option: str, path: Path) -> str:
    found = _find(header, name)
    if found is None:
        raise UsageError(
            f"{option} {name!r}: {str(path)!r} has no such column; its columns are "
            f"{', '.join(header)}"
        )
    return found


def detect_layout(
    header: Sequence[str],
    path: Path,
    *,
    image_col: str | None = None,
    mos_col: str | None = None,
    factor_cols: Mapping[str, str] | None = None,
    align_col: str | None = None,
    prompt_col: str | None = None,
) -> Layout:
    """The layout of a CSV ``header``: a known one recognised by its column names, else the
    columns named by the options (which also override a known layout's).

    :raises UsageError: no layout recognised and no ``--image-col``/``--mos-col``, or a named
        column that is not in the header.
    """
    name, known_align, known_prompt = "custom", None, None
    for layout, img, mos, align, prompt in KNOWN_LAYOUTS:
        if _find(header, img) and _find(header, mos):
            name, known_align, known_prompt = layout, align, prompt
            image_col = image_col or img
            mos_col = mos_col or mos
            break
    if not image_col or not mos_col:
        known = "; ".join(f"{n}: {i}, {m}" for n, i, m, _, _ in KNOWN_LAYOUTS)
        raise UsageError(
            f"{str(path)!r}: columns {', '.join(header)} match no known layout ({known}); name "
            "the image and MOS columns with --image-col and --mos-col"
        )
    image = _require(header, image_col, "--image-col", path)
    mos = _require(header, mos_col, "--mos-col", path)
    factors: dict[str, str] = {}
    for factor in FACTOR_NAMES:
        given = (factor_cols or {}).get(factor)
        if given:
            factors[factor] = _require(header, given, f"--factor-col {factor}=", path)
            continue
        for alias in FACTOR_ALIASES[factor]:
            found = _find(header, alias)
            if found:
                factors[factor] = found
                break
    unknown = sorted(set(factor_cols or {}) - set(FACTOR_NAMES))
    if unknown:
        raise UsageError(
            f"--factor-col {unknown[0]}=...: unknown factor; valid: {', '.join(FACTOR_NAMES)}"
        )
    align = _require(header, align_col, "--align-col", path) if align_col else None
    if align is None and known_align:
        align = _find(header, known_align)
    prompt = _require(header, prompt_col, "--prompt-col", path) if prompt_col else None
    if prompt is None and known_prompt:
        prompt = _find(header, known_prompt)
    return Layout(name, image, mos, factors, align, prompt)


def _number(text: str, path: Path, line: int, column: str, image: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        shown = repr(text.strip()) if text.strip() else "empty"
        raise InputError(
            f"{str(path)!r} line {line} (image {image!r}): column {column!r} is {shown}, "
            "not a finite number"
        )
    return value


def read_mos_table(
    path: str | Path,
    images: str | Path,
    *,
    image_col: str | None = None,
    mos_col: str | None = None,
    factor_cols: Mapping[str, str] | None = None,
    align_col: str | None = None,
    prompt_col: str | None = None,
) -> MosTable:
    """Read and check a MOS table.

    :param path: the CSV (or TSV) file.
    :param images: the folder the image column's names are relative to.
    :param image_col: the image column (default: the known layout's).
    :param mos_col: the overall MOS column (default: the known layout's).
    :param factor_cols: ``{factor: column}`` for technical / rational / natural (default: columns
        named ``technical``, ``mos_technical``, ... when present).
    :param align_col: the alignment MOS column (default: AGIQA-3K's ``mos_align`` when present).
    :param prompt_col: the prompt column (default: ``prompt`` when present).
    :raises InputError: an unreadable or empty file, a non-number in a MOS column (naming the
        line), duplicate image names, image names with no file (the first few and the count).
    :raises UsageError: no recognised layout, or a named column that does not exist.
    """
    path = Path(path).expanduser()
    folder = Path(images).expanduser()
    if not folder.is_dir():
        raise InputError(f"--images {str(folder)!r} is not a folder")
    header, rows = _read_rows(path)
    layout = detect_layout(
        header,
        path,
        image_col=image_col,
        mos_col=mos_col,
        factor_cols=factor_cols,
        align_col=align_col,
        prompt_col=prompt_col,
    )
    if not rows:
        raise InputError(f"--mos {str(path)!r} has a header but no data rows")
    index = {h: i for i, h in enumerate(header)}
    numeric = {"overall": layout.mos_col, **layout.factor_cols}
    if layout.align_col:
        numeric["align"] = layout.align_col
    names: list[str] = []
    lines: list[int] = []
    values: dict[str, list[float]] = {role: [] for role in numeric}
    prompts: list[str] = []
    seen: dict[str, int] = {}
    for line, cells in rows:
        cells = cells + [""] * (len(header) - len(cells))
        name = cells[index[layout.image_col]].strip()
        if not name:
            raise InputError(
                f"{str(path)!r} line {line}: column {layout.image_col!r} is empty; every row "
                "needs an image name"
            )
        if name in seen:
            raise InputError(
                f"{str(path)!r} line {line}: image {name!r} is listed again (first on line "
                f"{seen[name]}); each image must appear once"
            )
        seen[name] = line
        for role, column in numeric.items():
            values[role].append(_number(cells[index[column]], path, line, column, name))
        if layout.prompt_col:
            prompts.append(cells[index[layout.prompt_col]].strip())
        names.append(name)
        lines.append(line)
    files = [folder / n for n in names]
    missing = [n for n, f in zip(names, files, strict=True) if not f.is_file()]
    if missing:
        shown = ", ".join(missing[:LIST_FIRST]) + (", ..." if len(missing) > LIST_FIRST else "")
        raise InputError(
            f"{str(path)!r}: {len(missing)} of {len(names)} images named in column "
            f"{layout.image_col!r} are not files in {str(folder)!r}: {shown}"
        )
    return MosTable(
        path=path,
        images=folder,
        layout=layout,
        names=names,
        files=files,
        lines=lines,
        mos={role: np.asarray(v, np.float64) for role, v in values.items()},
        prompts=prompts if layout.prompt_col else None,
        sha256=_sha256(path),
    )


def normalise_mos(
    values: np.ndarray, column: str, mos_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """MOS scaled to [0, 1]: ``(v - lo) / (hi - lo)``, clipped, with ``(lo, hi)`` the given range
    or the column's own minimum and maximum.

    :returns: ``(float32 targets, (lo, hi))``.
    :raises InputError: a constant column (nothing to learn) or an empty range.
    """
    lo, hi = mos_range if mos_range is not None else (float(values.min()), float(values.max()))
    if not hi > lo:
        if mos_range is not None:
            raise UsageError(f"--mos-range {lo:g} {hi:g}: the upper end must exceed the lower")
        raise InputError(
            f"MOS column {column!r} is constant ({lo:g} on every row): there is nothing to learn"
        )
    scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    return scaled.astype(np.float32), (float(lo), float(hi))


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/validation split of ``n`` rows: ``round(n * val_fraction)`` rows for
    validation, the rest for training (each sorted).

    :raises UsageError: a fraction outside (0, 1) or a split with an empty side.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"--val-fraction {val_fraction:g}: must be between 0 and 1 (exclusive)")
    n_val = int(round(n * val_fraction))
    if n_val == 0 or n_val == n:
        side = "validation" if n_val == 0 else "training"
        raise UsageError(
            f"the {side} split is empty: {n} rows with --val-fraction {val_fraction:g} give "
            f"{n_val} validation and {n - n_val} training images; use more rows or another "
            "--val-fraction"
        )
    order = np.random.default_rng(int(seed)).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
