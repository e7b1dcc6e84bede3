"""Planted-truth scenes for the ``oracle`` preset: flat lexicon shapes on grey, optional noise.

Each :class:`Scene` is an image whose truth is known (what is drawn where, where the noise is) and
a prompt. Tests, ``scripts/oracle_gallery.py`` and the demo draw them with :func:`draw_scene`.
Numpy and PIL only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from grefine_clip.oracle_scene import BACKGROUND, COLOURS

#: Side of the scenes (pixels): large enough that a patch is about 18 px.
SCENE_SIZE = 256


@dataclass(frozen=True)
class Shape:
    """One drawn shape: ``noun`` (ball, box, tree), ``colour`` name, centre ``(x, y)``, ``size``
    (diameter, side or base, in pixels)."""

    noun: str
    colour: str
    centre: tuple[int, int]
    size: int

    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` pixel bounds, end exclusive."""
        x, y = self.centre
        r = self.size // 2
        return (x - r, y - r, x - r + self.size, y - r + self.size)


@dataclass(frozen=True)
class Scene:
    """A planted-truth scene: shapes on the grey background, Gaussian noise of ``sigma`` inside
    ``noise_box`` (``(x0, y0, x1, y1)``), and the prompt it is assessed against."""

    name: str
    prompt: str
    shapes: tuple[Shape, ...]
    noise_box: tuple[int, int, int, int] | None = None
    sigma: float = 40.0
    seed: int = 0
    size: int = SCENE_SIZE
    note: str = field(default="", compare=False)

    def image(self) -> Image.Image:
        """The scene drawn exactly (no anti-aliasing), noise added and clipped to 0-255."""
        return draw_scene(self.shapes, self.size, self.noise_box, self.sigma, self.seed)


def draw_shape(draw: ImageDraw.ImageDraw, shape: Shape) -> None:
    """Draw one filled lexicon shape."""
    fill = COLOURS[shape.colour]
    x0, y0, x1, y1 = shape.box()
    if shape.noun == "ball":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape.noun == "box":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape.noun == "tree":
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=fill)
    else:
        raise ValueError(f"unknown lexicon noun {shape.noun!r}; valid: ball, box, tree")


def draw_scene(
    shapes: tuple[Shape, ...] | list[Shape],
    size: int = SCENE_SIZE,
    noise_box: tuple[int, int, int, int] | None = None,
    sigma: float = 40.0,
    seed: int = 0,
) -> Image.Image:
    """A ``size x size`` RGB scene: grey background, ``shapes``, and Gaussian noise of ``sigma``
    (0-255 scale, same seed, same noise) added inside ``noise_box``."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        draw_shape(draw, shape)
    if noise_box is None:
        return image
    arr = np.asarray(image, dtype=np.float64).copy()
    x0, y0, x1, y1 = noise_box
    rng = np.random.default_rng(seed)
    arr[y0:y1, x0:x1] += rng.normal(0.0, sigma, size=arr[y0:y1, x0:x1].shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


#: The two objects of the clean scene: a red ball (upper left) and a green box (upper right),
#: leaving the lower half free.
BALL = Shape("ball", "red", (72, 80), 80)
BOX = Shape("box", "green", (184, 80), 72)
#: The lower-right quadrant (free of objects), where the noisy scene has its noise.
NOISY_QUADRANT = (SCENE_SIZE // 2, SCENE_SIZE // 2, SCENE_SIZE, SCENE_SIZE)

SCENES: dict[str, Scene] = {
    s.name: s
    for s in (
        Scene(
            "clean",
            "a red ball and a green box",
            (BALL, BOX),
            note="drawn exactly as the prompt says: high quality, returned unchanged",
        ),
        Scene(
            "noisy",
            "a red ball and a green box",
            (BALL, BOX),
            noise_box=NOISY_QUADRANT,
            note="noise (sigma 40) in the empty lower-right quadrant: the mask covers it",
        ),
        Scene(
            "wrong_colour",
            "a red ball and a blue box",
            (BALL, BOX),
            note="the box is green, the prompt says blue: an attribute defect on the box",
        ),
        Scene(
            "missing_tree",
            "a red ball and a green box and a yellow tree",
            (BALL, BOX),
            note="no tree is drawn: a missing noun, masked on its parent phrase's region",
        ),
    )
}
