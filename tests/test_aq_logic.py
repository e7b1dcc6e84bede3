"""AQ-Map defect logic with controlled scores (docs/indicators.md, Eqs. 6-8): pure numpy."""

from __future__ import annotations

import numpy as np
import pytest
from grefine_quality.aq_logic import emphasise, resolve_alignment, scored_indices

from grefine_core.errors import ConfigError
from grefine_core.types import ParsedPrompt, Phrase

PROMPT = "Mr. Beans wearing sun glasses with blue doctor suit and stripe tie"
PHRASES = [
    Phrase("Mr. Beans wearing", "Beans", (0, 17), 0, (4, 9)),
    Phrase("sun glasses", "glasses", (18, 29), 0, (22, 29)),
    Phrase("blue doctor suit", "suit", (35, 51), 1, (47, 51)),
    Phrase("stripe tie", "tie", (56, 66), 0, (63, 66)),
]
H, W = 4, 5
RNG = np.random.default_rng(0)
NOUN_MAPS = RNG.uniform(0.05, 0.95, (4, H, W)).astype(np.float32)
PHRASE_MAPS = RNG.uniform(0.05, 0.95, (4, H, W)).astype(np.float32)
GOOD_PHS = [0.9, 0.9, 0.9, 0.9]
GOOD_PNS = [0.8, 0.8, 0.8, 0.8]


def run(phs=GOOD_PHS, pns=GOOD_PNS, *, phrases=PHRASES, merge="paper", w=0.1, beta=0.5, **kw):
    n = len(scored_indices(phrases))
    return resolve_alignment(
        phrases,
        phs,
        pns,
        kw.pop("phrase_maps", PHRASE_MAPS[:n]),
        kw.pop("noun_maps", NOUN_MAPS[:n]),
        kw.pop("prompt_score", 0.8),
        kw.pop("prompt", PROMPT),
        merge=merge,
        a_bound=0.5,
        beta=beta,
        emphasis_weight=w,
        **kw,
    )


@pytest.mark.parametrize("merge", ["paper", "union"])
def test_noun_missing_uses_the_parents_noun_map(merge):
    r = run(pns=[0.8, 0.3, 0.8, 0.8], merge=merge)  # "glasses" missing; parent = Mr. Beans
    assert [p.defect for p in r.phrases] == [None, "noun", None, None]
    np.testing.assert_array_equal(r.defect_map, NOUN_MAPS[0])
    assert r.defect_map.dtype == np.float32 and r.defect_map.shape == (H, W)


@pytest.mark.parametrize("merge", ["paper", "union"])
def test_attribute_missing_uses_its_own_noun_map(merge):
    r = run(phs=[0.9, 0.9, 0.6, 0.9], pns=[0.8, 0.8, 0.8, 0.8], merge=merge)
    assert [p.defect for p in r.phrases] == [None, None, "attribute", None]
    np.testing.assert_array_equal(r.defect_map, NOUN_MAPS[2])


def test_noun_check_comes_before_the_attribute_check():
    # a_pns < a_bound and a_phs < a_pns at once: a missing noun, drawn on the parent
    r = run(phs=[0.9, 0.9, 0.2, 0.9], pns=[0.8, 0.8, 0.4, 0.8])
    assert r.phrases[2].defect == "noun"
    np.testing.assert_array_equal(r.defect_map, NOUN_MAPS[1])  # parent of the suit = glasses


def test_root_with_missing_noun_uses_its_own_map():
    r = run(pns=[0.2, 0.8, 0.8, 0.8])
    assert r.phrases[0].defect == "noun"
    np.testing.assert_array_equal(r.defect_map, NOUN_MAPS[0])


@pytest.mark.parametrize("merge", ["paper", "union"])
def test_no_defect_gives_an_empty_map_and_no_emphasis(merge):
    r = run(merge=merge)
    assert r.defects == [] and r.emphasis == []
    assert r.emphasised_prompt == PROMPT
    assert r.defect_map.dtype == np.float32 and not r.defect_map.any()


def test_paper_merge_is_the_product_and_union_the_max():
    phs, pns = [0.9, 0.9, 0.6, 0.9], [0.8, 0.3, 0.8, 0.2]  # glasses, tie: noun; suit: attribute
    paper, union = run(phs, pns, merge="paper"), run(phs, pns, merge="union")
    assert [p.defect for p in paper.phrases] == [None, "noun", "attribute", "noun"]
    used = [NOUN_MAPS[0], NOUN_MAPS[2], NOUN_MAPS[0]]
    np.testing.assert_allclose(paper.defect_map, used[0] * used[1] * used[2], rtol=1e-6)
    np.testing.assert_allclose(union.defect_map, np.maximum.reduce(used), rtol=1e-6)
    assert (paper.defect_map <= union.defect_map + 1e-7).all()


def test_score_is_the_cask_of_eq_8():
    r = run(phs=[0.9, 0.25, 0.6, 0.4], pns=[0.8, 0.8, 0.5, 0.8], prompt_score=0.8, beta=0.5)
    assert r.score == pytest.approx(0.8 * 1.0 * 0.5 * 1.0 * 0.8)
    assert r.prompt_score == pytest.approx(0.8)
    assert [p.score for p in r.phrases] == pytest.approx([0.9, 0.25, 0.6, 0.4])
    assert [p.noun_score for p in r.phrases] == pytest.approx([0.8, 0.8, 0.5, 0.8])
    assert run(phs=[0.9, 0.25, 0.6, 0.4], beta=0.2).score == pytest.approx(0.8)


