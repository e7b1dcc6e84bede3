"""Parity of the exported encoders on the real ViT-B/16 architecture (random weights, QuickGELU):
one export per session, batch 1 and 4 from the same model, max abs diff <= 1e-4 in float32."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vitb():
    from grefine_clip import SurgeryCLIP
    from grefine_clip.loading import build_clip
    from grefine_clip.model import VIT_B_16_CONFIG

    return SurgeryCLIP(build_clip(VIT_B_16_CONFIG, seed=0), description="random ViT-B/16")


@pytest.fixture(scope="module")
def graphs(vitb, tmp_path_factory):
    from grefine_onnx.export import ExportOptions, export_clip
    from grefine_onnx.providers import SessionConfig
    from grefine_onnx.session import OrtGraph

    out = tmp_path_factory.mktemp("onnx_vitb16")
    manifest = export_clip(vitb, out, ExportOptions(parts=("image", "text")))
    cfg = SessionConfig(providers=("cpu",))
    return {p: OrtGraph(out / i["file"], i, cfg) for p, i in manifest["graphs"].items()}, manifest


def test_vitb16_image_encoder_parity_batch_1_and_4(vitb, graphs):
    graph = graphs[0]["image"]
    assert (
        graphs[1]["architecture"]["tokens"] == 197 and graphs[1]["architecture"]["embed_dim"] == 512
    )
    x = torch.randn((4, 3, 224, 224), generator=torch.Generator().manual_seed(0))
    ref = vitb.encode_image(x).numpy()
    out4 = graph(x)
    out1 = graph(x[2:3])
    assert out4.shape == (4, 197, 512) and out1.shape == (1, 197, 512)
    assert float(np.abs(out4 - ref).max()) <= 1e-4
    assert float(np.abs(out1 - ref[2:3]).max()) <= 1e-4
    plain = vitb.encode_image(x[:1], surgery=False).numpy()
    assert float(np.abs(out4[:1, 1:] - plain[:, 1:]).max()) > 1e-2  # surgery, not plain CLIP


def test_vitb16_text_encoder_parity(vitb, graphs):
    graph = graphs[0]["text"]
    ids = vitb.tokenize(["a photo of a cat.", "", "a red car parked next to a tall tree", "dog"])
    ref = vitb.encode_text(ids, cut=False).numpy()
    cut = ids[:, : int(ids.argmax(-1).max()) + 1]
    assert float(np.abs(graph(cut) - ref).max()) <= 1e-4
    assert float(np.abs(graph(cut[:1]) - ref[:1]).max()) <= 1e-4
