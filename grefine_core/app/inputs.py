"""Turning what the user named (files, folders, manifests) into batch items with their prompts.

A folder stands for the images in it (not recursive, sorted by name). Prompts come from
``--prompt``, a manifest, a ``<stem>.txt`` sidecar beside the image, or the image's own metadata
(A1111 ``parameters``, ComfyUI ``prompt``; :mod:`grefine_core.app.metadata`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from grefine_core.app.manifest import BatchItem, unique_items
from grefine_core.errors import InputError

#: File suffixes taken from a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def check_image_path(raw: str | os.PathLike[str]) -> Path:
    """The path of an input image, or a one-line error that says what is wrong with it.

    :raises InputError: a folder, a missing file, a dangling or looping symbolic link.
    """
    path = Path(raw)
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"image {str(raw)!r} is a symbolic link that loops") from None
        if path.is_symlink():
            target = os.readlink(path)
            raise InputError(
                f"image {str(raw)!r} is a symbolic link to {target!r}, which does not exist"
            ) from None
        if e.errno == errno.EACCES:
            raise InputError(f"image {str(raw)!r} cannot be read: permission denied") from None
        raise InputError(f"image {str(raw)!r} does not exist") from None
    if path.is_dir():
        raise InputError(f"image {str(raw)!r} is a directory, not an image file")
    return path


def folder_images(folder: Path) -> list[Path]:
    """The images in ``folder`` (by suffix, sorted by name; hidden files skipped)."""
    found = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    if not found:
        raise InputError(f"folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def expand_inputs(names: Sequence[str], prompt: str) -> list[BatchItem]:
    """Items for the named files and folders, each with ``prompt`` (filled in later when empty)."""
    paths: list[Path] = []
    for name in names:
        path = Path(name)
        paths.extend(folder_images(path) if path.is_dir() else [check_image_path(path)])
    return unique_items([(p, prompt) for p in paths])


def sidecar_prompt(image: Path) -> str | None:
    """The prompt in ``<stem>.txt`` beside ``image``, if there is one."""
    side = image.with_suffix(".txt")
    if not side.is_file():
        return None
    try:
        text = side.read_text(encoding="utf-8-sig").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"prompt sidecar {str(side)!r} is unreadable: {e}") from None
    return text or None


def metadata_prompt(image: Path) -> tuple[str, str] | None:
    """``(prompt, source)`` from the image's A1111 / ComfyUI text chunks, if any."""
    from PIL import Image

    from grefine_core.app.metadata import prompt_from_metadata
    from grefine_core.imageio import text_chunks

    try:
        with Image.open(image) as im:
            return prompt_from_metadata(text_chunks(im))
    except OSError:
        return None  # the run reports an unreadable image properly


def fill_prompts(items: list[BatchItem], *, from_metadata: bool, sidecars: bool) -> list[BatchItem]:
    """Items whose empty prompt is filled from a sidecar (when ``sidecars``) or the image's
    metadata (when ``from_metadata``).

    :raises InputError: an item still without a prompt (naming the image and where we looked).
    """
    out = []
    for item in items:
        prompt = item.prompt
        if not prompt.strip() and isinstance(item.image, Path):
            if sidecars:
                prompt = sidecar_prompt(item.image) or ""
            if not prompt and from_metadata:
                found = metadata_prompt(item.image)
                prompt = found[0] if found else ""
        if not prompt.strip():
            looked = [
                *([f"{Path(item.image).with_suffix('.txt').name}"] if sidecars else []),
                *(["its A1111 'parameters' / ComfyUI 'prompt' metadata"] if from_metadata else []),
            ]
            where = f" (looked for {' and '.join(looked)})" if looked else ""
            raise InputError(f"image {str(item.image)!r} has no prompt{where}; give --prompt")
        out.append(BatchItem(item.image, prompt, item.name))
    return out
