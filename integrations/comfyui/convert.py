"""ComfyUI tensors <-> what grefine takes and gives.

ComfyUI's ``IMAGE`` is a float tensor ``[B, H, W, C]`` in [0, 1] (C = 3; 1 and 4 accepted here),
its ``MASK`` a float tensor ``[B, H, W]`` in [0, 1], 1 = repaint. grefine takes PIL RGB images and
gives numpy ``(H, W)`` maps. torch is imported inside the functions (ComfyUI always has it; grefine
keeps heavy imports out of module import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

#: The smallest side an input may have (as ``grefine serve`` requires).
MIN_SIDE = 16


def tensor_to_pil(image: Any) -> Image.Image:
    """One ComfyUI image ``[H, W, C]`` (float in [0, 1], C = 1, 3 or 4) as a PIL RGB image.

    Values are clipped to [0, 1] and rounded to 8 bits; a grey image is repeated to RGB, an alpha
    channel dropped (ComfyUI's ``LoadImage`` gives the alpha as its ``MASK`` output).
    """
    import torch

    arr = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0).mul(255.0).round()
    arr = arr.to(torch.uint8).numpy()
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB")


def pil_to_tensor(image: Image.Image) -> Any:
    """A PIL image as one ComfyUI image ``[H, W, 3]`` float32 in [0, 1] (8-bit values / 255, so
    :func:`tensor_to_pil` gives the same pixels back)."""
    import torch

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr))


def images_to_pils(image: Any, node: str, name: str = "image") -> list[Image.Image]:
    """A ComfyUI ``IMAGE`` batch as PIL RGB images, one per batch entry.

    :param node: the node's display name, for the error message; :param name: the input's name.
    :raises ValueError: not a tensor, not rank 4 ``[B, H, W, C]``, an empty batch, a channel count
        other than 1, 3 or 4, a side under :data:`MIN_SIDE` pixels, or values that are not finite
        (one line naming the node and the input).
    """
    import torch

    where = f"{node}: input '{name}'"
    if not isinstance(image, torch.Tensor):
        raise ValueError(
            f"{where} must be an IMAGE (a torch tensor [B, H, W, C]), got {type(image).__name__}"
        )
    if image.dim() != 4:
        raise ValueError(
            f"{where} must be an IMAGE tensor of rank 4 [B, H, W, C], got rank {image.dim()} "
            f"(shape {tuple(image.shape)})"
        )
    b, h, w, c = (int(x) for x in image.shape)
    if b == 0:
        raise ValueError(f"{where} is an empty batch (shape {tuple(image.shape)})")
    if c not in (1, 3, 4):
        raise ValueError(
            f"{where} must have 1, 3 or 4 channels last [B, H, W, C], got shape {(b, h, w, c)}"
        )
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{where} is {w}x{h} px; G-Refine needs at least {MIN_SIDE}x{MIN_SIDE} px")
    if image.is_floating_point() and not bool(torch.isfinite(image).all()):
        raise ValueError(f"{where} holds NaN or infinite values")
    return [tensor_to_pil(image[i]) for i in range(b)]


def pils_to_images(images: Sequence[Image.Image], size: tuple[int, int] | None = None) -> Any:
    """PIL images as one ComfyUI ``IMAGE`` batch ``[B, H, W, 3]``; each resized (Lanczos) to
    ``size`` = ``(H, W)`` first when it differs."""
    import torch

    out = []
    for im in images:
        if size is not None and (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), Image.Resampling.LANCZOS)
        out.append(pil_to_tensor(im))
    return torch.stack(out, dim=0)


def fit_map(arr: np.ndarray, size: tuple[int, int], binary: bool = False) -> np.ndarray:
    """A float ``(H, W)`` map at ``size`` = ``(H, W)``: unchanged when it already is; otherwise
    resized bilinearly (``binary``: thresholded at 0.5 after resizing). Clipped to [0, 1]."""
    arr = np.asarray(arr, dtype=np.float32)
    if arr.shape != tuple(size):
        resized = Image.fromarray(arr, "F").resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(resized, dtype=np.float32)
        if binary:
            arr = (arr >= 0.5).astype(np.float32)
    return np.clip(arr, 0.0, 1.0)


def maps_to_masks(
    maps: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], binary: bool = False
) -> Any:
    """Float ``(H, W)`` maps as one ComfyUI ``MASK`` batch ``[B, H, W]`` float32, each at its
    input's ``(H, W)`` (:func:`fit_map`)."""
    import torch

    fitted = [fit_map(m, s, binary) for m, s in zip(maps, sizes, strict=True)]
    return torch.from_numpy(np.ascontiguousarray(np.stack(fitted, axis=0)))
