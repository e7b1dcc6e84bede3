"""Offline metrics on synthetic images with known answers, and the NSS building blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from grefine_metrics import nss
from grefine_metrics.color import srgb_to_lab
from grefine_metrics.fidelity import (
    color_shift,
    masked_fraction,
    psnr_outside,
    ssim_map,
    ssim_outside,
)
from grefine_metrics.seam import seam_strength
from PIL import Image
from scipy import ndimage, special, stats

from grefine_core.errors import InputError


def _img(arr: np.ndarray) -> Image.Image:
    a = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def textured() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(20, 200, size=(48, 64, 3)).astype(np.float64)


# ----------------------------------------------------------------------------- PSNR / SSIM


def test_identical_images_give_psnr_inf_and_ssim_one(textured):
    im = _img(textured)
    assert psnr_outside(im, im.copy(), None) == math.inf
    assert ssim_outside(im, im.copy(), None) == 1.0
    assert color_shift(im, im.copy(), None) == 0.0


def test_known_shift_gives_known_psnr(textured):
    before = _img(textured)
    after = _img(textured + 10)  # every channel of every pixel +10 (no clipping: max 209)
    expected = 10 * math.log10(255**2 / 100.0)  # MSE = 100
    assert psnr_outside(before, after, None) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(28.1308, abs=1e-4)


def test_psnr_and_ssim_ignore_the_masked_region(textured):
    before = _img(textured)
    changed = textured.copy()
    changed[10:30, 20:40] = 255 - changed[10:30, 20:40]
    after = _img(changed)
    mask = np.zeros((48, 64), bool)
    mask[10:30, 20:40] = True
    assert psnr_outside(before, after, mask) == math.inf
    assert psnr_outside(before, after, None) < 20
    # the SSIM window (radius 5) sees the change near the mask, so only approximately 1 outside
    assert 0.6 < ssim_outside(before, after, mask) < 1.0
    assert ssim_outside(before, after, None) < ssim_outside(before, after, mask)
    # a float mask is thresholded at 0.5
    assert psnr_outside(before, after, mask.astype(np.float32) * 0.9) == math.inf
    # nothing outside: undefined
    assert math.isnan(psnr_outside(before, after, np.ones((48, 64), bool)))
    assert math.isnan(ssim_outside(before, after, np.ones((48, 64), bool)))


def test_ssim_decreases_with_noise_and_matches_the_published_definition():
    rng = np.random.default_rng(1)
    x = rng.random((40, 50)) * 255
    values = []
    for sigma in (5, 20, 60):
        y = np.clip(x + rng.normal(0, sigma, x.shape), 0, 255)
        values.append(ssim_outside(_img(x), _img(y), None))
    assert values[0] > values[1] > values[2] > 0
    skm = pytest.importorskip(
        "skimage.metrics", reason="scikit-image (a brisque dependency) is absent"
    )
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    _, full = skm.structural_similarity(
        x,
        y,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    np.testing.assert_allclose(ssim_map(x, y), full, atol=1e-10)


def test_size_mismatch_and_bad_mask_are_clear_errors(textured):
    im = _img(textured)
    with pytest.raises(InputError, match="original is 64x48 but the refined image is 32x24"):
        psnr_outside(im, im.resize((32, 24)), None)
    with pytest.raises(InputError, match=r"mask has shape \(10, 10\); expected \(48, 64\)"):
        psnr_outside(im, im, np.zeros((10, 10), bool))


# ----------------------------------------------------------------------------- colour


def test_srgb_to_lab_known_values():
    lab = srgb_to_lab(
        np.array(
            [[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]]
        )
    )
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-9)
    # published CIE-Lab (D65) values of the sRGB primaries and mid-grey
    np.testing.assert_allclose(lab[2], [53.2408, 80.0925, 67.2032], atol=2e-3)
    np.testing.assert_allclose(lab[3], [87.7347, -86.1827, 83.1793], atol=2e-3)
    np.testing.assert_allclose(lab[4], [32.2970, 79.1875, -107.8602], atol=2e-3)
    np.testing.assert_allclose(lab[5], [53.5850, 0.0, 0.0], atol=2e-3)
    color = pytest.importorskip(
        "skimage.color", reason="scikit-image (a brisque dependency) is absent"
    )
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(20, 20, 3))
    np.testing.assert_allclose(srgb_to_lab(rgb), color.rgb2lab(rgb.astype(np.uint8)), atol=5e-3)


def test_color_shift_known_answers():
    black, white = _img(np.zeros((8, 8, 3))), _img(np.full((8, 8, 3), 255.0))
    assert color_shift(black, white, None) == pytest.approx(100.0, abs=1e-3)
    grey1, grey2 = _img(np.full((8, 8, 3), 128.0)), _img(np.full((8, 8, 3), 200.0))
    expected = float(
        np.linalg.norm(
            srgb_to_lab(np.array([128, 128, 128])) - srgb_to_lab(np.array([200, 200, 200]))
        )
    )
    assert color_shift(grey1, grey2, None) == pytest.approx(expected, abs=1e-9)
    half = np.zeros((8, 8), bool)
    half[:, :4] = True
    mixed = np.zeros((8, 8, 3))
    mixed[:, :4] = 255.0  # changed only inside the mask
    assert color_shift(black, _img(mixed), half) == 0.0
    assert color_shift(black, _img(mixed), None) == pytest.approx(50.0, abs=1e-3)


def test_masked_fraction():
    im = _img(np.zeros((10, 20, 3)))
    mask = np.zeros((10, 20), bool)
    mask[:5, :4] = True
    assert masked_fraction(im, mask) == pytest.approx(0.1)
    assert masked_fraction(im, None) == 0.0


# ----------------------------------------------------------------------------- seam


def test_hard_seam_scores_higher_than_a_feathered_one():
    rng = np.random.default_rng(0)
    base = np.clip(128 + rng.normal(0, 6, (96, 96)), 0, 255)
    mask = np.zeros((96, 96), bool)
    mask[32:64, 28:70] = True
    soft = ndimage.gaussian_filter(mask.astype(float), 4)
    untouched = seam_strength(_img(base), mask)
    hard = seam_strength(_img(base + 50 * mask), mask)
    feathered = seam_strength(_img(base + 50 * soft), mask)
    assert untouched == pytest.approx(
        1.0, abs=0.1
    )  # no seam: the boundary looks like its surroundings
    assert hard > 2.0
    assert untouched < feathered < hard
    assert feathered < 1.5


def test_seam_is_undefined_without_a_boundary():
    im = _img(np.full((16, 16), 100.0))
    assert math.isnan(seam_strength(im, None))
    assert math.isnan(seam_strength(im, np.zeros((16, 16), bool)))
    assert math.isnan(seam_strength(im, np.ones((16, 16), bool)))
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    assert seam_strength(im, mask) == pytest.approx(1.0)  # flat image: finite, no seam
    with pytest.raises(ValueError, match="band_px"):
        seam_strength(im, mask, band_px=0)


# ----------------------------------------------------------------------------- NSS blocks


def test_ggd_fit_recovers_known_shapes():
    rng = np.random.default_rng(3)
    for alpha in (0.8, 1.0, 2.0):
        x = stats.gennorm.rvs(alpha, scale=0.7, size=200_000, random_state=rng)
        shape, var = nss.ggd_fit(x)
        assert shape == pytest.approx(alpha, rel=0.03)
        expected_var = 0.7**2 * special.gamma(3 / alpha) / special.gamma(1 / alpha)
        assert var == pytest.approx(expected_var, rel=0.02)


def test_aggd_fit_recovers_an_asymmetric_distribution():
    rng = np.random.default_rng(4)
    alpha, bl, br = 1.5, 0.5, 1.0
    mag = np.abs(stats.gennorm.rvs(alpha, size=400_000, random_state=rng))
    side = rng.random(mag.size) < bl / (bl + br)  # AGGD: P(x < 0) = bl / (bl + br)
    x = np.where(side, -bl * mag, br * mag)
    fit = nss.aggd_fit(x)
    assert fit.alpha == pytest.approx(alpha, rel=0.03)
    assert fit.beta_left == pytest.approx(bl, rel=0.03)
    assert fit.beta_right == pytest.approx(br, rel=0.03)
    expected_mean = (br - bl) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    assert fit.mean == pytest.approx(expected_mean, rel=0.05)
    assert fit.mean == pytest.approx(
        float(np.mean(x)), rel=0.05
    )  # the AGGD mean is the sample mean


def test_aggd_fit_hand_computed_case_and_degenerate_input():
    # x = [-1, -1, 2, 2]: sigma_l = 1, sigma_r = 2, gamma = 1/2, r = 1.5^2 / 2.5 = 0.9,
    # R = 0.9 * (1/8 + 1)(3/2) / (5/4)^2 = 0.972 > 3/4 = sup(phi): the shape hits the upper bound.
    fit = nss.aggd_fit(np.array([-1.0, -1.0, 2.0, 2.0]))
    assert (fit.sigma_left, fit.sigma_right) == (1.0, 2.0)
    assert fit.alpha == nss.ALPHA_RANGE[1]
    nan_fit = nss.aggd_fit(np.zeros(10))
    assert math.isnan(nan_fit.alpha)
    # phi(2) = Gamma(1)^2 / (Gamma(1/2) Gamma(3/2)) = 2 / pi: a Gaussian's ratio
    assert nss.solve_shape(2 / math.pi) == pytest.approx(2.0, abs=1e-9)


def test_mscn_of_a_constant_interior_is_zero_and_of_noise_is_unit_scale():
    flat = np.full((20, 20), 0.5)
    assert np.allclose(nss.mscn(flat, 1 / 255, padding="replicate"), 0.0)
    inner = nss.mscn(flat, 1 / 255)[4:-4, 4:-4]  # zero padding affects only the 3-pixel border
    assert np.allclose(inner, 0.0)
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 30, (200, 200)) + 128
    coeffs = nss.mscn(noise, 1.0, padding="replicate")
    assert abs(float(coeffs.mean())) < 0.02
    assert 0.8 < float(coeffs.std()) < 1.2
    with pytest.raises(ValueError, match="2-D"):
        nss.mscn(np.zeros((4, 4, 3)), 1.0)


def test_paired_products_shapes_and_values():
    x = np.arange(12, dtype=float).reshape(3, 4)
    h, v, d1, d2 = nss.paired_products(x)
    assert h.shape == (3, 3) and v.shape == (2, 4) and d1.shape == (2, 3) and d2.shape == (2, 3)
    assert h[0, 0] == 0 * 1 and v[0, 1] == 1 * 5 and d1[0, 0] == 0 * 5 and d2[0, 0] == 4 * 1
    hc, vc, d1c, d2c = nss.paired_products(x, circular=True)
    assert all(a.shape == x.shape for a in (hc, vc, d1c, d2c))
    assert hc[0, 0] == x[0, 0] * x[0, 3] and vc[0, 0] == x[0, 0] * x[2, 0]
    assert d1c[1, 1] == x[1, 1] * x[0, 0] and d2c[1, 1] == x[1, 1] * x[0, 2]


def test_cubic_half_downscale_matches_the_keys_kernel_definition():
    # Independent: Keys' kernel (a = -0.75) evaluated directly at the source position
    # 2*d + 0.5 of each output sample, with edge replication.
    def keys(t: float, a: float = -0.75) -> float:
        t = abs(t)
        if t <= 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        if t < 2:
            return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return 0.0

    rng = np.random.default_rng(6)
    img = rng.random((7, 9))
    out = np.zeros((4, 4))  # round-half-even(3.5) = 4, round-half-even(4.5) = 4
    for oy in range(4):
        for ox in range(4):
            sy, sx = 2 * oy + 0.5, 2 * ox + 0.5
            acc = 0.0
            for iy in range(int(np.floor(sy)) - 1, int(np.floor(sy)) + 3):
                for ix in range(int(np.floor(sx)) - 1, int(np.floor(sx)) + 3):
                    acc += (
                        keys(sy - iy) * keys(sx - ix) * img[min(max(iy, 0), 6), min(max(ix, 0), 8)]
                    )
            out[oy, ox] = acc
    np.testing.assert_allclose(nss.downscale_half_cubic(img), out, atol=1e-12)
