"""Pictures of maps: heat-map colouring, overlays on the image, and a side-by-side overview."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Anchor colours of a perceptually ordered map (dark blue -> teal -> yellow), like viridis.
_ANCHORS = np.array(
    [
        [68, 1, 84],
        [59, 82, 139],
        [33, 145, 140],
        [94, 201, 98],
        [253, 231, 37],
    ],
    dtype=np.float64,
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (NaN -> 0) to uint8 RGB, shape ``values.shape + (3,)``."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0).clip(0.0, 1.0)
    pos = v * (len(_ANCHORS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def heatmap_image(values: np.ndarray) -> Image.Image:
    """The map alone as an RGB picture."""
    return Image.fromarray(colormap(values), "RGB")


def overlay(image: Image.Image, values: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend the coloured map over the image (both of the image's size)."""
    heat = heatmap_image(values)
    if heat.size != image.size:
        heat = heat.resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image.convert("RGB"), heat, alpha)


def overview(panels: list[tuple[str, Image.Image]], height: int = 256) -> Image.Image:
    """Panels side by side, each scaled to ``height`` with its title above it."""
    title_h = 16
    scaled = []
    for title, img in panels:
        w, h = img.size
        new_w = max(1, round(w * height / max(h, 1)))
        scaled.append(
            (title, img.convert("RGB").resize((new_w, height), Image.Resampling.BILINEAR))
        )
    total_w = sum(i.size[0] for _, i in scaled) + 4 * (len(scaled) + 1)
    canvas = Image.new("RGB", (total_w, height + title_h + 8), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 4
    for title, img in scaled:
        draw.text((x, 2), title, fill=(0, 0, 0))
        canvas.paste(img, (x, title_h + 4))
        x += img.size[0] + 4
    return canvas
