"""CLIP Surgery backbone (docs/indicators.md) against the shared reference fixtures, plus bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from grefine_quality import ops  # noqa: E402
from grefine_quality.ensemble import TextEnsemble  # noqa: E402
from PIL import Image  # noqa: E402

from grefine_core.errors import ConfigError, InputError, MissingWeightsError  # noqa: E402

IMAGES = ("gradient_256", "noise_224")
MODEL_FILE = "tiny_clip_vitb16_openai_format.safetensors"


@pytest.fixture(scope="module")
def manifest(clip_fixture_dir: Path) -> dict:
    return json.loads((clip_fixture_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def fixture_clip(clip_fixture_dir: Path):
    from grefine_clip import SurgeryCLIP

    return SurgeryCLIP.from_pretrained(clip_fixture_dir / MODEL_FILE)


@pytest.fixture(scope="module")
def fixture_state_dict(clip_fixture_dir: Path) -> dict:
    from grefine_clip.loading import read_state_dict_file

    return read_state_dict_file(clip_fixture_dir / MODEL_FILE)


def _atol(manifest: dict, npz: str, key: str) -> float:
    return float(manifest["arrays"][f"expected/{npz}.npz"][key]["atol"])


def _close(actual, expected, atol: float, what: str) -> None:
    a = np.asarray(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != {expected.shape}"
    diff = float(np.abs(a.astype(np.float64) - expected).max()) if a.size else 0.0
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > atol {atol}"


@pytest.mark.parametrize("name", IMAGES)
def test_image_side_reproduces_fixture(fixture_clip, clip_fixture_dir, manifest, name):
    clip = fixture_clip
    exp = np.load(clip_fixture_dir / "expected" / f"{name}.npz")
    txt = np.load(clip_fixture_dir / "expected" / "text.npz")
    image = Image.open(clip_fixture_dir / "images" / f"{name}.png")
    h, w = image.height, image.width
    tol = lambda key: _atol(manifest, name, key)  # noqa: E731

    x = clip.preprocess(image)
    _close(x.numpy(), exp["pixel_values"], tol("pixel_values"), "pixel_values")
    with torch.inference_mode():
        x_new, x_ori = clip.visual.forward_streams(x)
    _close(
        x_new.numpy(),
        exp["visual_transformer_out_new"],
        tol("visual_transformer_out_new"),
        "new stream",
    )
    _close(
        x_ori.numpy(),
        exp["visual_transformer_out_ori"],
        tol("visual_transformer_out_ori"),
        "ori stream",
    )
    raw = clip.encode_image(x)
    _close(raw.numpy(), exp["image_features_raw"], tol("image_features_raw"), "surgery tokens")
    plain = clip.encode_image(x, surgery=False)
    _close(
        plain.numpy(),
        exp["plain_clip_image_tokens"],
        tol("plain_clip_image_tokens"),
        "plain tokens",
    )
    fn = ops.normalise_tokens(raw)
    _close(
        fn.numpy(), exp["image_features_tokennorm"], tol("image_features_tokennorm"), "token norm"
    )

    ens = TextEnsemble(clip).encode(["cat", "dog", "tree"])
    red = TextEnsemble(clip).redundant()
    _close(ens.numpy(), txt["ensemble_text_features"], 1e-5, "ensemble")
    cases = {
        "raw": fn @ ens.t(),
        "fs_auto": ops.feature_surgery(fn, ens),
        "fs_redundant": ops.feature_surgery(fn, ens, red),
        "fs_single": ops.feature_surgery(fn, ens[:1], red),
    }
    for key, sim in cases.items():
        _close(sim.numpy(), exp[f"sim_{key}"], tol(f"sim_{key}"), f"sim_{key}")
        maps = ops.similarity_map(sim[:, 1:], size=(h, w))
        _close(maps.numpy(), exp[f"map_{key}"], tol(f"map_{key}"), f"map_{key}")


def test_text_side_reproduces_fixture(fixture_clip, clip_fixture_dir, manifest):
    clip = fixture_clip
    txt = np.load(clip_fixture_dir / "expected" / "text.npz")
    tol = lambda key: _atol(manifest, "text", key)  # noqa: E731
    prompts = ["a photo of a cat.", "a photo of a dog.", "high quality", "low quality"]
    np.testing.assert_array_equal(clip.tokenize(prompts).numpy(), txt["plain_prompt_tokens"])
    for word, key in (("cat", "templates_cat_tokens"), ("", "templates_empty_tokens")):
        ids = clip.tokenize([t.replace("{}", word) for t in clip.templates]).numpy()
        np.testing.assert_array_equal(ids, txt[key])
    tokens = torch.from_numpy(txt["plain_prompt_tokens"])
    _close(
        clip.encode_text(tokens).numpy(),
        txt["plain_prompt_text_features_cs"],
        tol("plain_prompt_text_features_cs"),
        "cut",
    )
    _close(
        clip.encode_text(prompts, cut=False).numpy(),
        txt["plain_prompt_text_features_plain"],
        tol("plain_prompt_text_features_plain"),
        "full",
    )
    _close(
        TextEnsemble(clip).encode(["cat", "dog", "tree"]).numpy(),
        txt["ensemble_text_features"],
        tol("ensemble_text_features"),
        "ensemble",
    )
    _close(
        TextEnsemble(clip).redundant().numpy(),
        txt["redundant_features_empty"],
        tol("redundant_features_empty"),
        "redundant",
    )


def test_shipped_templates_match_reference_order(fixture_clip, clip_fixture_dir):
    reference = json.loads((clip_fixture_dir / "prompt_templates.json").read_text())
    assert fixture_clip.templates == reference
    assert len(fixture_clip.templates) == 85


def test_openai_state_dict_entry_point(fixture_state_dict, fixture_clip):
    from grefine_clip import SurgeryCLIP

    clip = SurgeryCLIP.from_openai_state_dict(dict(fixture_state_dict))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    a, b = clip.encode_image(x), fixture_clip.encode_image(x)
    assert a.shape == (2, 197, 96)
    assert torch.equal(a, b)
    # Row 0 is plain CLIP's image embedding.
    with torch.inference_mode():
        emb = clip.model.encode_image(x)
    assert float((a[:, 0] - emb).abs().max()) < 1e-4


def test_ensemble_cache_and_chunking(fixture_clip):
    clip = fixture_clip
    texts = ["a red hat", "cat", "an extremely long description of a strange old wooden ship"]
    strings = [t.replace("{}", x) for x in texts for t in clip.templates]
    one_chunk = clip.encode_texts(strings)
    tiny_chunks = clip.encode_texts(strings, max_tokens=64)
    assert float((one_chunk - tiny_chunks).abs().max()) < 1e-5
    ensemble = TextEnsemble(clip)
    first = ensemble.encode(texts)
    misses = ensemble.cache.misses
    again = ensemble.encode(list(reversed(texts)))
    assert ensemble.cache.misses == misses  # all three were cache hits
    assert torch.equal(again, first.flip(0))
    assert torch.allclose(first.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(ensemble.encode(texts, use_cache=False), first, atol=1e-6)
    ensemble.cache.resize(1)
    assert len(ensemble.cache) == 1


def test_similarity_map_edges():
    const = torch.full((1, 4, 2), 0.3)
    maps = ops.similarity_map(const, size=(5, 7))
    assert maps.shape == (1, 5, 7, 2)
    assert torch.isfinite(maps).all() and float(maps.abs().max()) == 0.0
    # Row-major (y, x) patches and (H, W) output: the top-right patch is hot.
    s = torch.zeros(1, 4, 1)
    s[0, 1, 0] = 1.0
    m = ops.similarity_map(s, size=(40, 60))[0, :, :, 0].numpy()
    assert m.shape == (40, 60)
    assert m[5, 55] > 0.9 and m[35, 5] < 0.1 and m[5, 5] < 0.1


def test_other_input_sizes_resize_positional_embedding(fixture_clip):
    x = fixture_clip.preprocess(Image.new("RGB", (100, 60), (10, 200, 30)), size=448)
    assert x.shape == (1, 3, 448, 448)
    tokens = fixture_clip.encode_image(x)
    assert tokens.shape == (1, 1 + 28 * 28, 96) and torch.isfinite(tokens).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda a: Image.fromarray(a[:, :, 0]),  # L
        lambda a: Image.fromarray(np.dstack([a, np.full(a.shape[:2], 128, np.uint8)])),  # RGBA
        lambda a: Image.fromarray(a[:, :, 0].astype(np.uint16) * 257),  # I;16
        lambda a: Image.fromarray(a[:, :, 0].astype(np.int32) * 257, mode="I"),  # 16-bit PNG as I
        lambda a: Image.fromarray(a).convert("P"),
        lambda a: Image.fromarray(a).convert("CMYK"),
        lambda a: Image.fromarray(a[:, :, 0].astype(np.float32) / 255.0, mode="F"),
        lambda a: a,  # numpy uint8 HWC
    ],
    ids=["L", "RGBA", "I;16", "I", "P", "CMYK", "F", "ndarray"],
)
def test_image_modes(fixture_clip, make):
    # A smooth image: 8-bit resizing clips between its two passes, float resizing does not,
    # so noise would differ by more than rounding.
    yy, xx = np.mgrid[0:37, 0:53]
    rgb = np.stack([xx * 4, yy * 6, (xx + yy) * 2], axis=2).astype(np.uint8)
    gray = np.repeat(rgb[:, :, :1], 3, axis=2)
    image = make(rgb)
    x = fixture_clip.preprocess(image)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    if getattr(image, "mode", "") in ("I;16", "I", "F"):
        # High bit depth is rescaled, not clipped: same as the 8-bit grayscale image.
        ref = fixture_clip.preprocess(Image.fromarray(gray))
        assert float((x - ref).abs().max()) < 0.03
    elif getattr(image, "mode", "") == "L":
        # Resize, then RGB: exactly the three-channel gray image.
        assert torch.equal(x, fixture_clip.preprocess(Image.fromarray(gray)))
    elif isinstance(image, np.ndarray):
        assert torch.equal(x, fixture_clip.preprocess(Image.fromarray(rgb)))


def test_missing_and_misshaped_keys(fixture_state_dict):
    from grefine_clip import SurgeryCLIP

    sd = dict(fixture_state_dict)
    del sd["visual.proj"]
    with pytest.raises(InputError, match="visual.proj"):
        SurgeryCLIP.from_openai_state_dict(sd)
    sd = dict(fixture_state_dict)
    del sd["visual.transformer.resblocks.3.mlp.c_fc.bias"]
    with pytest.raises(InputError, match=r"missing keys.*resblocks\.3\.mlp\.c_fc\.bias"):
        SurgeryCLIP.from_openai_state_dict(sd)
    sd = dict(fixture_state_dict)
    sd["ln_final.bias"] = torch.zeros(7)
    with pytest.raises(InputError, match=r"mis-shaped.*ln_final\.bias.*\(7,\).*\(512,\)"):
        SurgeryCLIP.from_openai_state_dict(sd)
    with pytest.raises(InputError, match="ResNet"):
        SurgeryCLIP.from_openai_state_dict({"visual.layer1.0.conv1.weight": torch.zeros(1)})


def test_too_few_vision_layers(fixture_state_dict):
    from grefine_clip import SurgeryCLIP

    sd = {
        k: v
        for k, v in fixture_state_dict.items()
        if not any(k.startswith(f"visual.transformer.resblocks.{i}.") for i in (0, 1, 2))
    }
    with pytest.raises(InputError, match="4 transformer layers.*at least 6"):
        SurgeryCLIP.from_openai_state_dict(sd)


def test_corrupted_weights_file(tmp_path):
    from grefine_clip import SurgeryCLIP

    bad = tmp_path / "clip.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="cannot read CLIP weights"):
        SurgeryCLIP.from_pretrained(bad)
    with pytest.raises(MissingWeightsError, match="no CLIP weights in folder"):
        SurgeryCLIP.from_pretrained(_empty(tmp_path))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        SurgeryCLIP.from_pretrained(tmp_path / "nope" / "ViT-B-16.pt")
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        SurgeryCLIP.from_pretrained("ViT-Q-99")
    with pytest.raises(ConfigError, match="unknown pretrained tag"):
        SurgeryCLIP.from_pretrained("ViT-B-16", "no-such-tag")


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_named_model_not_cached_fails_fast(tmp_path, monkeypatch):
    from grefine_clip import SurgeryCLIP

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match=r"not available offline.*open_clip.create_model"):
        SurgeryCLIP.from_pretrained("ViT-B-16-quickgelu", "openai", cache_dir=str(tmp_path))


def test_tiny_is_deterministic_and_surgery_compatible():
    from grefine_clip import SurgeryCLIP

    a, b = SurgeryCLIP.tiny(seed=0), SurgeryCLIP.tiny(seed=0)
    assert len(a.visual.blocks) >= 7 and a.text_width == 512
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.encode_image(x), b.encode_image(x))
    assert torch.equal(a.encode_text(["a cat"]), b.encode_text(["a cat"]))
    c = SurgeryCLIP.tiny(seed=1)
    assert not torch.equal(a.encode_image(x), c.encode_image(x))
    assert SurgeryCLIP.from_pretrained("tiny").encode_image(x).shape == (1, 197, a.embed_dim)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_modules_trace(fixture_clip):
    """The encoders are plain tensor-to-tensor modules (what ONNX export traces)."""
    clip = fixture_clip
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ids = clip.tokenize(["a cat", "a photo of a dog"])[:, :8]
    with torch.inference_mode():
        traced = torch.jit.trace(clip.visual, (x,), check_trace=False)
        assert torch.allclose(traced(x), clip.visual(x), atol=1e-5)
        traced_text = torch.jit.trace(clip.text, (ids,), check_trace=False)
        assert torch.allclose(traced_text(ids), clip.text(ids), atol=1e-5)
        emb = torch.randn(2, 21, 512)
        traced_pq = torch.jit.trace(clip.prompt_text, (emb,), check_trace=False)
        assert torch.allclose(traced_pq(emb), clip.prompt_text(emb), atol=1e-5)


def test_plugin_modules_import_without_torch():
    code = (
        "import sys, grefine_clip, grefine_clip.plugin, grefine_quality.perceptual_plugin, "
        "grefine_quality.alignment_plugin, grefine_clip.settings, grefine_quality.constants\n"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reduced_precision_and_device_errors():
    """bfloat16 runs end to end (the CUDA fp16/bf16 path uses the same casts); no CUDA -> clear error."""
    from grefine_clip import SurgeryCLIP
    from grefine_quality import AlignmentQuality, PerceptualQuality
    from grefine_quality.pq import PQPrompts

    from grefine_core.types import ParsedPrompt, Phrase

    image = Image.new("RGB", (64, 48), (30, 150, 60))
    prompts = PQPrompts.random(512)
    parsed = ParsedPrompt("a red cat", [Phrase("red cat", "cat", (2, 9), 0, (6, 9))], "hand")
    results = []
    for dtype in ("float32", "bfloat16"):
        clip = SurgeryCLIP.tiny(seed=0).to("cpu", dtype)
        r = PerceptualQuality(clip, prompts)(image)
        a = AlignmentQuality(clip)(image, parsed)
        assert r.map.dtype == a.defect_map.dtype == np.float32
        assert np.isfinite(r.map).all() and np.isfinite(a.defect_map).all()
        results.append((r.score, a.score))
    assert results[1][0] == pytest.approx(results[0][0], abs=0.05)
    assert results[1][1] == pytest.approx(results[0][1], abs=0.05)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda"):
            SurgeryCLIP.tiny().to("cuda")
