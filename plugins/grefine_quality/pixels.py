"""Image preparation for CLIP (docs/indicators.md): bicubic resize straight to the model size, then
RGB, then the CLIP mean and std. Shared by the backbones (torch and ONNX) so they see the same
pixels.

Works for every PIL mode: 8-bit modes follow the reference order exactly (resize, then convert to
RGB, then /255), high-bit-depth modes (``I;16``, ``I``, ``F``) are rescaled to [0, 1] in float
before the resize so 16-bit images are not clipped to white. Numpy / PIL only at import time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from grefine_core.errors import InputError

#: OpenAI CLIP pixel mean / std (docs/indicators.md).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# Modes whose resize-then-convert order reproduces the reference preprocessing.
_RESIZE_FIRST = {"RGB", "RGBA", "L", "LA", "RGBX", "RGBa", "La"}
_HIGH_DEPTH_PREFIXES = ("I;16", "I", "F")


def as_pil(image: Any) -> Image.Image:
    """Accept a PIL image or an ``(H, W)`` / ``(H, W, C)`` numpy array and return a PIL image.

    :param image: PIL image, or a uint8/uint16/float array.
    :returns: a PIL image.
    :raises InputError: for anything else.
    """
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4)):
            if arr.dtype == np.uint8:
                return Image.fromarray(arr)
            if arr.dtype == np.uint16 and arr.ndim == 2:
                return Image.fromarray(arr)
            if np.issubdtype(arr.dtype, np.floating):
                scaled = np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0
                return Image.fromarray(np.round(scaled).astype(np.uint8))
        raise InputError(
            f"image array of shape {arr.shape} and dtype {arr.dtype} is not supported; use "
            "(H, W) or (H, W, 3|4) uint8, (H, W) uint16, or float in [0, 1]"
        )
    raise InputError(f"expected a PIL image or a numpy array, got {type(image).__name__}")


def _high_depth_to_unit_float(image: Image.Image) -> np.ndarray:
    """``I;16*``, ``I`` and ``F`` images as float32 ``(H, W)`` in [0, 1]."""
    arr = np.asarray(image).astype(np.float32)
    mode = image.mode
    if mode.startswith("I;16"):
        arr = arr / 65535.0
    elif mode == "I":
        # 32-bit integer mode: PIL opens 16-bit PNGs as "I"; 8-bit data stays in 0..255.
        arr = arr / (65535.0 if arr.size and float(arr.max()) > 255.0 else 255.0)
    else:  # "F": [0, 1] data is kept, anything larger is taken as 0..255
        if arr.size and float(np.nanmax(arr)) > 1.0:
            arr = arr / 255.0
    return np.clip(np.nan_to_num(arr), 0.0, 1.0).astype(np.float32)


def resize_to_rgb(image: Any, size: int) -> np.ndarray:
    """Resize ``image`` to ``size x size`` (bicubic, aspect not kept) and return RGB.

    :param image: PIL image (any mode) or numpy array.
    :param size: the model's input side in pixels.
    :returns: ``uint8 (size, size, 3)`` for 8-bit inputs (bit-exact with the reference
        preprocessing), or ``float32 (size, size, 3)`` in [0, 255] for high-bit-depth inputs.
    """
    pil = as_pil(image)
    if pil.width < 1 or pil.height < 1:
        raise InputError(f"image has an empty size {pil.size}")
    mode = pil.mode
    if mode in _RESIZE_FIRST:
        return np.array(pil.resize((size, size), Image.BICUBIC).convert("RGB"))
    if mode.startswith(_HIGH_DEPTH_PREFIXES):
        unit = Image.fromarray(_high_depth_to_unit_float(pil), mode="F")
        resized = np.asarray(unit.resize((size, size), Image.BICUBIC), dtype=np.float32)
        resized = np.clip(resized, 0.0, 1.0) * 255.0
        return np.repeat(resized[:, :, None], 3, axis=2)
    if mode == "P":
        pil = pil.convert("RGBA" if "transparency" in pil.info else "RGB")
    elif mode == "1":
        pil = pil.convert("L")
    else:  # CMYK, YCbCr, LAB, HSV, ...: resample in RGB
        pil = pil.convert("RGB")
    return np.array(pil.resize((size, size), Image.BICUBIC).convert("RGB"))


def clip_pixels(image: Any, size: int) -> Any:
    """The CLIP input of ``image``: bicubic resize straight to ``size``, RGB, /255, CLIP mean/std
    -> float32 torch tensor ``[1, 3, size, size]`` on the CPU (torch imported here).

    :param image: PIL image of any mode (grayscale, RGBA, 16-bit...) or numpy array.
    """
    import torch

    rgb = resize_to_rgb(image, int(size))
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    x = x.float().div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(mean).div_(std).unsqueeze(0)
