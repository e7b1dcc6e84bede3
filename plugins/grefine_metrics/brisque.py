"""BRISQUE (Mittal, Moorthy & Bovik 2012) with the model shipped in the ``brisque`` 0.2.0 wheel.

The wheel's ``brisque/models/svm.txt`` (a LIBSVM epsilon-SVR with an RBF kernel, 770 support
vectors over 36 features) and ``normalize.pickle`` (per-feature min/max for scaling to [-1, 1]) are
read as data; the package is never imported (it needs OpenCV), and the SVR is evaluated in numpy:
``score = sum_i coef_i * exp(-gamma * |sv_i - x|^2) - rho``.

Features follow the convention the model was trained with (the ``brisque`` package's own): the
image is converted to luminance with scikit-image's ``rgb2gray`` weights in [0, 1]; at each of two
scales (full, then OpenCV-bicubic half size) the MSCN coefficients (7x7 Gaussian window,
sigma 7/6, ``C = 1/255``, zero padding) give 18 features:

* MSCN: AGGD shape ``alpha`` and ``(sigma_l^2 + sigma_r^2) / 2``;
* each paired product (horizontal, vertical, main and secondary diagonal, cropped, not wrapped):
  ``alpha``, AGGD mean, ``sigma_l^2``, ``sigma_r^2``.

Lower is better (about 0 = pristine, 100 = heavily distorted).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from grefine_core.errors import MissingWeightsError
from grefine_metrics import nss
from grefine_metrics.imaging import luminance_709, rgb_array
from grefine_metrics.wheel_files import distribution_file

DISTRIBUTION = "brisque"
SVM_SUFFIX = "brisque/models/svm.txt"
NORMALIZE_SUFFIX = "brisque/models/normalize.pickle"
INSTALL_HINT = (
    'pip install "grefine[eval]" (or pip install brisque==0.2.0, the wheel that ships the model: '
    "only its model files are read; OpenCV is not needed)"
)


@dataclass(frozen=True)
class SVRModel:
    """A LIBSVM epsilon-SVR with an RBF kernel, plus the feature scaling it was trained with."""

    support_vectors: np.ndarray  # (n_sv, n_features)
    coefs: np.ndarray  # (n_sv,)
    gamma: float
    rho: float
    feature_min: np.ndarray
    feature_max: np.ndarray

    def scale(self, features: np.ndarray) -> np.ndarray:
        """Map raw features to [-1, 1] with the training min/max."""
        span = self.feature_max - self.feature_min
        return -1.0 + 2.0 * (np.asarray(features, dtype=np.float64) - self.feature_min) / span

    def predict(self, scaled: np.ndarray) -> float:
        """The SVR output for already-scaled features."""
        d2 = np.sum((self.support_vectors - scaled[None, :]) ** 2, axis=1)
        return float(self.coefs @ np.exp(-self.gamma * d2) - self.rho)


def parse_libsvm_model(text: str, n_features: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Parse a LIBSVM model file with an RBF kernel.

    :returns: ``(support_vectors, coefs, gamma, rho)``; features omitted in the sparse file are 0.
    :raises ValueError: the model is not a one-output RBF SVR/SVC, or the file is malformed.
    """
    lines = text.splitlines()
    header: dict[str, str] = {}
    i = 0
    while i < len(lines) and lines[i].strip() != "SV":
        key, _, value = lines[i].strip().partition(" ")
        header[key] = value.strip()
        i += 1
    if i == len(lines):
        raise ValueError("LIBSVM model has no 'SV' section")
    if header.get("kernel_type") != "rbf":
        raise ValueError(f"expected an RBF kernel, got {header.get('kernel_type')!r}")
    if len(header.get("rho", "").split()) != 1:
        raise ValueError("expected a single-output model (one rho value)")
    gamma, rho = float(header["gamma"]), float(header["rho"])
    sv_lines = [ln for ln in lines[i + 1 :] if ln.strip()]
    svs = np.zeros((len(sv_lines), n_features))
    coefs = np.zeros(len(sv_lines))
    for row, line in enumerate(sv_lines):
        parts = line.split()
        coefs[row] = float(parts[0])
        for item in parts[1:]:
            idx, _, val = item.partition(":")
            j = int(idx) - 1
            if not 0 <= j < n_features:
                raise ValueError(
                    f"support vector {row}: feature index {idx} out of 1..{n_features}"
                )
            svs[row, j] = float(val)
    return svs, coefs, gamma, rho


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickle builtin containers and numbers only: a data file never needs to import code."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a model data file")


def load_model(svm_path: Path, normalize_path: Path) -> SVRModel:
    """Read the SVM and the scaling parameters from the two model files."""
    with open(normalize_path, "rb") as f:
        params = _PlainDataUnpickler(io.BytesIO(f.read())).load()
    fmin = np.asarray(params["min_"], dtype=np.float64)
    fmax = np.asarray(params["max_"], dtype=np.float64)
    svs, coefs, gamma, rho = parse_libsvm_model(svm_path.read_text("utf-8"), fmin.size)
    return SVRModel(svs, coefs, gamma, rho, fmin, fmax)


_MODEL: SVRModel | None = None


def model_files() -> tuple[tuple[Path, Path] | None, str]:
    """Locate ``svm.txt`` and ``normalize.pickle`` in the installed ``brisque`` wheel."""
    svm, why = distribution_file(DISTRIBUTION, SVM_SUFFIX)
    if svm is None:
        return None, f"BRISQUE model not found ({why}); {INSTALL_HINT}"
    norm, why = distribution_file(DISTRIBUTION, NORMALIZE_SUFFIX)
    if norm is None:
        return None, f"BRISQUE scaling file not found ({why}); {INSTALL_HINT}"
    return (svm, norm), ""


def available() -> tuple[bool, str]:
    """``(True, "")`` when the model files are installed, else ``(False, how to get them)``."""
    files, why = model_files()
    return files is not None, why


def default_model() -> SVRModel:
    """The wheel's model, loaded once per process.

    :raises MissingWeightsError: the ``brisque`` wheel is not installed.
    """
    global _MODEL
    if _MODEL is None:
        files, why = model_files()
        if files is None:
            raise MissingWeightsError(why)
        _MODEL = load_model(*files)
    return _MODEL


def scale_features(gray01: np.ndarray) -> np.ndarray:
    """The 18 BRISQUE features of one scale of a luminance image in [0, 1]."""
    coeffs = nss.mscn(gray01, c=1.0 / 255.0)
    fit = nss.aggd_fit(coeffs)
    feats = [fit.alpha, (fit.sigma_left**2 + fit.sigma_right**2) / 2.0]
    for product in nss.paired_products(coeffs, circular=False):
        fit = nss.aggd_fit(product)
        feats += [fit.alpha, fit.mean, fit.sigma_left**2, fit.sigma_right**2]
    return np.asarray(feats, dtype=np.float64)


def brisque_features(gray01: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features: 18 at full scale, 18 at half scale (OpenCV bicubic)."""
    gray = np.asarray(gray01, dtype=np.float64)
    return np.concatenate([scale_features(gray), scale_features(nss.downscale_half_cubic(gray))])


def brisque_score(image: Image.Image, model: SVRModel | None = None) -> float:
    """BRISQUE of an image (lower is better). NaN for images that are flat or under 8x8 pixels."""
    w, h = image.size
    if min(w, h) < 8:
        return float("nan")
    gray = luminance_709(rgb_array(image)) / 255.0
    feats = brisque_features(gray)
    if not np.all(np.isfinite(feats)):
        return float("nan")
    m = model or default_model()
    return m.predict(m.scale(feats))
