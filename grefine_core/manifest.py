"""Batch manifests: CSV or JSONL files of ``image,prompt`` pairs.

Image paths are relative to the manifest's folder (absolute paths are kept as they are).
CSV needs a header with the columns ``image`` and ``prompt``; JSONL needs one object per line with
the keys ``image`` and ``prompt``. Blank lines are skipped.
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


def read_manifest(path: str | Path) -> list[BatchItem]:
    """Read a ``.csv`` or ``.jsonl`` manifest into :class:`BatchItem` s (names made unique)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"prompt file {str(p)!r} does not exist or is not a file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(p)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(p)
    else:
        raise InputError(
            f"prompt file {str(p)!r} must be .csv or .jsonl, got {suffix or 'no suffix'!r}"
        )
    if not rows:
        raise InputError(f"prompt file {str(p)!r} lists no items")
    base = p.parent
    pairs = [
        ((Path(img) if Path(img).is_absolute() else base / img), prompt) for img, prompt in rows
    ]
    return unique_items(pairs)


def unique_items(pairs: list[tuple[Any, str]]) -> list[BatchItem]:
    """Items named by file stem (in-memory images: ``image``); a repeated name gets ``-2``,
    ``-3``... so outputs never collide."""
    seen: dict[str, int] = {}
    items = []
    for image, prompt in pairs:
        is_path = isinstance(image, str | os.PathLike)
        stem = (Path(image).stem if is_path else "image") or "image"
        image = Path(image) if is_path else image
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        items.append(BatchItem(image, prompt, stem if count == 1 else f"{stem}-{count}"))
    return items


def _read_csv(p: Path) -> list[tuple[str, str]]:
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            missing = [c for c in ("image", "prompt") if c not in fields]
            if missing:
                raise InputError(
                    f"prompt file {str(p)!r}: the CSV header must have the columns image and prompt; "
                    f"missing {missing}, found {fields}"
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                image = (row.get("image") or "").strip()
                if not image:
                    raise InputError(f"prompt file {str(p)!r} line {line}: empty image path")
                rows.append((image, row.get("prompt") or ""))
            return rows
    except UnicodeDecodeError as e:
        raise InputError(f"prompt file {str(p)!r} is not UTF-8 text: {e}") from None


def _read_jsonl(p: Path) -> list[tuple[str, str]]:
    rows = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"prompt file {str(p)!r} is not UTF-8 text: {e}") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(
                f"prompt file {str(p)!r} line {line_no}: invalid JSON ({e.msg})"
            ) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str):
            raise InputError(
                f"prompt file {str(p)!r} line {line_no}: expected an object with string keys "
                f"'image' and 'prompt', got {line.strip()[:80]!r}"
            )
        rows.append((obj["image"], str(obj.get("prompt", ""))))
    return rows