def test_emphasis_lists_defective_spans_in_compel_syntax():
    r = run(phs=[0.9, 0.9, 0.6, 0.9], pns=[0.8, 0.3, 0.8, 0.8], w=0.1)
    assert [(e.text, e.span, e.weight) for e in r.emphasis] == [
        ("sun glasses", (18, 29), pytest.approx(1.1)),
        ("blue doctor suit", (35, 51), pytest.approx(1.1)),
    ]
    assert r.emphasised_prompt == (
        "Mr. Beans wearing (sun glasses)1.1 with (blue doctor suit)1.1 and stripe tie"
    )


def test_zero_emphasis_weight_leaves_the_prompt_alone():
    r = run(pns=[0.8, 0.3, 0.8, 0.8], w=0.0)
    assert r.phrases[1].defect == "noun"  # still recorded
    assert r.emphasis == [] and r.emphasised_prompt == PROMPT
    assert "(" not in r.emphasised_prompt


def test_emphasise_merges_overlaps_and_escapes_brackets():
    assert emphasise("a (red:1.3) hat", [(3, 15)], 1.2) == "a ((red:1.3\\) hat)1.2"
    assert emphasise("abcdef", [(0, 3), (2, 4)], 1.5) == "(abcd)1.5ef"
    assert emphasise("abc", [(0, 1)], 1.0) == "abc"


def test_noun_less_phrases_are_skipped_and_ancestors_climb_past_them():
    phrases = [
        Phrase("cat", "cat", (2, 5), 0, (2, 5)),
        Phrase("sitting", None, (6, 13), 0),
        Phrase("red hat", "hat", (14, 21), 1, (18, 21)),  # parent has no noun -> cat
        Phrase("beautiful", None, (23, 32), 3),
        Phrase("mat", "mat", (33, 36), 3, (33, 36)),  # only noun-less ancestors -> own map
    ]
    prompt = "a cat sitting red hat, beautiful mat"
    assert scored_indices(phrases) == [0, 2, 4]
    r = run([0.9, 0.9, 0.9], [0.8, 0.2, 0.8], phrases=phrases, prompt=prompt)
    assert [(p.text, p.defect, p.parent) for p in r.phrases] == [
        ("cat", None, 0),
        ("red hat", "noun", 1),
        ("mat", None, 3),
    ]
    np.testing.assert_array_equal(r.defect_map, NOUN_MAPS[0])
    r = run([0.9, 0.9, 0.9], [0.8, 0.8, 0.2], phrases=phrases, prompt=prompt)
    np.testing.assert_array_equal(r.defect_map, NOUN_MAPS[2])


def test_accepts_a_parsed_prompt_and_real_parse():
    from grefine_spacy import parse_prompt

    parsed = parse_prompt(PROMPT)
    assert [(p.text, p.parent) for p in parsed.phrases] == [(p.text, p.parent) for p in PHRASES]
    r = resolve_alignment(
        parsed,
        GOOD_PHS,
        [0.8, 0.3, 0.8, 0.8],
        PHRASE_MAPS,
        NOUN_MAPS,
        0.7,
        PROMPT,
        merge="union",
        a_bound=0.5,
        beta=0.5,
        emphasis_weight=0.1,
    )
    np.testing.assert_array_equal(r.defect_map, NOUN_MAPS[0])  # sun glasses -> Mr. Beans


def test_no_noun_at_all():
    phrases = [Phrase("beautiful", None, (0, 9), 0)]
    empty = np.zeros((0, H, W), np.float32)
    r = run([], [], phrases=phrases, phrase_maps=empty, noun_maps=empty, prompt="beautiful")
    assert r.score == pytest.approx(0.8) and r.phrases == []
    assert r.defect_map.shape == (H, W) and not r.defect_map.any()
    r = run([], [], phrases=[], phrase_maps=[], noun_maps=[], prompt="", shape=(3, 2))
    assert r.defect_map.shape == (3, 2)
    with pytest.raises(ValueError, match="shape"):
        run([], [], phrases=[], phrase_maps=[], noun_maps=[], prompt="")


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="merge = 'max'.*paper, union"):
        run(merge="max")
    with pytest.raises(ConfigError, match="beta"):
        run(beta=0.0)
    with pytest.raises(ConfigError, match="emphasis_weight"):
        run(w=-0.1)
    with pytest.raises(ValueError, match="noun_scores must hold one score per scored phrase"):
        run(pns=[0.8, 0.8])
    with pytest.raises(ValueError, match=r"phrase_maps must hold .* got \(3, 4, 5\)"):
        run(phrase_maps=PHRASE_MAPS[:3])


def test_defect_map_is_clipped_to_unit_range():
    maps = NOUN_MAPS.copy()
    maps[0] = 1.7
    r = run(pns=[0.8, 0.3, 0.8, 0.8], merge="union", noun_maps=maps)
    assert r.defect_map.max() == 1.0


def test_fixture_phrases_are_a_well_formed_parse():
    from grefine_parsing.text import check_parsed

    check_parsed(ParsedPrompt(PROMPT, PHRASES, "x"))
