"""A perceptual plugin: P is the brightness of each pixel (a toy measure), p its mean."""

import numpy as np

from grefine_core import PerceptualResult, hookimpl


@hookimpl
def grefine_perceptual_map(image, context):
    brightness = np.asarray(image.convert("L"), dtype=np.float32) / 255.0  # (H, W) in [0, 1]
    return PerceptualResult(score=float(brightness.mean()), map=brightness)
