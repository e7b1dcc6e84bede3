"""Weight-based metrics: clean "unavailable" reports when packages or weights are absent."""

from __future__ import annotations

import numpy as np
import pytest
from grefine_metrics import optional
from grefine_metrics.catalog import weight_metrics
from PIL import Image

from grefine_core.errors import MissingWeightsError

NAMES = ["clipiqa", "unique", "liqe", "dbcnn", "topiq", "cnniqa", "musiq", "qalign",
         "clipscore", "imagereward", "pickscore", "hpsv2"]  # fmt: skip


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point every cache at an empty folder and forbid downloads."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GREFINE_ALLOW_DOWNLOADS", raising=False)
    return tmp_path


def test_all_weight_metrics_are_listed_and_unavailable_with_a_reason(empty_caches):
    metrics = {m.name: m for m in weight_metrics()}
    assert list(metrics) == NAMES
    image = Image.new("RGB", (32, 32))
    for name, metric in metrics.items():
        ok, why = metric.available()
        assert not ok, name
        assert ("pip install" in why) or ("weights not found" in why), (name, why)
        with pytest.raises(MissingWeightsError, match=name):
            metric(image, image, None, "a cat")


def test_messages_say_what_to_get_and_where(empty_caches):
    metrics = {m.name: m for m in weight_metrics()}
    ok, why = metrics["musiq"].available()
    assert "pip install pyiqa" in why and "*musiq*" in why and str(empty_caches / "torch") in why
    ok, why = metrics[
        "clipscore"
    ].available()  # open_clip is installed: only the weights are missing
    assert "weights not found" in why and "timm/vit_base_patch32_clip_224.openai" in why
    assert str(empty_caches / "hf") in why and "GREFINE_ALLOW_DOWNLOADS=1" in why
    ok, why = metrics["pickscore"].available()
    assert "yuvalkirstain/PickScore_v1" in why


def test_cached_weights_make_a_metric_available(empty_caches):
    snap = (
        empty_caches / "hf" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc"
    )
    snap.mkdir(parents=True)
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"x")
    clipscore = next(m for m in weight_metrics() if m.name == "clipscore")
    assert clipscore.available() == (True, "")


def test_downloads_can_be_allowed_but_not_when_offline(empty_caches, monkeypatch):
    clipscore = optional.clipscore_metric()
    monkeypatch.setenv("GREFINE_ALLOW_DOWNLOADS", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert clipscore.available() == (True, "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not clipscore.available()[0]


def test_local_clipscore_checkpoint(empty_caches):
    ckpt = empty_caches / "clip.pt"
    metric = optional.clipscore_metric(pretrained=str(ckpt))
    ok, why = metric.available()
    assert not ok and str(ckpt) in why
    ckpt.write_bytes(b"x")
    assert metric.available() == (True, "")


def test_model_load_failure_becomes_missing_weights_error():
    def factory():
        raise OSError("no such file: model.bin")

    with pytest.raises(
        MissingWeightsError, match="could not load its model .*no such file.*get it here"
    ):
        optional._cached(("test-missing", "cpu"), factory, "demo", "get it here")


def test_tensor_conversion_shape():
    pytest.importorskip("torch")
    t = optional._to_tensor(Image.fromarray(np.full((4, 6, 3), 255, np.uint8)), "cpu")
    assert tuple(t.shape) == (1, 3, 4, 6) and float(t.max()) == 1.0
