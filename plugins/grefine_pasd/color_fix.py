"""Colour correction of a restored image against its source (PASD.md section 2.8).

* Wavelet fix: high frequencies of the output + low frequencies of the source. The decomposition
  has 5 levels; level ``i`` blurs with the 3x3 binomial kernel ``[1,2,1]^T [1,2,1] / 16`` at
  dilation ``2**i`` with replicate padding; ``high = sum(img - blur)`` over the levels.
* AdaIN fix: per-channel mean/std transfer (unbiased variance, eps 1e-5).

Both take float tensors ``(B, 3, H, W)`` in [0, 1]; the ``*_pil`` helpers do the PIL round trip
the reference does (clamp to [0, 1], ``x * 255`` truncated to uint8).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

WAVELET_LEVELS = 5


def _blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    """Depthwise 3x3 binomial blur at ``dilation`` with replicate padding."""
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device)
    kernel = (k1[:, None] * k1[None, :]) / 16.0
    channels = image.shape[1]
    kernel = kernel.expand(channels, 1, 3, 3)
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=dilation)


def wavelet_decomposition(
    image: torch.Tensor, levels: int = WAVELET_LEVELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``image`` into (high, low) frequency parts with ``image == high + low``.

    :param image: ``(B, C, H, W)`` float tensor.
    :param levels: number of dilated blur levels.
    :returns: ``(high, low)``.
    """
    high = torch.zeros_like(image)
    low = image
    for i in range(levels):
        blurred = _blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_reconstruction(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """High frequencies of ``content`` + low frequencies of ``style`` (not clamped).

    :param content: the restored image ``(B, C, H, W)``.
    :param style: the colour source of the same shape.
    """
    if content.shape != style.shape:
        raise ValueError(
            f"wavelet colour fix: content {tuple(content.shape)} and source "
            f"{tuple(style.shape)} must have the same shape"
        )
    high, _ = wavelet_decomposition(content)
    _, low = wavelet_decomposition(style)
    return high + low


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give ``content`` the per-channel mean and std of ``style`` (unbiased variance).

    :param content: ``(B, C, H, W)``.
    :param style: ``(B, C, H', W')``.
    :param eps: added to the variances.
    """
    b, c = content.shape[:2]
    c_flat = content.reshape(b, c, -1)
    s_flat = style.reshape(b, c, -1)
    c_mean = c_flat.mean(dim=2).view(b, c, 1, 1)
    s_mean = s_flat.mean(dim=2).view(b, c, 1, 1)
    c_std = (c_flat.var(dim=2) + eps).sqrt().view(b, c, 1, 1)
    s_std = (s_flat.var(dim=2) + eps).sqrt().view(b, c, 1, 1)
    return (content - c_mean) / c_std * s_std + s_mean


def _to_tensor(image: Any) -> torch.Tensor:
    import numpy as np

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def _to_pil(tensor: torch.Tensor) -> Any:
    from PIL import Image

    arr = tensor.clamp(0.0, 1.0).mul(255).byte()[0].permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def color_fix_pil(image: Any, source: Any, method: str) -> Any:
    """Colour-correct a PIL image against ``source`` (resized to ``image``'s size if needed).

    :param image: the restored image (PIL).
    :param source: the colour reference (PIL), e.g. the stage-2 input.
    :param method: ``"wavelet"``, ``"adain"`` or ``"none"``.
    :returns: a PIL RGB image of ``image``'s size.
    """
    if method == "none":
        return image.convert("RGB")
    if source.size != image.size:
        from PIL import Image

        source = source.convert("RGB").resize(image.size, Image.Resampling.BICUBIC)
    content, style = _to_tensor(image), _to_tensor(source)
    if method == "wavelet":
        return _to_pil(wavelet_reconstruction(content, style))
    if method == "adain":
        return _to_pil(adain(content, style))
    raise ValueError(f"color_fix: unknown method {method!r}; valid: 'wavelet', 'adain', 'none'")
