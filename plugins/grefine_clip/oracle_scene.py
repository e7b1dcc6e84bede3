"""What the planted-truth (``oracle``) backbone sees in an image: per-patch noise and lexicon shapes.

The oracle's lexicon (docs/behaviour.md): shapes ``ball`` = filled disc, ``box`` = filled
axis-aligned square, ``tree`` = filled triangle, apex up; colours red, green, blue, yellow on a flat
mid-grey background. :func:`read_scene` measures, on a 14 x 14 grid over the whole image:

- the noise of each patch, at the image's native resolution, with a robust (median-based)
  estimator, so that cleanly drawn edges read as clean and resizing does not shrink the noise;
- which lexicon shape covers how much of each patch, and in which colour, read from a denoised
  copy (median filter), so that noise does not create or erase shapes.

Numpy and scipy only; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

#: Lexicon nouns, in the order of the backbone's feature blocks.
NOUNS: tuple[str, ...] = ("ball", "box", "tree")
#: Lexicon colours (RGB, 0-255), in the order of the colour directions.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
}
BACKGROUND: tuple[int, int, int] = (128, 128, 128)
#: Token grid (like ViT-B/16 at 224 px).
GRID = 14
#: A denoised pixel farther than this (RGB distance) from every palette colour is off-lexicon.
PALETTE_TOLERANCE = 60.0
#: Components smaller than this fraction of the image are ignored (denoising specks).
MIN_OBJECT_FRACTION = 0.002
#: Side of the median filter that makes the denoised copy.
DENOISE_SIZE = 5
#: The Laplacian-type kernel of the noise estimator: Gaussian noise of sigma gives responses of
#: standard deviation 6 * sigma, and a flat or straight-edged region gives 0 almost everywhere.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
#: median(|N(0, 1)|): turns a median absolute response into a standard deviation.
_MAD_TO_SIGMA = 0.6744897501960817


@dataclass
class SceneObject:
    """One lexicon shape found in the image.

    :ivar noun: ``ball``, ``box`` or ``tree``; :ivar colour: a lexicon colour name.
    :ivar box: ``(x0, y0, x1, y1)`` pixel bounds (end exclusive); :ivar area: pixels.
    """

    noun: str
    colour: str
    box: tuple[int, int, int, int]
    area: int


@dataclass
class SceneReading:
    """The oracle's reading of one image.

    :ivar noise: ``[GRID, GRID]`` estimated noise sigma (0-255 scale) of each patch.
    :ivar coverage: ``[len(NOUNS), GRID, GRID]`` fraction of each patch covered by each noun.
    :ivar colour: ``[len(NOUNS), GRID, GRID]`` index into :data:`COLOURS` of the colour that
        covers most of the patch for that noun (-1: none).
    :ivar objects: the shapes found, largest first.
    :ivar off_lexicon: fraction of the image the lexicon does not explain (off-palette pixels and
        shapes that are none of the three): above a few percent, the image is not an oracle scene.
    """

    noise: np.ndarray
    coverage: np.ndarray
    colour: np.ndarray
    objects: list[SceneObject] = field(default_factory=list)
    off_lexicon: float = 0.0

    def present(self) -> dict[str, str]:
        """``{noun: colour of its largest shape}`` for every noun present in the image."""
        out: dict[str, str] = {}
        for obj in self.objects:
            out.setdefault(obj.noun, obj.colour)
        return out


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """The image as float32 ``(H, W, 3)`` on the 0-255 scale."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float32)


def patch_edges(length: int, grid: int = GRID) -> np.ndarray:
    """Pixel boundaries of ``grid`` patches over ``length`` pixels (``grid + 1`` integers)."""
    return np.floor(np.arange(grid + 1) * length / grid + 1e-9).astype(int)


def _per_patch(values: np.ndarray, reduce, grid: int = GRID) -> np.ndarray:
    """``reduce`` of ``values[..., H, W]`` over each patch -> ``[..., grid, grid]``."""
    h, w = values.shape[-2:]
    ys, xs = patch_edges(h, grid), patch_edges(w, grid)
    out = np.zeros(values.shape[:-2] + (grid, grid), np.float32)
    for i in range(grid):
        for j in range(grid):
            cell = values[..., ys[i] : max(ys[i + 1], ys[i] + 1), xs[j] : max(xs[j + 1], xs[j] + 1)]
            out[..., i, j] = reduce(cell.reshape(values.shape[:-2] + (-1,)))
    return out


