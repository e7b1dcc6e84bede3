"""Expected outcomes of the planted-truth scenes (docs/behaviour.md), as checks that list what is
wrong. The scene tests assert the list is empty; the mutation tests assert that a wired-backwards
copy of the code makes it non-empty."""

from __future__ import annotations

import numpy as np
from grefine_clip.oracle_scenes import BALL, BOX, NOISY_QUADRANT, SCENE_SIZE

#: How far (pixels) a mask may reach beyond its target: dilation (4) + feather support (about
#: 3.3 sigma of 3) + half a patch of interpolation spread (9), rounded up.
REACH_PX = 28


def region(box: tuple[int, int, int, int], size: int = SCENE_SIZE) -> np.ndarray:
    """A bool (H, W) region of the ``(x0, y0, x1, y1)`` box."""
    out = np.zeros((size, size), bool)
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = True
    return out


def near(box: tuple[int, int, int, int], reach: int = REACH_PX) -> np.ndarray:
    x0, y0, x1, y1 = box
    return region((max(x0 - reach, 0), max(y0 - reach, 0), x1 + reach, y1 + reach))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def defects(result) -> list[tuple[str, str]]:
    if result.alignment is None:
        return []
    return [(ph.text, ph.defect) for ph in result.alignment.defects]


def mask_on(result, box, what: str, min_iou: float = 0.5) -> list[str]:
    """The mask covers ``box`` (IoU >= ``min_iou``) and nothing beyond its reach."""
    binary = result.mask.binary
    errors = []
    score = iou(binary, region(box))
    if score < min_iou:
        errors.append(f"mask IoU with {what} is {score:.2f} < {min_iou}")
    stray = binary & ~near(box)
    if stray.any():
        errors.append(f"mask reaches {int(stray.sum())} px far from {what}")
    return errors


def high_quality(result, expected: bool) -> list[str]:
    if bool(result.high_quality) != expected:
        return [f"high_quality is {bool(result.high_quality)}, expected {expected}"]
    return []


def check_clean(result) -> list[str]:
    errors = high_quality(result, True)
    if result.p < 0.95:
        errors.append(f"p = {result.p:.3f} < 0.95")
    if result.a is not None and result.a < 0.95:
        errors.append(f"a = {result.a:.3f} < 0.95")
    if defects(result):
        errors.append(f"defects {defects(result)} on the clean scene")
    if result.mask.binary.any():
        errors.append(f"mask covers {result.mask.fraction:.1%} of the clean scene")
    return errors


def check_noisy(result) -> list[str]:
    errors = high_quality(result, False)
    errors += mask_on(result, NOISY_QUADRANT, "the noisy quadrant", min_iou=0.6)
    if defects(result):
        errors.append(f"alignment defects {defects(result)} on the noisy scene")
    return errors


def check_wrong_colour(result) -> list[str]:
    errors = high_quality(result, False)
    if defects(result) != [("blue box", "attribute")]:
        errors.append(f"defects {defects(result)}, expected [('blue box', 'attribute')]")
    errors += mask_on(result, BOX.box(), "the box")
    emphasis = [e.text for e in result.alignment.emphasis] if result.alignment else []
    if emphasis != ["blue box"]:
        errors.append(f"emphasised {emphasis}, expected ['blue box']")
    return errors


def check_missing_tree(result) -> list[str]:
    """NLTK pinned: coordinated phrases are children of the first one, so the missing tree is
    drawn on the ball's region (docs/indicators.md: the parent phrase's noun map)."""
    errors = high_quality(result, False)
    if defects(result) != [("yellow tree", "noun")]:
        errors.append(f"defects {defects(result)}, expected [('yellow tree', 'noun')]")
    if result.a is not None and result.a >= 0.5:  # a missing object is a strong defect
        errors.append(f"a = {result.a:.3f} is not clearly low for a missing object")
    errors += mask_on(result, BALL.box(), "the ball (the tree's parent phrase)")
    return errors


CHECKS = {
    "clean": check_clean,
    "noisy": check_noisy,
    "wrong_colour": check_wrong_colour,
    "missing_tree": check_missing_tree,
}


def scene_failures(pipeline, names=tuple(CHECKS)) -> dict[str, list[str]]:
    """``{scene: [what is wrong]}`` for the scenes assessed with ``pipeline`` (empty lists when
    everything holds)."""
    from grefine_clip.oracle_scenes import SCENES

    out = {}
    for name in names:
        scene = SCENES[name]
        result = pipeline.assess(scene.image(), scene.prompt, name=name)
        out[name] = CHECKS[name](result)
    return out
