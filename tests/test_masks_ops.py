"""Mask fusers: the paper's Eq. 9 and the released code's thresholds, dilation and feathering."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from grefine_masks import paper_plugin, reference_plugin
from grefine_masks.ops import FEATHER_FLOOR, dilate, feather, fuse_paper, fuse_reference
from grefine_masks.settings import PaperMaskSettings, ReferenceMaskSettings

from grefine_core.config import load_config
from grefine_core.context import ModelCache, RunContext
from grefine_core.errors import InputError
from grefine_core.types import AlignmentResult, MaskResult, PerceptualResult

H, W = 40, 60


def _pq(P: np.ndarray, score: float = 0.5) -> PerceptualResult:
    return PerceptualResult(score=score, map=P.astype(np.float32))


def _aq(A: np.ndarray, score: float = 0.5) -> AlignmentResult:
    return AlignmentResult(score=score, defect_map=A.astype(np.float32))


@pytest.fixture
def maps() -> tuple[np.ndarray, np.ndarray]:
    """P: good everywhere except a bad block; A: a defect block elsewhere plus a weak one."""
    P = np.ones((H, W), np.float32)
    P[5:10, 5:15] = 0.2  # 1 - P = 0.8: refined by the paper fuser; below 100/255 for reference
    P[20:25, 5:15] = 0.6  # 1 - P = 0.4: not refined alone (tau 0.5)
    A = np.zeros((H, W), np.float32)
    A[20:25, 30:40] = 0.9  # above 170/255
    A[30:35, 30:40] = 0.5  # below 170/255, above tau
    A[20:25, 10:15] = 0.2  # with 1 - P = 0.4 sums to 0.6 > tau
    return P, A


def test_paper_fuser_follows_eq9_without_dilation(maps):
    P, A = maps
    m = fuse_paper(_pq(P), _aq(A), tau=0.5, dilate_px=0, feather_sigma=0.0)
    expected = np.clip(1 - P + A, 0, 1) > 0.5
    assert isinstance(m, MaskResult)
    assert m.soft.dtype == np.float32 and m.soft.shape == (H, W)
    assert m.binary.dtype == bool
    np.testing.assert_array_equal(m.binary, expected)
    np.testing.assert_array_equal(m.soft, expected.astype(np.float32))
    assert m.fraction == pytest.approx(expected.mean())
    assert m.binary[20:25, 10:15].all() and not m.binary[20:25, 5:10].any()  # the sum matters


def test_paper_fuser_tau_is_strict(maps):
    P, _ = maps
    flat = np.full((H, W), 0.5, np.float32)
    assert fuse_paper(_pq(flat), None, tau=0.5, dilate_px=0, feather_sigma=0).empty
    assert fuse_paper(_pq(flat), None, tau=0.49, dilate_px=0, feather_sigma=0).binary.all()


def test_paper_fuser_alignment_none_and_neutral_p(maps):
    P, A = maps
    no_aq = fuse_paper(_pq(P), None, dilate_px=0, feather_sigma=0)
    np.testing.assert_array_equal(no_aq.binary, (1 - P) > 0.5)
    neutral = PerceptualResult.neutral_for(H, W)
    only_aq = fuse_paper(neutral, _aq(A), dilate_px=0, feather_sigma=0)
    np.testing.assert_array_equal(only_aq.binary, A > 0.5)
    nothing = fuse_paper(neutral, None)
    assert nothing.empty and nothing.fraction == 0.0 and not nothing.soft.any()


def test_reference_fuser_aq_only_by_default(maps):
    P, A = maps
    m = fuse_reference(_pq(P), _aq(A), dilate_px=0, feather_sigma=0)
    np.testing.assert_array_equal(m.binary, A > 170 / 255)
    assert not m.binary[5:10, 5:15].any()  # the PQ region is ignored (released notebook)


def test_reference_fuser_with_pq_is_the_union(maps):
    P, A = maps
    m = fuse_reference(_pq(P), _aq(A), use_pq=True, dilate_px=0, feather_sigma=0)
    np.testing.assert_array_equal(m.binary, (P < 100 / 255) | (A > 170 / 255))
    pq_only = fuse_reference(_pq(P), None, use_pq=True, dilate_px=0, feather_sigma=0)
    np.testing.assert_array_equal(pq_only.binary, P < 100 / 255)
    assert fuse_reference(_pq(P), None, dilate_px=0, feather_sigma=0).empty
    neutral = fuse_reference(PerceptualResult.neutral_for(H, W), None, use_pq=True)
    assert neutral.empty


def test_dilation_is_a_euclidean_disk():
    region = np.zeros((21, 21), bool)
    region[10, 10] = True
    grown = dilate(region, 3)
    yy, xx = np.mgrid[:21, :21]
    np.testing.assert_array_equal(grown, (yy - 10) ** 2 + (xx - 10) ** 2 <= 9)
    np.testing.assert_array_equal(dilate(region, 0), region)
    assert not dilate(np.zeros((5, 5), bool), 3).any()


def test_feather_is_soft_inside_the_binary_support():
    region = np.zeros((50, 50), bool)
    region[20:30, 20:30] = True
    m = fuse_paper(_pq(np.where(region, 0.0, 1.0)), None, dilate_px=2, feather_sigma=2.0)
    soft = m.soft
    assert soft.min() >= 0.0 and soft.max() <= 1.0
    np.testing.assert_array_equal(m.binary, soft > 0)  # binary = the support of soft
    assert (soft[~m.binary] == 0).all()
    assert soft[25, 25] > 0.99  # centre: full strength
    band = m.binary & (soft < 0.95)
    assert band.any() and not band[22:28, 22:28].any()  # the blend band is at the edge only
    assert m.binary[20:30, 20:30].all() and m.binary.sum() > dilate(region, 2).sum()
    assert m.fraction == pytest.approx(m.binary.mean()) and m.fraction < 0.3
    # values from the far Gaussian tail are cut, so the mask stays local
    assert soft[m.binary].min() >= FEATHER_FLOOR
    assert not m.binary[:5].any()


def test_feather_keeps_a_single_pixel_even_with_a_wide_sigma():
    region = np.zeros((30, 30), bool)
    region[15, 15] = True
    soft = feather(region, 25.0)
    assert soft[15, 15] > 0 and (soft > 0).sum() >= 1


def test_bad_maps_are_rejected_with_their_name(maps):
    P, A = maps
    with pytest.raises(InputError, match=r"alignment.defect_map has shape \(10, 10\)"):
        fuse_paper(_pq(P), _aq(np.zeros((10, 10))))
    bad = P.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="perceptual.map contains 1 non-finite"):
        fuse_reference(_pq(bad), _aq(A))
    with pytest.raises(InputError, match="2-D"):
        fuse_paper(_pq(np.ones((4, 4, 3))), None)


@pytest.mark.parametrize("preset", ["paper", "reference", "tiny"])
def test_presets_validate_and_plugins_read_their_sections(preset, maps):
    P, A = maps
    cfg = load_config(preset=preset, environ={})
    settings = {
        "mask_paper": PaperMaskSettings.model_validate(cfg.plugins.get("mask_paper", {})),
        "mask_reference": ReferenceMaskSettings.model_validate(
            cfg.plugins.get("mask_reference", {})
        ),
    }
    ctx = RunContext(config=cfg, models=ModelCache(), plugin_settings=settings)
    s = settings["mask_paper"]
    got = paper_plugin.grefine_fuse_masks(perceptual=_pq(P), alignment=_aq(A), context=ctx)
    want = fuse_paper(_pq(P), _aq(A), s.tau, s.dilate_px, s.feather_sigma)
    np.testing.assert_array_equal(got.soft, want.soft)
    r = settings["mask_reference"]
    got = reference_plugin.grefine_fuse_masks(perceptual=_pq(P), alignment=_aq(A), context=ctx)
    want = fuse_reference(
        _pq(P), _aq(A), r.pq_threshold, r.aq_threshold, r.use_pq, r.dilate_px, r.feather_sigma
    )
    np.testing.assert_array_equal(got.binary, want.binary)
    assert paper_plugin.grefine_settings_models() == {"mask_paper": PaperMaskSettings}
    assert reference_plugin.grefine_settings_models() == {"mask_reference": ReferenceMaskSettings}


def test_settings_reject_unknown_and_out_of_range_keys():
    with pytest.raises(ValueError, match="taux"):
        PaperMaskSettings.model_validate({"taux": 0.5})
    with pytest.raises(ValueError, match="tau"):
        PaperMaskSettings(tau=1.5)
    assert ReferenceMaskSettings().aq_threshold == pytest.approx(170 / 255)


def test_importing_the_fuser_plugins_does_not_import_torch_or_scipy():
    code = (
        "import sys, grefine_masks, grefine_masks.paper_plugin, grefine_masks.reference_plugin; "
        "bad = [m for m in ('torch', 'scipy') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