def patch_noise(rgb: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Robust noise sigma of each patch ``[grid, grid]`` (0-255 scale), at native resolution.

    Per colour channel: ``median(|K * x|) / (0.6745 * 6)`` over the patch, with ``K`` the
    Laplacian-type kernel of Immerkaer's estimator; the channels are averaged. Edges touch few
    pixels of a patch, so the median ignores them.
    """
    from scipy.ndimage import convolve

    responses = np.stack(
        [np.abs(convolve(rgb[..., c], _NOISE_KERNEL, mode="reflect")) for c in range(3)]
    )
    med = _per_patch(responses, lambda v: np.median(v, axis=-1), grid)
    return (med.mean(axis=0) / (6.0 * _MAD_TO_SIGMA)).astype(np.float32)


def _labels(denoised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: palette index (0 = background, 1.. = COLOURS order) and whether it is on-palette."""
    palette = np.array([BACKGROUND, *COLOURS.values()], np.float32)
    dist = np.linalg.norm(denoised[:, :, None, :] - palette[None, None], axis=-1)
    return dist.argmin(-1), dist.min(-1) <= PALETTE_TOLERANCE


def classify_shape(component: np.ndarray) -> str | None:
    """``ball``, ``box``, ``tree`` or ``None`` for one connected component (bool, cropped to its
    bounding box), from how much of the box it fills and where it is wide."""
    h, w = component.shape
    fill = float(component.mean())
    aspect = w / max(h, 1)
    if not 0.6 <= aspect <= 1.7:
        return None
    if fill >= 0.92 and aspect <= 1.3:
        return "box"
    if 0.68 <= fill < 0.92 and aspect <= 1.3:
        return "ball"
    if 0.35 <= fill < 0.68:
        widths = component.sum(1)
        third = max(h // 3, 1)
        if widths[:third].mean() < 0.6 * widths[-third:].mean():  # narrow top: apex up
            return "tree"
    return None


def read_scene(image: Image.Image | np.ndarray, grid: int = GRID) -> SceneReading:
    """Noise and lexicon content of ``image`` on a ``grid x grid`` patch grid (see the module)."""
    from scipy.ndimage import find_objects, label, median_filter

    rgb = as_rgb_array(image)
    h, w = rgb.shape[:2]
    noise = patch_noise(rgb, grid)
    size = max(1, min(DENOISE_SIZE, h, w))
    denoised = median_filter(rgb, size=(size, size, 1), mode="nearest")
    palette_idx, on_palette = _labels(denoised)

    noun_masks = np.zeros((len(NOUNS), h, w), bool)
    colour_of = np.full((len(NOUNS), h, w), -1, np.int16)
    objects: list[SceneObject] = []
    unexplained = ~on_palette
    min_area = max(4, int(MIN_OBJECT_FRACTION * h * w))
    colour_names = list(COLOURS)
    for ci, cname in enumerate(colour_names):
        comps, n = label(on_palette & (palette_idx == ci + 1))
        for k, sl in enumerate(find_objects(comps), start=1):
            if sl is None:
                continue
            part = comps[sl] == k
            area = int(part.sum())
            if area < min_area:
                continue
            noun = classify_shape(part)
            if noun is None:
                unexplained[sl] |= part
                continue
            ni = NOUNS.index(noun)
            noun_masks[ni][sl] |= part
            colour_of[ni][sl][part] = ci
            y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            objects.append(SceneObject(noun, cname, (x0, y0, x1, y1), area))
    objects.sort(key=lambda o: -o.area)

    coverage = _per_patch(noun_masks.astype(np.float32), lambda v: v.mean(-1), grid)
    shares = _per_patch(
        (colour_of[:, None] == np.arange(len(colour_names))[None, :, None, None]).astype(
            np.float32
        ),
        lambda v: v.mean(-1),
        grid,
    )  # [nouns, colours, grid, grid]
    colour = np.where(shares.max(1) > 0, shares.argmax(1), -1).astype(np.int16)
    return SceneReading(
        noise=noise,
        coverage=coverage,
        colour=colour,
        objects=objects,
        off_lexicon=float(unexplained.mean()),
    )
