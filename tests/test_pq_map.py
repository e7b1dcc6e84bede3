"""PQ-Map perceptual indicator (docs/indicators.md) against the reference fixtures; prompt loading errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from grefine_core.errors import InputError, MissingWeightsError  # noqa: E402

IMAGES = ("gradient_256", "noise_224")
FACTORS = ("overall", "technical", "rational", "natural")


@pytest.fixture(scope="module")
def manifest(clip_fixture_dir: Path) -> dict:
    return json.loads((clip_fixture_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def clip(clip_fixture_dir: Path):
    from grefine_clip import SurgeryCLIP

    return SurgeryCLIP.from_pretrained(
        clip_fixture_dir / "tiny_clip_vitb16_openai_format.safetensors"
    )


@pytest.fixture(scope="module")
def prompts(pq_embeddings_dir: Path):
    from grefine_quality import load_pq_prompts

    return load_pq_prompts(pq_embeddings_dir)


def _atol(manifest: dict, npz: str, key: str) -> float:
    return float(manifest["arrays"][f"expected/{npz}.npz"][key]["atol"])


def _close(actual, expected, atol: float, what: str) -> None:
    a = np.asarray(actual, dtype=np.float64)
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != {expected.shape}"
    diff = float(np.abs(a - expected).max())
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > atol {atol}"


def test_prompt_embeddings_and_text_features(clip, prompts, clip_fixture_dir, manifest):
    from grefine_quality import PerceptualQuality

    exp = np.load(clip_fixture_dir / "expected" / "pq_text.npz")
    pq = PerceptualQuality(clip, prompts, compat="reference")
    for f, feats in pq.factor_text_features().items():
        np.testing.assert_array_equal(prompts.embeddings[f].numpy(), exp[f"{f}_text_embed"])
        _close(
            feats.numpy(),
            exp[f"{f}_text_features"],
            _atol(manifest, "pq_text", f"{f}_text_features"),
            f,
        )


@pytest.mark.parametrize("name", IMAGES)
def test_reference_compat_reproduces_pq_map_py(clip, prompts, clip_fixture_dir, manifest, name):
    from grefine_quality import PerceptualQuality

    exp = np.load(clip_fixture_dir / "expected" / f"{name}.npz")
    image = Image.open(clip_fixture_dir / "images" / f"{name}.png")
    pq = PerceptualQuality(clip, prompts, compat="reference")
    r = pq(image)
    tol = lambda key: _atol(manifest, name, key)  # noqa: E731
    assert r.map.dtype == np.float32 and r.map.shape == (image.height, image.width)
    _close(r.map, exp["pq_overall_map"], tol("pq_overall_map"), "overall map")
    np.testing.assert_array_equal(r.map, r.factor_maps["overall"])  # reference: overall map only
    logits = pq.logits(clip.encode_image(clip.preprocess(image)))
    for i, f in enumerate(FACTORS):
        _close(r.factor_scores[f], exp[f"pq_{f}_score"], tol(f"pq_{f}_score"), f"{f} score")
        _close(
            logits[..., 2 * i : 2 * i + 2].numpy(),
            exp[f"pq_{f}_logits"],
            tol(f"pq_{f}_logits"),
            f"{f} logits",
        )
    _close(r.score, exp["pq_multi_score"], tol("pq_multi_score"), "multi (0.935 for all)")


@pytest.mark.parametrize("name", IMAGES)
def test_paper_compat_reproduces_variants(clip, prompts, clip_fixture_dir, manifest, name):
    from grefine_quality import PerceptualQuality
    from grefine_quality.constants import PAPER_CASK_BOUNDS
    from grefine_quality.ops import cask_score

    exp = np.load(clip_fixture_dir / "expected" / f"{name}.npz")
    image = Image.open(clip_fixture_dir / "images" / f"{name}.png")
    tol = lambda key: _atol(manifest, name, key)  # noqa: E731
    r = PerceptualQuality(clip, prompts, compat="paper", pq_map="minmax_cask")(image)
    for f in FACTORS:
        key = f"variant_pq_{f}_score_tokennorm"
        _close(r.factor_scores[f], exp[key], tol(key), key)
    key = "variant_pq_overall_map_tokennorm_hw"
    _close(r.factor_maps["overall"], exp[key], tol(key), key)
    # Paper score: the intended bounds on the per-token scores.
    assert r.score == pytest.approx(cask_score(r.factor_scores, PAPER_CASK_BOUNDS), abs=1e-7)
    # The intended-bounds variant is computed on the literal (token-axis) factor scores.
    intended = PerceptualQuality(clip, prompts, compat="reference", cask_bounds=PAPER_CASK_BOUNDS)
    key = "variant_pq_multi_score_intended_bounds"
    _close(intended(image).score, exp[key], tol(key), key)
    # The minmax_cask ablation: cask per pixel over min-max maps, in [0, 1], never above the
    # overall map, exactly P = P_o * prod_i min(P_i / alpha_i, 1).
    assert r.map.shape == (image.height, image.width) and r.map.dtype == np.float32
    assert 0.0 <= float(r.map.min()) and float(r.map.max()) <= 1.0
    assert np.all(r.map <= r.factor_maps["overall"] + 1e-6)
    expected_map = r.factor_maps["overall"].astype(np.float64)
    for f, alpha in zip(("technical", "rational", "natural"), PAPER_CASK_BOUNDS, strict=True):
        expected_map = expected_map * np.minimum(r.factor_maps[f] / alpha, 1.0)
    np.testing.assert_allclose(r.map, np.clip(expected_map, 0.0, 1.0), rtol=0, atol=1e-6)
    assert not np.array_equal(r.map, r.factor_maps["overall"])  # the cask did something here
    no_cask = PerceptualQuality(clip, prompts, compat="paper", pq_map="minmax")(image)
    np.testing.assert_array_equal(no_cask.map, r.factor_maps["overall"])


@pytest.mark.parametrize("name", IMAGES)
def test_paper_absolute_map_is_the_cask_per_token(clip, prompts, clip_fixture_dir, name):
    """docs/indicators.md (paper): P = clip(BIC(cask of the per-token probabilities of "good")), p = its
    class-token value: one scale for p and P, no min-max."""
    import torch
    from grefine_quality import PerceptualQuality
    from grefine_quality.constants import PAPER_CASK_BOUNDS

    image = Image.open(clip_fixture_dir / "images" / f"{name}.png")
    pq = PerceptualQuality(clip, prompts, compat="paper")
    assert pq.pq_map == "absolute"
    r = pq(image)
    logits = pq.logits(clip.encode_image(clip.preprocess(image)))[0].double()  # [N, 8]
    good = torch.softmax(logits.reshape(-1, 4, 2), -1)[..., 0].numpy()  # [N, 4] (numpy here)
    per_token = good[:, 0].copy()
    for i, alpha in enumerate(PAPER_CASK_BOUNDS, start=1):
        per_token *= np.minimum(good[:, i] / alpha, 1.0)
    assert r.score == pytest.approx(per_token[0], abs=1e-6)
    side = round((per_token.size - 1) ** 0.5)
    grid = torch.from_numpy(per_token[1:].reshape(1, 1, side, side))
    want = torch.nn.functional.interpolate(
        grid, size=(image.height, image.width), mode="bicubic", align_corners=False
    )[0, 0].clamp(0, 1)
    np.testing.assert_allclose(r.map, want.numpy(), rtol=0, atol=1e-5)
    for i, f in enumerate(FACTORS):  # factor maps on the same absolute scale
        g = torch.from_numpy(good[1:, i].reshape(1, 1, side, side))
        fm = torch.nn.functional.interpolate(
            g, size=(image.height, image.width), mode="bicubic", align_corners=False
        )[0, 0].clamp(0, 1)
        np.testing.assert_allclose(r.factor_maps[f], fm.numpy(), rtol=0, atol=1e-5)
    assert r.info == {"pq_map": "absolute"}


def test_non_square_map_is_hw(clip, prompts):
    from grefine_quality import PerceptualQuality

    image = Image.new("RGB", (90, 40), (200, 30, 30))
    for compat in ("paper", "reference"):
        r = PerceptualQuality(clip, prompts, compat=compat)(image)
        assert r.map.shape == (40, 90)
        assert all(m.shape == (40, 90) for m in r.factor_maps.values())
        assert set(r.factor_scores) == set(FACTORS) and 0.0 <= r.score <= 1.0


def test_batch_equals_one_by_one(clip, prompts, clip_fixture_dir):
    from grefine_quality import PerceptualQuality

    pq = PerceptualQuality(clip, prompts)
    base = Image.open(clip_fixture_dir / "images" / "gradient_256.png")
    images = [
        base,
        Image.open(clip_fixture_dir / "images" / "noise_224.png"),
        base.convert("L").resize((120, 80)),
        base.convert("RGBA"),
        Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257),
    ]
    batched = pq.batch(images, batch_size=3)
    assert len(batched) == len(images)
    for image, rb in zip(images, batched, strict=True):
        r1 = pq(image)
        assert rb.map.shape == r1.map.shape == (image.height, image.width)
        assert rb.score == pytest.approx(r1.score, abs=1e-6)
        np.testing.assert_allclose(rb.map, r1.map, atol=1e-5)
        for f in FACTORS:
            assert rb.factor_scores[f] == pytest.approx(r1.factor_scores[f], abs=1e-6)


def test_prompt_sources(pq_embeddings_dir, prompts, monkeypatch, tmp_path):
    from grefine_quality import load_pq_prompts

    files = {f: pq_embeddings_dir / f"PQ-{f}.pth" for f in FACTORS}
    by_map = load_pq_prompts({f: str(p) for f, p in files.items()})
    by_list = load_pq_prompts([files[f] for f in reversed(FACTORS)])  # named: order is free
    for f in FACTORS:
        assert torch.equal(by_map.embeddings[f], prompts.embeddings[f])
        assert torch.equal(by_list.embeddings[f], prompts.embeddings[f])
    # Search order: $GREFINE_PQ_DIR first.
    monkeypatch.setenv("GREFINE_PQ_DIR", str(pq_embeddings_dir))
    found = load_pq_prompts()
    assert found.files["overall"] == str(pq_embeddings_dir / "PQ-overall.pth")


def test_missing_prompts_offline_message(tmp_path, monkeypatch):
    from grefine_quality import load_pq_prompts

    monkeypatch.setenv("GREFINE_PQ_DIR", str(tmp_path / "pq"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GREFINE_SHARED_DIR", str(tmp_path / "no-shared"))
    with pytest.raises(MissingWeightsError) as err:
        load_pq_prompts()
    msg = str(err.value)
    assert "PQ-overall.pth" in msg and "raw.githubusercontent.com/Q-Future/Q-Refine" in msg
    assert ".cache/grefine/pq_embeddings" in msg and "allow_download" in msg
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_pq_prompts(tmp_path / "nowhere")


def test_wrong_hash_corrupted_and_misshaped(pq_embeddings_dir, tmp_path):
    from grefine_quality import load_pq_prompts

    folder = tmp_path / "pq"
    folder.mkdir()
    for f in FACTORS:
        shutil.copyfile(pq_embeddings_dir / f"PQ-{f}.pth", folder / f"PQ-{f}.pth")
    data = bytearray((folder / "PQ-rational.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "PQ-rational.pth").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"PQ-rational\.pth.*sha256.*re-download"):
        load_pq_prompts(folder)
    # Truncated file with the hash check off: unreadable.
    (folder / "PQ-rational.pth").write_bytes(bytes(data[:1000]))
    with pytest.raises(InputError, match="cannot read PQ prompt file"):
        load_pq_prompts(folder, verify_hash=False)
    # Wrong shapes.
    torch.save(
        {"params": {"prompt_learner.ctx": torch.zeros(2, 4, 512)}}, folder / "PQ-rational.pth"
    )
    with pytest.raises(InputError, match=r"prompt_learner\.ctx.*\[2, 16, width\].*\(2, 4, 512\)"):
        load_pq_prompts(folder, verify_hash=False)


def test_width_mismatch_is_clear(clip):
    from grefine_quality import PerceptualQuality
    from grefine_quality.pq import PQPrompts

    with pytest.raises(InputError, match="width 256.*width 512"):
        PerceptualQuality(clip, PQPrompts.random(width=256))


def _context(preset: str = "tiny", **plugin_settings):
    from grefine_core.config import load_config
    from grefine_core.testing import pipeline_context

    cfg = load_config(preset=preset, environ={}, overrides={"plugins": plugin_settings})
    return pipeline_context(cfg)


def test_plugin_tiny_preset(pq_embeddings_dir, monkeypatch):
    from grefine_quality.clip_pq import plugin as perceptual_plugin

    monkeypatch.setenv("GREFINE_PQ_DIR", str(pq_embeddings_dir))
    ctx = _context()
    image = Image.new("RGB", (64, 48), (120, 60, 30))
    r = perceptual_plugin.grefine_perceptual_map(image=image, context=ctx)
    assert r.map.shape == (48, 64) and r.map.dtype == np.float32 and 0.0 <= r.score <= 1.0
    assert set(r.factor_maps) == set(FACTORS)
    # The tokens are in the run context for AQ; a second call reuses them and the models.
    from grefine_clip.runtime import clip_key, get_clip

    assert clip_key(ctx) in ctx.models
    backbone = get_clip(ctx)
    encoded: list[tuple[int, ...]] = []
    original = backbone.encode_image
    monkeypatch.setattr(
        backbone,
        "encode_image",
        lambda x, surgery=True: encoded.append(tuple(x.shape)) or original(x, surgery),
    )
    again = perceptual_plugin.grefine_perceptual_map(image=image, context=ctx)
    assert encoded == [] and again.score == r.score  # same image, same run: no second forward
    other = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    perceptual_plugin.grefine_perceptual_map(image=other, context=ctx)
    assert encoded == [(1, 3, 224, 224)] and get_clip(ctx) is backbone  # new image, same model


def test_float16_on_cpu_falls_back_to_float32_with_one_warning(monkeypatch, caplog):
    from grefine_clip import runtime

    from grefine_core import placement

    monkeypatch.setattr(placement, "_WARNED_FP16_CPU", set())
    ctx = _context()
    ctx.config = ctx.config.model_copy(update={"dtype": "float16"})
    with caplog.at_level("WARNING", logger="grefine.clip"):
        keys = [runtime.clip_key(ctx) for _ in range(3)]
    assert keys[0][-2:] == ("cpu", "float32") and keys[0] == keys[2]
    assert caplog.text.count("float16 is not supported on the CPU") == 1


def test_bad_compat_is_a_config_error(clip, prompts):
    from grefine_quality import PerceptualQuality

    from grefine_core.errors import ConfigError

    with pytest.raises(ConfigError, match="compat.*'paper' or 'reference'.*'papr'"):
        PerceptualQuality(clip, prompts, compat="papr")


def test_plugin_random_fallback_only_for_tiny(tmp_path, monkeypatch, caplog):
    from grefine_quality.clip_pq import plugin as perceptual_plugin

    monkeypatch.setenv("GREFINE_PQ_DIR", str(tmp_path / "pq"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GREFINE_SHARED_DIR", str(tmp_path / "no-shared"))
    image = Image.new("RGB", (32, 32))
    with caplog.at_level("WARNING", logger="grefine.quality"):
        r = perceptual_plugin.grefine_perceptual_map(image=image, context=_context())
    assert r.map.shape == (32, 32)
    assert "random prompt embeddings" in caplog.text
    ctx = _context(pq={"random_fallback": False})
    with pytest.raises(MissingWeightsError, match="PQ-overall.pth"):
        perceptual_plugin.grefine_perceptual_map(image=image, context=ctx)
