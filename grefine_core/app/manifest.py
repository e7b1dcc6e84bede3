"""Batch manifests: CSV or JSONL files of ``image,prompt`` pairs.

Image paths are relative to the manifest's folder (absolute paths are kept as they are).
CSV needs a header with the columns ``image`` and ``prompt`` (other columns are ignored); JSONL
needs one object per line with the key ``image`` and optionally ``prompt``. Blank lines are
skipped. Errors name the file and line as ``file:line``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grefine_core.errors import InputError


@dataclass(frozen=True)
class BatchItem:
    """One image and its prompt; ``name`` is the output stem."""

    image: Any  # a path, or an in-memory PIL image
    prompt: str
    name: str


@dataclass(frozen=True)
class ManifestRow:
    """One raw line of a manifest: the image path as written, the prompt, and ``file:line``."""

    image: str
    prompt: str
    where: str


def read_rows(path: str | os.PathLike[str], allow_empty_prompts: bool = False) -> list[ManifestRow]:
    """Parse a ``.csv`` or ``.jsonl``/``.ndjson`` manifest into rows (paths not resolved).

    :param allow_empty_prompts: accept rows without a prompt (filled in later from the images'
        metadata); otherwise such a row is an error naming ``file:line``, like ``--prompt ""``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"manifest {str(p)!r} does not exist or is not a file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            rows = _read_csv(p)
        elif suffix in (".jsonl", ".ndjson"):
            rows = _read_jsonl(p)
        else:
            rows = None
    except UnicodeDecodeError as e:
        raise InputError(f"manifest {str(p)!r} is not UTF-8 text: {e}") from None
    if rows is not None:
        for row in rows:
            if not allow_empty_prompts and not row.prompt.strip():
                raise InputError(
                    f"{row.where}: the prompt is empty; give the prompt the image was generated "
                    "from (or use --prompt-from-metadata)"
                )
        return rows
    raise InputError(
        f"manifest {str(p)!r}: unknown format {suffix or '(no extension)'!r}; use .csv or .jsonl"
    )


def read_manifest(
    path: str | os.PathLike[str], allow_empty_prompts: bool = False
) -> list[BatchItem]:
    """Read a manifest into :class:`BatchItem` s with unique names, paths resolved against its folder.

    Missing images are not checked here: a batch reports each failing item and goes on.
    """
    p = Path(path)
    rows = read_rows(p, allow_empty_prompts)
    if not rows:
        raise InputError(f"manifest {str(p)!r} lists no items")
    return unique_items([(resolve_image_path(r.image, p.parent), r.prompt) for r in rows])


def resolve_image_path(raw: str, base: Path) -> Path:
    """``raw`` (``~`` expanded) relative to ``base`` unless it is absolute."""
    image = Path(os.path.expanduser(raw.strip()))
    return image if image.is_absolute() else base / image


def unique_items(pairs: list[tuple[Any, str]]) -> list[BatchItem]:
    """Items named by file stem (in-memory images: ``image``); a repeated name gets ``-2``,
    ``-3``... so outputs never collide (also with a file whose own stem is ``cat-2``)."""
    stems = [
        (Path(image).stem if isinstance(image, str | os.PathLike) else "image") or "image"
        for image, _ in pairs
    ]
    own = set(stems)
    used: set[str] = set()
    counts: dict[str, int] = {}
    items = []
    for (image, prompt), stem in zip(pairs, stems):
        image = Path(image) if isinstance(image, str | os.PathLike) else image
        name = stem
        if name in used:
            count = counts.get(stem, 1)
            while name in used or name in own:  # never take a later item's own stem
                count += 1
                name = f"{stem}-{count}"
            counts[stem] = count
        used.add(name)
        items.append(BatchItem(image, prompt, name))
    return items


def _read_csv(p: Path) -> list[ManifestRow]:
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        cols = {c.strip().lower(): c for c in header if c}
        if "image" not in cols or "prompt" not in cols:
            raise InputError(
                f"{p}:1: the CSV header must name the columns 'image' and 'prompt'; "
                f"got {', '.join(header) or '(empty file)'}"
            )
        rows = []
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise InputError(
                    f"{p}:{reader.line_num + 1}: not valid CSV ({e}; the longest field allowed is "
                    f"{csv.field_size_limit():,} characters)"
                ) from None
            where = f"{p}:{reader.line_num}"
            image = row.get(cols["image"])
            if image is None:
                raise InputError(f"{where}: the row has fewer columns than the header")
            if not image.strip():
                raise InputError(f"{where}: the image path is empty")
            rows.append(ManifestRow(image, row.get(cols["prompt"]) or "", where))
        return rows


def _read_jsonl(p: Path) -> list[ManifestRow]:
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(
                f"{where}: expected a JSON object with 'image' and 'prompt', got {type(obj).__name__}"
            )
        image, prompt = obj.get("image"), obj.get("prompt", "")
        if not isinstance(image, str) or not image.strip():
            raise InputError(
                f"{where}: the key 'image' must be a string path (non-empty), got {image!r}"
            )
        if prompt is None:
            prompt = ""
        if not isinstance(prompt, str):
            raise InputError(f"{where}: the key 'prompt' must be a string, got {prompt!r}")
        rows.append(ManifestRow(image, prompt, where))
    return rows
