"""AQ-Map alignment indicator, CLIP side (docs/indicators.md) with the defect logic of docs/indicators.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from grefine_core.types import AlignmentResult, ParsedPrompt, Phrase  # noqa: E402

IMAGES = ("gradient_256", "noise_224")


@pytest.fixture(scope="module")
def clip(clip_fixture_dir: Path):
    from grefine_clip import SurgeryCLIP

    return SurgeryCLIP.from_pretrained(
        clip_fixture_dir / "tiny_clip_vitb16_openai_format.safetensors"
    )


def parse_by_hand(prompt: str, parts: list[tuple[str, str | None, int]]) -> ParsedPrompt:
    """Phrases ``(text, noun, parent)``, each text a substring of ``prompt`` found left to right."""
    phrases, cursor = [], 0
    for text, noun, parent in parts:
        start = prompt.index(text, cursor)
        end = start + len(text)
        noun_span = None
        if noun is not None:
            ns = prompt.index(noun, start)
            noun_span = (ns, ns + len(noun))
        phrases.append(Phrase(text, noun, (start, end), parent, noun_span))
        cursor = end
    return ParsedPrompt(prompt=prompt, phrases=phrases, parser="hand")


CAT_DOG_TREE = "a cat under a tree, a dog"


def cat_dog_tree() -> ParsedPrompt:
    return parse_by_hand(
        CAT_DOG_TREE,
        [("cat", "cat", 0), ("under", None, 0), ("tree", "tree", 0), ("dog", "dog", 1)],
    )


@pytest.mark.parametrize("name", IMAGES)
def test_redundant_surgery_maps_reproduce_fixture(clip, clip_fixture_dir, name):
    """The "" redundant feature surgery of CLIP Surgery, through AlignmentQuality."""
    from grefine_quality import AlignmentQuality

    exp = np.load(clip_fixture_dir / "expected" / f"{name}.npz")
    txt = np.load(clip_fixture_dir / "expected" / "text.npz")
    image = Image.open(clip_fixture_dir / "images" / f"{name}.png")
    size = (image.height, image.width)
    aq = AlignmentQuality(clip)
    text, redundant = aq.text_features(["cat", "dog", "tree"])
    np.testing.assert_allclose(text.numpy(), txt["ensemble_text_features"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        redundant.numpy(), txt["redundant_features_empty"], rtol=0, atol=1e-5
    )
    tokens = clip.encode_image(clip.preprocess(image))
    scores, maps = aq.surgery_scores(tokens, ["cat", "dog", "tree"], size)
    expected_maps = exp["map_fs_redundant"][0].transpose(2, 0, 1)
    np.testing.assert_allclose(maps, expected_maps, rtol=0, atol=2e-5)
    expected_scores = 1.0 / (1.0 + np.exp(-10.0 * exp["sim_fs_redundant"][0, 0].astype(np.float64)))
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-5)

    # The same numbers come out of a full call on a hand-parsed prompt.
    r = aq(image, cat_dog_tree())
    assert isinstance(r, AlignmentResult)
    assert [p.text for p in r.phrases] == ["cat", "tree", "dog"]  # the noun-less phrase is skipped
    for p, k in zip(r.phrases, (0, 2, 1), strict=True):
        assert p.map.shape == p.noun_map.shape == size and p.map.dtype == np.float32
        np.testing.assert_allclose(p.map, expected_maps[k], rtol=0, atol=2e-5)
        np.testing.assert_allclose(p.noun_map, expected_maps[k], rtol=0, atol=2e-5)
        assert p.score == pytest.approx(expected_scores[k], abs=1e-5)
        assert p.noun_score == p.score  # phrase text == noun text


def test_score_defects_and_emphasis(clip, clip_fixture_dir):
    from grefine_quality import AlignmentQuality

    image = Image.open(clip_fixture_dir / "images" / "noise_224.png")
    prompt = "a red hat on a small dog"
    parsed = parse_by_hand(prompt, [("red hat", "hat", 0), ("small dog", "dog", 0)])
    r = AlignmentQuality(clip, a_bound=0.5, beta=0.5)(image, parsed)
    assert r.defect_map.shape == (224, 224) and r.defect_map.dtype == np.float32
    # Eq. 8 with the whole prompt scored like a phrase.
    expected = r.prompt_score * np.prod([min(p.score / 0.5, 1.0) for p in r.phrases])
    assert r.score == pytest.approx(expected, abs=1e-9) and 0.0 <= r.score <= 1.0
    for p in r.phrases:
        want = "noun" if p.noun_score < 0.5 else "attribute" if p.score < p.noun_score else None
        assert p.defect == want
    assert [e.text for e in r.emphasis] == [p.text for p in r.phrases if p.defect]
    assert all(e.weight == pytest.approx(1.1) for e in r.emphasis)


def test_controlled_merges(clip, clip_fixture_dir):
    """a_bound = 1 makes every noun "missing": each phrase uses its parent's noun map."""
    from grefine_quality import AlignmentQuality

    image = Image.open(clip_fixture_dir / "images" / "gradient_256.png")
    parsed = cat_dog_tree()
    paper = AlignmentQuality(clip, merge="paper", a_bound=1.0)(image, parsed)
    union = AlignmentQuality(clip, merge="union", a_bound=1.0)(image, parsed)
    assert [p.defect for p in paper.phrases] == ["noun", "noun", "noun"]
    cat, tree, dog = (p.noun_map for p in paper.phrases)
    # cat is a root (own map), tree's parent is cat, dog's parent is the noun-less "under" -> its
    # nearest ancestor with a noun, cat.
    used = [cat, cat, cat]
    np.testing.assert_allclose(paper.defect_map, np.prod(used, axis=0), atol=1e-6)
    np.testing.assert_allclose(union.defect_map, np.max(used, axis=0), atol=1e-6)
    assert paper.emphasised_prompt == "a (cat)1.1 under a (tree)1.1, a (dog)1.1"
    assert tree.shape == dog.shape == (256, 256)

    # a_bound = 0 and phrase == noun: no defect at all.
    clean = AlignmentQuality(clip, merge="paper", a_bound=0.0)(image, parsed)
    assert all(p.defect is None for p in clean.phrases)
    assert not clean.defect_map.any() and clean.emphasis == []
    assert clean.emphasised_prompt == CAT_DOG_TREE


