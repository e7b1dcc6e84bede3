"""A fuser plugin: refine where P is below a threshold or the alignment defect map is set."""

import numpy as np

from grefine_core import MaskResult, StrictModel, hookimpl


class ThresholdSettings(StrictModel):  # [plugins.toy_fuser]
    p_below: float = 0.5


@hookimpl
def grefine_settings_models():
    return {"toy_fuser": ThresholdSettings}


@hookimpl
def grefine_fuse_masks(perceptual, alignment, context):
    bad = perceptual.map < context.settings("toy_fuser").p_below
    if alignment is not None:  # None when the alignment slot is off
        bad |= alignment.defect_map > 0.5
    return MaskResult(soft=bad.astype(np.float32), binary=bad, fraction=float(bad.mean()))
