"""Image sets for evaluation: a CSV or JSONL manifest of image,prompt, or a folder of images.

* CSV: a header with (at least) the columns ``image`` and ``prompt``; other columns are ignored.
* JSONL: one JSON object per non-blank line with the key ``image`` and optionally ``prompt``.
* A folder: every image file directly inside it (``.png .jpg .jpeg .webp .bmp .tif .tiff``,
  sorted by name); the prompt of ``cat.png`` is the text of ``cat.txt`` beside it (stripped), or
  the empty string when there is no such file.

Relative image paths are resolved against the manifest's folder. Every item gets a ``key``: its
path relative to that folder (POSIX, absolute paths stay absolute), used as the ``image`` column
of the results and to name per-image files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from grefine_core.app.manifest import read_rows, resolve_image_path
from grefine_core.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ManifestItem:
    """One image to evaluate.

    :ivar image: absolute path of the image file.
    :ivar prompt: its prompt (may be empty).
    :ivar key: unique name of the item (path relative to the manifest folder).
    """

    image: Path
    prompt: str
    key: str

    @property
    def slug(self) -> str:
        """A file-name-safe version of ``key`` (extension dropped, folders joined with ``__``)."""
        stem = self.key.rsplit(".", 1)[0] if "." in Path(self.key).name else self.key
        return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.strip("/").replace("/", "__")) or "image"


def _key(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _resolve(raw: str, base: Path, where: str) -> Path:
    path = resolve_image_path(raw, base)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"{where}: image {raw.strip()!r} {what} (looked for {path})")
    return path


def _read_folder(folder: Path) -> list[ManifestItem]:
    images = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not images:
        raise InputError(
            f"folder {str(folder)!r} contains no images (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    items = []
    for img in images:
        sidecar = img.with_suffix(".txt")
        try:
            prompt = sidecar.read_text("utf-8").strip() if sidecar.is_file() else ""
        except UnicodeDecodeError:
            raise InputError(f"prompt file {str(sidecar)!r} is not valid UTF-8 text") from None
        items.append(ManifestItem(img.resolve(), prompt, _key(img, folder)))
    return items


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestItem]:
    """Read an image set: a CSV/JSONL manifest or a folder of images (see the module docstring).

    :param path: a ``.csv``, ``.jsonl``/``.ndjson`` file, or a folder.
    :returns: the items in manifest order.
    :raises InputError: missing file, unknown format, bad header or line (named as ``file:line``),
        missing image, duplicate image, or an empty set.
    """
    p = Path(path)
    if p.is_dir():
        return _read_folder(p)
    if not p.exists():
        raise InputError(f"image set {str(p)!r} does not exist (give a folder, a .csv or a .jsonl)")
    rows = read_rows(p, allow_empty_prompts=True)  # eval: a prompt is optional per image
    base = p.parent
    items: list[ManifestItem] = []
    seen: dict[str, str] = {}
    for raw, prompt, where in ((r.image, r.prompt, r.where) for r in rows):
        image = _resolve(raw, base, where)
        key = _key(image, base)
        if key in seen:
            raise InputError(f"{where}: image {raw!r} is listed twice (first at {seen[key]})")
        seen[key] = where
        items.append(ManifestItem(image.resolve(), prompt, key))
    if not items:
        raise InputError(f"manifest {str(p)!r} lists no images")
    return items
