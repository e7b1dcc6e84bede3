"""Crop-to-mask geometry and compositing (no model needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from grefine_sdxl.geometry import (
    composite,
    crop_box,
    mask_bbox,
    round_to_multiple,
    working_size,
)


def _plan(binary: np.ndarray, native: int = 1024, **kw):
    """The single box over the whole mask (per_region off), as stage 1 plans it."""
    from grefine_sdxl.refine import stage1_regions
    from grefine_sdxl.settings import SDXLSettings

    settings = SDXLSettings(per_region=False, **kw)
    path, [region], _ = stage1_regions(binary, settings, native, 8)
    return SimpleNamespace(path=path, box=region.box, working_size=region.working_size)


def test_bbox_and_crop_box_with_padding_and_clamping():
    m = np.zeros((200, 300), bool)
    m[50:70, 100:140] = True
    assert mask_bbox(m) == (100, 50, 140, 70)
    assert mask_bbox(np.zeros((5, 5), bool)) is None
    # pad = max(ceil(0.25 * 40), 16) = 16 on every side
    assert crop_box(m, 0.25, 16, max_aspect=10) == (84, 34, 156, 86)
    edge = np.zeros((200, 300), bool)
    edge[0:10, 290:300] = True
    x0, y0, x1, y1 = crop_box(edge, 0.25, 16)
    assert x0 >= 0 and y0 == 0 and x1 == 300 and y1 <= 200


def test_thin_masks_get_a_usable_canvas():
    m = np.zeros((512, 1536), bool)
    m[250:252, 100:1400] = True
    x0, y0, x1, y1 = crop_box(m, 0.0, 0, max_aspect=4.0)
    assert (x1 - x0) / (y1 - y0) <= 4.0 + 1e-9
    assert y0 <= 250 and y1 >= 252


@pytest.mark.parametrize("size", [(1024, 1024), (512, 1536), (1536, 512), (333, 517), (57, 23)])
def test_full_path_working_size_is_native_and_multiple_of_8(size):
    w, h = working_size(size, 1024, 512, 8, full=True)
    assert w % 8 == 0 and h % 8 == 0 and max(w, h) == 1024
    assert abs(w / h - size[0] / size[1]) < 0.1 * size[0] / size[1] + 8 / min(w, h)


def test_crop_working_size_keeps_resolution_and_clamps():
    assert working_size((600, 400), 1024, 512, 8, full=False) == (600, 400)
    assert working_size((2000, 1000), 1024, 512, 8, full=False) == (1024, 512)  # down to native
    assert working_size((100, 50), 1024, 512, 8, full=False) == (512, 256)  # up to min_side only
    assert round_to_multiple(3, 8) == 8 and round_to_multiple(1021, 8) == 1024


def test_plan_picks_crop_for_small_masks_and_full_otherwise():
    m = np.zeros((1024, 1024), bool)
    m[100:200, 100:200] = True
    plan = _plan(m)
    assert plan.path == "crop" and plan.box[0] <= 100 and plan.box[2] >= 200
    assert max(plan.working_size) == 512  # a 150 px crop is not upscaled to 1024
    big = np.ones((1024, 1024), bool)
    assert _plan(big).path == "full" and _plan(big).working_size == (1024, 1024)
    assert _plan(m, crop_to_mask=False).path == "full"
    assert _plan(m, crop_max_fraction=0.001).path == "full"


def test_composite_is_exact_where_soft_is_zero_and_blends_elsewhere():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    soft = np.zeros((20, 30), np.float32)
    soft[5:10, 5:10] = 1.0
    soft[5:10, 10:12] = 0.5
    out = composite(a, b, soft)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[soft == 0], a[soft == 0])
    np.testing.assert_array_equal(out[soft == 1], b[soft == 1])
    mid = np.rint((a[5:10, 10:12].astype(float) + b[5:10, 10:12]) / 2)
    np.testing.assert_array_equal(out[5:10, 10:12], mid.astype(np.uint8))
