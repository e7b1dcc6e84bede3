"""Pictures of maps: heat-map colouring, overlays on the image, and a side-by-side overview whose
map panels carry a colour bar saying in words what the colours mean.

One rule for every picture: the bright yellow end of the colour map means **needs fixing**. A
defect map is coloured as it is (high = defect); a quality map such as ``P`` (high = good) is
coloured by ``1 - P`` (:func:`quality_colours`). Drawn with PIL alone (its default font).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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

#: The least height of the panels of an overview (smaller images are upscaled to it).
MIN_HEIGHT = 192
#: Height of a colour bar strip, and the gaps and padding around the parts of a panel.
BAR_HEIGHT = 10
GAP = 4
#: The least width of a panel with a colour bar (room for its two end labels).
MIN_BAR_WIDTH = 150

Colours = Callable[[np.ndarray], np.ndarray]


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (NaN -> 0) to uint8 RGB, shape ``values.shape + (3,)``."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0).clip(0.0, 1.0)
    pos = v * (len(_ANCHORS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def defect_colours(values: np.ndarray) -> np.ndarray:
    """Colours of a map where high = needs fixing (``A_defect``): yellow = high."""
    return colormap(values)


def quality_colours(values: np.ndarray) -> np.ndarray:
    """Colours of a map where high = good (``P``): coloured by ``1 - value``, so that yellow
    means needs fixing here too. NaN counts as good (like NaN = 0 in a defect map)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=1.0)
    return colormap(1.0 - v)


def grey_colours(values: np.ndarray) -> np.ndarray:
    """Black (0) to white (1), for masks."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0).clip(0.0, 1.0)
    return np.repeat((v * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def heatmap_image(values: np.ndarray, colours: Colours = colormap) -> Image.Image:
    """The map alone as an RGB picture (``colours``: values -> uint8 RGB)."""
    return Image.fromarray(colours(values), "RGB")


def overlay(
    image: Image.Image, values: np.ndarray, alpha: float = 0.5, colours: Colours = colormap
) -> Image.Image:
    """Blend the coloured map over the image (both of the image's size)."""
    heat = heatmap_image(values, colours)
    if heat.size != image.size:
        heat = heat.resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image.convert("RGB"), heat, alpha)


# --------------------------------------------------------------------------- the overview


@dataclass
class ColourBar:
    """What the colours of a map panel mean: a strip from value 0 (left) to 1 (right) drawn with
    ``colours``, ``low`` and ``high`` written under its ends, ``note`` under them."""

    low: str
    high: str
    colours: Colours
    note: str = ""

    def texts(self) -> list[str]:
        """The words drawn with the bar."""
        return [t for t in (self.low, self.high, self.note) if t]


@dataclass
class Panel:
    """One picture of an overview: ``title`` above it, an optional colour bar and ``notes``
    (one line each) under it."""

    title: str
    image: Image.Image
    bar: ColourBar | None = None
    notes: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        """Every word drawn for this panel, top to bottom."""
        return [self.title, *(self.bar.texts() if self.bar else []), *self.notes]


def map_panel(
    title: str, values: np.ndarray, bar: ColourBar, notes: list[str] | None = None
) -> Panel:
    """A panel showing ``values`` in the colours of its ``bar``."""
    return Panel(title, heatmap_image(values, bar.colours), bar, list(notes or []))


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text or " ")
    return int(right - left), int(bottom)


def _line_height(font) -> int:
    return _text_size(font, "Ag|")[1] + 2


def footer_height(panel: Panel, line_h: int | None = None) -> int:
    """Height of what is drawn under a panel's picture: its bar (with the end labels and note)
    and its notes."""
    line_h = _line_height(_font()) if line_h is None else line_h
    h = 0
    if panel.bar is not None:
        h += GAP + BAR_HEIGHT + 2 + line_h + (line_h if panel.bar.note else 0)
    return h + len(panel.notes) * line_h


def _panel_width(panel: Panel, image_w: int, font) -> int:
    words = [panel.title, *panel.notes]
    if panel.bar is not None:
        words += [f"{panel.bar.low}   {panel.bar.high}", panel.bar.note]
    least = MIN_BAR_WIDTH if panel.bar is not None else 0
    return max(image_w, least, *(_text_size(font, w)[0] for w in words))


def panel_boxes(panels: list[Panel], height: int = 256) -> list[tuple[int, int, int, int]]:
    """Where each panel's picture lies in :func:`overview` (``left, top, right, bottom``)."""
    height = max(int(height), MIN_HEIGHT)
    font = _font()
    top = _line_height(font) + GAP
    boxes, x = [], GAP
    for p in panels:
        w, h = p.image.size
        image_w = max(1, round(w * height / max(h, 1)))
        column = _panel_width(p, image_w, font)
        left = x + (column - image_w) // 2
        boxes.append((left, top, left + image_w, top + height))
        x += column + 2 * GAP
    return boxes


def overview(panels: list[Panel], height: int = 256) -> Image.Image:
    """Panels side by side, each picture scaled to ``height`` (at least :data:`MIN_HEIGHT`) with
    its title above it and its colour bar and notes under it."""
    height = max(int(height), MIN_HEIGHT)
    font = _font()
    line_h = _line_height(font)
    boxes = panel_boxes(panels, height)
    footer = max((footer_height(p, line_h) for p in panels), default=0)
    columns = [_panel_width(p, b[2] - b[0], font) for p, b in zip(panels, boxes)]
    total_w = sum(columns) + 2 * GAP * len(panels) or 2 * GAP
    canvas = Image.new(
        "RGB", (total_w, boxes[0][1] + height + footer + GAP if boxes else 1), "white"
    )
    draw = ImageDraw.Draw(canvas)
    x = GAP
    for panel, (left, top, right, bottom), column in zip(panels, boxes, columns):
        draw.text((x, 2), panel.title, fill=(0, 0, 0), font=font)
        picture = panel.image.convert("RGB").resize(
            (right - left, height), Image.Resampling.BILINEAR
        )
        canvas.paste(picture, (left, top))
        y = bottom
        if panel.bar is not None:
            y = _draw_bar(canvas, draw, font, panel.bar, x, y + GAP, column, line_h)
        for note in panel.notes:
            draw.text((x, y), note, fill=(0, 0, 0), font=font)
            y += line_h
        x += column + 2 * GAP
    return canvas


def _draw_bar(canvas, draw, font, bar: ColourBar, x: int, y: int, width: int, line_h: int) -> int:
    """Draw ``bar`` at ``(x, y)``, ``width`` wide; return the y under it."""
    ramp = bar.colours(np.linspace(0.0, 1.0, width)[None, :])
    strip = Image.fromarray(np.repeat(ramp, BAR_HEIGHT, axis=0), "RGB")
    canvas.paste(strip, (x, y))
    draw.rectangle((x, y, x + width - 1, y + BAR_HEIGHT - 1), outline=(0, 0, 0))
    y += BAR_HEIGHT + 2
    draw.text((x, y), bar.low, fill=(0, 0, 0), font=font)
    high_w = _text_size(font, bar.high)[0]
    draw.text((x + width - high_w, y), bar.high, fill=(0, 0, 0), font=font)
    y += line_h
    if bar.note:
        draw.text((x, y), bar.note, fill=(0, 0, 0), font=font)
        y += line_h
    return y