def test_prompt_without_nouns(clip):
    from grefine_quality import AlignmentQuality

    parsed = ParsedPrompt(
        prompt="very very beautiful",
        phrases=[Phrase("beautiful", None, (10, 19), 0)],
        parser="hand",
    )
    r = AlignmentQuality(clip)(Image.new("RGB", (50, 30)), parsed)
    assert r.phrases == [] and r.defect_map.shape == (30, 50) and not r.defect_map.any()
    assert r.score == pytest.approx(r.prompt_score) and 0.0 < r.prompt_score < 1.0


def test_one_batched_text_pass_per_text_and_cache(clip, monkeypatch):
    from grefine_quality import AlignmentQuality

    calls: list[list[str]] = []
    original = clip.encode_texts

    def spy(texts):
        calls.append(list(texts))
        return original(texts)

    monkeypatch.setattr(clip, "encode_texts", spy)
    aq = AlignmentQuality(clip)
    parsed = parse_by_hand(
        "a red hat on a small dog", [("red hat", "hat", 0), ("small dog", "dog", 0)]
    )
    image = Image.new("RGB", (40, 40), (90, 90, 200))
    first = aq(image, parsed)
    texts = ["red hat", "small dog", "hat", "dog", "a red hat on a small dog", ""]
    assert calls == [[t.replace("{}", x) for t in clip.templates] for x in texts]
    second = aq(image, parsed)
    assert len(calls) == len(texts)  # warm: served from the LRU cache
    assert second.score == first.score


def test_reference_compat_changes_normalisation(clip, clip_fixture_dir):
    from grefine_quality import AlignmentQuality

    image = Image.open(clip_fixture_dir / "images" / "gradient_256.png")
    paper = AlignmentQuality(clip)(image, cat_dog_tree())
    ref = AlignmentQuality(clip, compat="reference")(image, cat_dog_tree())
    assert [p.score for p in paper.phrases] != [p.score for p in ref.phrases]
    assert ref.defect_map.shape == paper.defect_map.shape


def test_bad_arguments(clip):
    from grefine_quality import AlignmentQuality

    from grefine_core.errors import ConfigError, InputError

    with pytest.raises(ConfigError, match="merge"):
        AlignmentQuality(clip, merge="sum")
    with pytest.raises(ConfigError, match="beta"):
        AlignmentQuality(clip, beta=0.0)
    with pytest.raises(InputError, match="ParsedPrompt"):
        AlignmentQuality(clip)(Image.new("RGB", (8, 8)), "a cat")  # type: ignore[arg-type]


def test_plugins_share_one_image_forward(pq_embeddings_dir, monkeypatch):
    from grefine_clip.runtime import get_clip
    from grefine_quality.clip_aq import plugin as alignment_plugin
    from grefine_quality.clip_pq import plugin as perceptual_plugin

    from grefine_core.config import load_config
    from grefine_core.testing import pipeline_context

    monkeypatch.setenv("GREFINE_PQ_DIR", str(pq_embeddings_dir))
    ctx = pipeline_context(load_config(preset="tiny", environ={}))
    backbone = get_clip(ctx)
    encoded = []
    original = backbone.encode_image
    monkeypatch.setattr(
        backbone, "encode_image", lambda x, surgery=True: encoded.append(1) or original(x, surgery)
    )
    image = Image.new("RGB", (70, 50), (10, 120, 240))
    pq = perceptual_plugin.grefine_perceptual_map(image=image, context=ctx)
    aq = alignment_plugin.grefine_alignment_map(image=image, parsed=cat_dog_tree(), context=ctx)
    assert len(encoded) == 1
    assert pq.map.shape == aq.defect_map.shape == (50, 70)
    assert len(aq.phrases) == 3 and 0.0 <= aq.score <= 1.0


def test_a_texts_features_do_not_depend_on_what_was_encoded_with_it(clip):
    """Resume and the Ray engine rely on it: an item's scores are the same whatever item ran
    first in the process (one text pass per text, not one per set of uncached texts)."""
    from grefine_quality.ensemble import TextEnsemble

    alone = TextEnsemble(clip).encode(["a yellow car"])
    together = TextEnsemble(clip).encode(["", "two dogs under a green tree", "a yellow car"])
    assert torch.equal(alone[0], together[2])
