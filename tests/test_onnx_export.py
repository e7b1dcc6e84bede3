"""ONNX export of the CLIP Surgery encoders: parity with torch on the shared fixture model, the
manifest, static shapes and fp16."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_onnxruntime_gpu_build
from grefine_quality.ensemble import TextEnsemble

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

MODEL_FILE = "tiny_clip_vitb16_openai_format.safetensors"


@pytest.fixture(scope="module")
def fixture_clip(clip_fixture_dir: Path):
    from grefine_clip import SurgeryCLIP

    return SurgeryCLIP.from_pretrained(clip_fixture_dir / MODEL_FILE)


@pytest.fixture(scope="module")
def cpu_config():
    from grefine_onnx.providers import SessionConfig

    return SessionConfig(providers=("cpu",))


@pytest.fixture(scope="module")
def exported(fixture_clip, tmp_path_factory) -> tuple[Path, dict]:
    """One dynamic-batch float32 export of the fixture model for the whole module."""
    from grefine_onnx.export import ExportOptions, export_clip

    out = tmp_path_factory.mktemp("onnx_fixture")
    return out, export_clip(fixture_clip, out, ExportOptions())


@pytest.fixture(scope="module")
def onnx_clip(exported, cpu_config):
    from grefine_onnx.backend import OnnxSurgeryCLIP

    return OnnxSurgeryCLIP.from_export(exported[0], cpu_config)


def _maxdiff(a, b) -> float:
    a = a.cpu().numpy() if hasattr(a, "cpu") else np.asarray(a)
    b = b.cpu().numpy() if hasattr(b, "cpu") else np.asarray(b)
    return float(np.abs(a - b).max())


def test_image_graph_is_the_surgery_encoder_for_batch_1_and_4(
    exported, fixture_clip, cpu_config, clip_fixture_dir
):
    from grefine_onnx.session import OrtGraph

    folder, manifest = exported
    graph = OrtGraph(folder / "image.onnx", manifest["graphs"]["image"], cpu_config)
    gen = torch.Generator().manual_seed(1)
    x4 = torch.randn((4, 3, 224, 224), generator=gen)
    out4 = graph(x4)
    out1 = graph(x4[:1])  # the same exported model, another batch size
    surgery = fixture_clip.encode_image(x4)
    plain = fixture_clip.encode_image(x4, surgery=False)
    assert out4.shape == (4, 197, 96) and out1.shape == (1, 197, 96)
    assert _maxdiff(out4, surgery) <= 1e-4
    assert _maxdiff(out1, surgery[:1]) <= 1e-4
    # The graph holds the v-v surgery: its patch tokens are not plain CLIP's.
    assert _maxdiff(out4[:, 1:], plain[:, 1:]) > 1e-2
    # ... and against the reference CLIP Surgery outputs of the shared fixture.
    ref = np.load(clip_fixture_dir / "expected" / "noise_224.npz")
    got = graph(ref["pixel_values"])
    assert _maxdiff(got, ref["image_features_raw"]) <= 1e-4


def test_text_graph_matches_torch_for_any_length_and_batch(exported, fixture_clip, cpu_config):
    from grefine_onnx.session import OrtGraph

    folder, manifest = exported
    graph = OrtGraph(folder / "text.onnx", manifest["graphs"]["text"], cpu_config)
    ids = fixture_clip.tokenize(["cat", "a photo of a dog.", "", "tree", "a bad photo of the cat."])
    ref = fixture_clip.encode_text(ids, cut=False)
    longest = int(ids.argmax(-1).max()) + 1
    for length in (77, longest):
        got = graph(ids[:, :length])
        assert got.shape == (5, 96)
        assert _maxdiff(got, ref) <= 1e-4
    assert _maxdiff(graph(ids[:1, :longest]), ref[:1]) <= 1e-4


def test_prompt_graph_matches_torch_on_the_pq_embeddings(
    exported, fixture_clip, cpu_config, clip_fixture_dir
):
    from grefine_onnx.session import OrtGraph

    folder, manifest = exported
    graph = OrtGraph(folder / "prompt_text.onnx", manifest["graphs"]["prompt_text"], cpu_config)
    pq = np.load(clip_fixture_dir / "expected" / "pq_text.npz")
    factors = ("overall", "technical", "rational", "natural")
    emb = torch.from_numpy(np.concatenate([pq[f"{f}_text_embed"] for f in factors])).float()
    expected = np.concatenate([pq[f"{f}_text_features"] for f in factors])  # reference PQ-Map
    ref = fixture_clip.encode_prompt_embeddings(emb)
    got = graph(emb[:, :21])  # all four factors in one batch of 8
    assert got.shape == (8, 96)
    assert _maxdiff(got, ref) <= 1e-4
    assert _maxdiff(got, expected) <= 1e-4
    assert _maxdiff(graph(emb[:2, :21]), ref[:2]) <= 1e-4


def test_backend_ensemble_matches_reference_text_features(onnx_clip, clip_fixture_dir):
    txt = np.load(clip_fixture_dir / "expected" / "text.npz")
    ens = TextEnsemble(onnx_clip).encode(["cat", "dog", "tree"])
    assert _maxdiff(ens, txt["ensemble_text_features"]) <= 1e-4
    assert onnx_clip.providers == ["CPUExecutionProvider"] and not onnx_clip.on_gpu
    with pytest.raises(Exception, match="surgery=True"):
        onnx_clip.encode_image(torch.zeros(1, 3, 224, 224), surgery=False)


def test_manifest_records_hash_opset_shapes_dtype_and_version(exported, fixture_clip):
    from grefine_onnx.hashing import clip_weights_sha256, file_sha256
    from grefine_onnx.manifest import read_manifest

    from grefine_core import __version__

    folder, manifest = exported
    on_disk = read_manifest(folder)
    assert on_disk == json.loads(json.dumps(manifest))
    assert manifest["source"]["weights_sha256"] == clip_weights_sha256(fixture_clip)
    assert manifest["opset"] == 17 and manifest["dtype"] == "float32" and not manifest["static"]
    assert manifest["versions"]["grefine"] == __version__
    image = manifest["graphs"]["image"]
    assert image["inputs"]["pixel_values"]["shape"] == ["batch", 3, 224, 224]
    assert image["outputs"]["tokens"]["shape"] == ["batch", 197, 96]
    assert manifest["graphs"]["text"]["inputs"]["token_ids"]["shape"] == ["batch", "length"]
    for info in manifest["graphs"].values():
        path = folder / info["file"]
        assert file_sha256(path) == info["sha256"] and path.stat().st_size == info["bytes"]
    # The manifest's shapes are the graph's.
    sess = ort.InferenceSession(str(folder / "image.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", 3, 224, 224]
    import onnx

    opsets = {o.domain: o.version for o in onnx.load(str(folder / "image.onnx")).opset_import}
    assert opsets[""] == 17


def test_static_export_pads_and_chunks_to_the_fixed_batch(fixture_clip, tmp_path, cpu_config):
    from grefine_onnx.export import ExportOptions, export_clip
    from grefine_onnx.session import OrtGraph

    opts = ExportOptions(
        static=True, static_image_batch=2, static_text_batch=4, parts=("image", "text")
    )
    manifest = export_clip(fixture_clip, tmp_path, opts)
    assert manifest["graphs"]["image"]["inputs"]["pixel_values"]["shape"] == [2, 3, 224, 224]
    assert manifest["graphs"]["text"]["inputs"]["token_ids"]["shape"] == [4, 77]
    sess = ort.InferenceSession(str(tmp_path / "text.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [4, 77]
    image = OrtGraph(tmp_path / "image.onnx", manifest["graphs"]["image"], cpu_config)
    x = torch.randn((3, 3, 224, 224), generator=torch.Generator().manual_seed(2))
    assert _maxdiff(image(x), fixture_clip.encode_image(x)) <= 1e-4  # 3 = 2 + 1 padded
    text = OrtGraph(tmp_path / "text.onnx", manifest["graphs"]["text"], cpu_config)
    ids = fixture_clip.tokenize(["cat", "dog", "a tree", "sky", "x", "a photo of a cat"])
    short = ids[:, : int(ids.argmax(-1).max()) + 1]  # padded back to 77 inside
    assert _maxdiff(text(short), fixture_clip.encode_text(ids, cut=False)) <= 1e-4


def test_fp16_export_is_float16_and_close(fixture_clip, tmp_path, cpu_config):
    from grefine_onnx.export import ExportOptions, export_clip
    from grefine_onnx.session import OrtGraph

    manifest = export_clip(fixture_clip, tmp_path, ExportOptions(fp16=True, parts=("image",)))
    assert manifest["dtype"] == "float16"
    import onnx

    model = onnx.load(str(tmp_path / "image.onnx"))
    types = {init.data_type for init in model.graph.initializer if len(init.dims) >= 2}
    assert onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.FLOAT not in types
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 IO
    assert next(fixture_clip.visual.parameters()).dtype == torch.float32  # source untouched
    graph = OrtGraph(tmp_path / "image.onnx", manifest["graphs"]["image"], cpu_config)
    x = torch.randn((2, 3, 224, 224), generator=torch.Generator().manual_seed(3))
    assert _maxdiff(graph(x), fixture_clip.encode_image(x)) <= 5e-2


def test_io_binding_path_gives_the_same_tokens(exported, cpu_config):
    import dataclasses

    from grefine_onnx.session import OrtGraph

    folder, manifest = exported
    info = manifest["graphs"]["image"]
    bound = OrtGraph(folder / "image.onnx", info, dataclasses.replace(cpu_config, io_binding="on"))
    plain = OrtGraph(folder / "image.onnx", info, cpu_config)
    assert bound.io_binding and not plain.io_binding
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(bound(x), plain(x))


def test_bad_export_options_are_clear_errors():
    from grefine_onnx.export import ExportOptions

    from grefine_core.errors import ConfigError

    with pytest.raises(ConfigError, match="opset must be >= 17"):
        ExportOptions(opset=13)
    with pytest.raises(ConfigError, match="unknown ONNX graph"):
        ExportOptions(parts=("vision",))


@needs_onnxruntime_gpu_build
def test_a_provider_one_session_loses_is_reported_once(exported, caplog):
    """ORT itself drops CUDA here (no GPU); the backend warns once, not once per graph."""
    import logging

    from grefine_onnx.backend import OnnxSurgeryCLIP
    from grefine_onnx.providers import SessionConfig

    config = SessionConfig(providers=("cuda", "cpu"), check_driver=False)
    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        clip = OnnxSurgeryCLIP.from_export(exported[0], config)
    if clip.on_gpu:
        pytest.skip("this machine has a usable GPU: nothing falls back")
    assert caplog.text.count("CUDAExecutionProvider was requested but the session runs on") == 1
    assert all(g.providers == ["CPUExecutionProvider"] for g in clip.graphs.values())
    assert str(clip.device) == "cpu"


def test_gpu_only_provider_list_still_opens_on_the_cpu(exported, caplog):
    """``providers = ["cuda"]`` on a machine where CUDA cannot start: every graph falls back to
    the CPU provider with a warning (it used to fail building the next session's config)."""
    import logging

    from grefine_onnx.backend import OnnxSurgeryCLIP
    from grefine_onnx.providers import SessionConfig

    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        clip = OnnxSurgeryCLIP.from_export(exported[0], SessionConfig(providers=("cuda",)))
    if clip.on_gpu:
        pytest.skip("this machine has a usable GPU: nothing falls back")
    assert all(g.providers == ["CPUExecutionProvider"] for g in clip.graphs.values())
    assert "'cuda'" in caplog.text or "CUDAExecutionProvider" in caplog.text
    assert clip.encode_image(torch.zeros(1, 3, 224, 224)).shape == (1, 197, 96)
