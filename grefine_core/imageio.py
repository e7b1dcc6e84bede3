"""Loading input images safely: clear errors, any mode converted to RGB, huge images downscaled."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from grefine_core.config import ImageSettings
from grefine_core.errors import InputError

log = logging.getLogger(__name__)

#: Largest text chunk read from an input (a larger one is ignored: not a prompt).
MAX_CHUNK = 1 << 20


def text_chunks(image: Any) -> dict[str, str]:
    """The string entries of a PIL image's text chunks / info (PNG tEXt/iTXt/zTXt)."""
    raw = getattr(image, "text", None)
    if not isinstance(raw, Mapping):
        raw = getattr(image, "info", {}) or {}
    return {
        str(k): v for k, v in raw.items() if isinstance(v, str) and len(v) <= MAX_CHUNK and k != ""
    }


@dataclass
class ImageInfo:
    """Where an input came from and what loading did to it."""

    source: str
    original_size: tuple[int, int]  # (W, H)
    original_mode: str
    size: tuple[int, int]  # (W, H) after loading
    downscaled: bool = False
    #: EXIF orientation tag of the file (1 = as stored); anything else was applied on loading.
    exif_orientation: int = 1
    #: the input's text chunks (PNG tEXt/iTXt: A1111 ``parameters``, ComfyUI ``prompt``...).
    text: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        data["text_chunks"] = sorted(data.pop("text"))  # the names; the values stay in the image
        return data


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: alpha over white, 16-bit and float scaled, palettes expanded."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        arr8 = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def fit_within(image: Image.Image, max_side: int) -> tuple[Image.Image, bool]:
    """Downscale so the longest side is at most ``max_side`` (aspect kept)."""
    w, h = image.size
    if max(w, h) <= max_side:
        return image, False
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), True


def load_image(
    source: str | os.PathLike[str] | Image.Image, settings: ImageSettings | None = None
) -> tuple[Image.Image, ImageInfo]:
    """Load an image from a path (or take a PIL image) as RGB within the configured limits.

    :raises InputError: missing path, a directory, an empty or corrupt file, or an image with more
        pixels than ``settings.max_pixels_hard`` (refused before decoding).
    """
    settings = settings or ImageSettings()
    if isinstance(source, Image.Image):
        original = source
        label = "<in-memory image>"
        (w, h), mode = original.size, original.mode
    else:
        path = Path(source)
        label = str(path)
        if path.is_dir():
            raise InputError(f"image {label!r} is a directory, not an image file")
        if not path.exists():
            raise InputError(f"image {label!r} does not exist")
        if path.stat().st_size == 0:
            raise InputError(f"image {label!r} is empty (0 bytes)")
        original, (w, h), mode = _open_checked(path, settings)
    if w * h > settings.max_pixels_hard:
        raise InputError(
            f"image {label!r} is {w}x{h} ({w * h:,} pixels), more than the limit of "
            f"{settings.max_pixels_hard:,} (image.max_pixels_hard); downscale it first"
        )
    chunks = text_chunks(original)
    orientation = exif_orientation(original)
    try:
        if orientation != 1:  # what viewers show: the pixels turned upright
            from PIL import ImageOps

            original = ImageOps.exif_transpose(original)
            log.info("image %s: EXIF orientation %d applied", label, orientation)
        rgb = to_rgb(original)
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"image {label!r} could not be decoded: {e}") from None
    rgb, _ = fit_within(rgb, settings.max_side)
    upright = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    if rgb.size != upright:  # a JPEG may already be decoded at a reduced scale
        shown = (label, w, h, *rgb.size, settings.max_side)
        log.warning("image %s is %dx%d; downscaled to %dx%d (image.max_side = %d)", *shown)
    if orientation in (5, 6, 7, 8):  # a quarter turn: the upright size is the stored one swapped
        w, h = h, w
    downscaled = rgb.size != (w, h)
    return rgb, ImageInfo(label, (w, h), mode, rgb.size, downscaled, orientation, chunks)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1-8) of an opened image; 1 when absent or unreadable."""
    try:
        value = int(image.getexif().get(0x0112, 1))
    except (AttributeError, OSError, SyntaxError, ValueError, TypeError):
        return 1
    return value if 1 <= value <= 8 else 1


def _open_checked(path: Path, settings: ImageSettings) -> tuple[Image.Image, tuple[int, int], str]:
    """The decoded image, and its size and mode as stored in the file (before any JPEG draft)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = settings.max_pixels_hard  # our own limit replaces PIL's bomb check
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            size, mode = image.size, image.mode
            if size[0] * size[1] > settings.max_pixels_hard:
                return image, size, mode  # refused by the caller, never decoded
            if image.format == "JPEG" and max(size) > settings.max_side:
                # decode at a reduced DCT scale (must precede load()); fit_within finishes the job
                image.draft("RGB", (settings.max_side, settings.max_side))
            image.load()
            return image, size, mode
    except PermissionError:
        raise InputError(f"image {str(path)!r} cannot be read: permission denied") from None
    except Image.DecompressionBombError:
        raise InputError(
            f"image {str(path)!r} has more pixels than the limit of {settings.max_pixels_hard:,} "
            "(image.max_pixels_hard); downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise InputError(
            f"image {str(path)!r} is not a readable image (unknown or corrupt format)"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"image {str(path)!r} is corrupt or truncated: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
