"""The planted-truth backbone itself (docs/behaviour.md): each of its targets, measured through the
real PQ and AQ code. What it proves: the oracle is a usable instrument; not anything about CLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from grefine_clip.oracle_scenes import BALL, BOX, SCENES, Shape, draw_scene
from grefine_quality.ensemble import TextEnsemble
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def oracle():
    from grefine_clip.oracle import OracleCLIP

    return OracleCLIP()


@pytest.fixture(scope="module")
def pq(oracle):
    from grefine_quality import PerceptualQuality
    from grefine_quality.pq import PQPrompts

    prompts = PQPrompts(embeddings=oracle.planted_pq_prompts(), files={})
    return PerceptualQuality(oracle, prompts, compat="paper")


@pytest.fixture(scope="module")
def aq(oracle):
    from grefine_quality import AlignmentQuality

    return AlignmentQuality(oracle)


def token_good(pq, image) -> np.ndarray:
    """Per-token probability of "good" (overall factor) ``[N]``."""
    tokens = pq.clip.encode_image(pq.clip.preprocess(image))
    return pq.logits(tokens)[0].reshape(-1, 4, 2).softmax(-1)[:, 0, 0].numpy()


def scores(aq, image, texts):
    tokens = aq.clip.encode_image(aq.clip.preprocess(image))
    s, _ = aq.surgery_scores(tokens, texts, (image.height, image.width))
    return dict(zip(texts, s, strict=True))


def test_clean_patches_are_good_and_noisy_ones_bad(pq):
    clean = token_good(pq, SCENES["clean"].image())
    assert clean.min() >= 0.99  # every patch, edges of the drawn shapes included
    noisy = SCENES["noisy"]
    good = token_good(pq, noisy.image())[1:].reshape(14, 14)
    assert good[7:, 7:].max() <= 0.05  # sigma 40 in the lower-right quadrant
    assert good[:7, :].min() >= 0.99 and good[:, :7].min() >= 0.99


@pytest.mark.parametrize("sigma", [25.0, 40.0])
def test_noise_is_read_at_native_resolution(sigma):
    """Resizing a 512 px scene to 224 px would shrink sigma 40 to about 17 (good); the oracle
    estimates it on the native pixels."""
    from grefine_clip.oracle_scene import read_scene

    image = draw_scene((BALL,), size=512, noise_box=(0, 0, 512, 512), sigma=sigma)
    noise = read_scene(image).noise
    assert np.median(noise) == pytest.approx(sigma, rel=0.25)
    assert read_scene(draw_scene((BALL, BOX), size=512)).noise.max() <= 1.0  # clean edges


def test_class_token_takes_the_worst_tenth_of_patches(pq):
    # 1 patch column of 14 (7 %) noisy: the class token stays good; 2 columns (14 %): bad.
    size = 252  # 18 px patches
    one = draw_scene((), size=size, noise_box=(0, 0, 18, size))
    two = draw_scene((), size=size, noise_box=(0, 0, 36, size))
    assert pq(one).score >= 0.95
    assert pq(two).score <= 0.05


def test_alignment_targets(aq):
    image = SCENES["clean"].image()  # a red ball and a green box
    s = scores(
        aq,
        image,
        [
            "ball",
            "red ball",
            "blue ball",
            "box",
            "green box",
            "yellow box",
            "tree",
            "yellow tree",
            "a red ball and a green box",
            "teddy bear",
            "wooden table",
        ],
    )
    assert s["ball"] >= 0.9 and s["box"] >= 0.9  # present nouns
    assert s["red ball"] >= s["ball"] + 0.02 and s["green box"] >= s["box"] + 0.02
    assert s["blue ball"] <= 0.3 and s["yellow box"] <= 0.3  # wrong colours
    assert s["tree"] <= 0.2 and s["yellow tree"] <= 0.2  # a missing noun, and its phrase
    assert s["a red ball and a green box"] >= 0.97  # fully matched prompt
    # Words outside the lexicon count as present and matched: clear of the 0.5 bound.
    assert s["teddy bear"] >= 0.8 and s["wooden table"] == pytest.approx(s["teddy bear"])


def test_colour_binds_to_the_next_lexicon_noun():
    from grefine_clip.oracle import read_text

    assert read_text("a red ball and a green box") == ([("ball", "red"), ("box", "green")], True)
    assert read_text("red and yellow trees") == ([("tree", "red"), ("tree", "yellow")], True)
    assert read_text("ball") == ([("ball", None)], False)
    assert read_text("a red car") == ([], True)  # bound to no noun: another word
    assert read_text("") == ([], False)


def test_a_nouns_map_lights_only_its_own_shape(aq):
    image = SCENES["clean"].image()
    tokens = aq.clip.encode_image(aq.clip.preprocess(image))
    _, maps = aq.surgery_scores(tokens, ["ball", "box", "tree"], (256, 256))
    for m, shape, other in ((maps[0], BALL, BOX), (maps[1], BOX, BALL)):
        x0, y0, x1, y1 = shape.box()
        ox0, oy0, ox1, oy1 = other.box()
        cx, cy = shape.centre
        assert m[cy - 10 : cy + 10, cx - 10 : cx + 10].min() >= 0.9
        assert m[oy0:oy1, ox0:ox1].max() <= 0.05  # the other object is dark
        assert m[200:, :].max() <= 0.05  # the empty lower half too
    assert not maps[2].any()  # nothing anywhere for a missing noun (flat, not rounding noise)


def test_empty_string_is_the_neutral_direction_shared_by_every_token(oracle):
    from grefine_clip.oracle import R_NEUTRAL

    r = TextEnsemble(oracle).redundant()[0].numpy()
    tokens = oracle.encode_image(oracle.preprocess(SCENES["noisy"].image()))[0].numpy()
    assert np.count_nonzero(r) == 1
    np.testing.assert_allclose(tokens @ r, R_NEUTRAL, atol=1e-7)  # cancels evenly
    np.testing.assert_allclose(np.linalg.norm(tokens, axis=1), 1.0, atol=1e-6)


def test_needs_neither_prompt_files_nor_shared_data(monkeypatch, tmp_path):
    from grefine_core import GRefine, load_config

    monkeypatch.setenv("GREFINE_SHARED_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("GREFINE_PQ_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("HOME", str(tmp_path))

    def no_files(*args, **kwargs):
        raise AssertionError("the oracle must not look for PQ prompt files")

    monkeypatch.setattr("grefine_quality.pq.load_pq_prompts", no_files)
    r = GRefine(load_config(preset="oracle", environ={})).assess(
        SCENES["clean"].image(), "a red ball"
    )
    assert r.p >= 0.95
    assert (
        r.perceptual.info["backbone"] == "oracle" and "planted truth" in r.perceptual.info["notice"]
    )
    assert sorted(r.perceptual.info["objects"]) == ["green box", "red ball"]


def test_a_photo_is_flagged_and_still_runs(oracle, caplog):
    photo = Image.open(ROOT / "examples" / "images" / "cat_table.png")
    notes = oracle.notes(photo)
    assert (
        notes["off_lexicon"] > 0.5 and "nothing the oracle preset reports means" in notes["warning"]
    )
    with caplog.at_level("WARNING", logger="grefine.clip"):
        tokens = oracle.preprocess(photo)
    assert tokens.shape == (1, 197, oracle.embed_dim)  # and it still runs
    assert "outside its lexicon" in caplog.text
    assert "warning" not in oracle.notes(SCENES["clean"].image())


def test_shapes_are_classified():
    from grefine_clip.oracle_scene import read_scene

    tree = Shape("tree", "yellow", (128, 190), 90)
    found = read_scene(draw_scene((BALL, BOX, tree))).present()
    assert found == {"ball": "red", "box": "green", "tree": "yellow"}


def test_oracle_is_not_a_clip_for_onnx_or_weights():
    from grefine_clip.model import SurgeryCLIP

    from grefine_core.errors import ConfigError

    with pytest.raises(ConfigError, match="planted-truth backbone, not a CLIP"):
        SurgeryCLIP.from_pretrained("oracle")
