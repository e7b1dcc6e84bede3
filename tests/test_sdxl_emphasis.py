"""Emphasis (Eq. 7) as compel token weighting on both SDXL text encoders, compared token-wise."""

from __future__ import annotations

import pytest
from grefine_sdxl.emphasis import display_prompt, emphasis_fragments
from grefine_sdxl.prompt_weights import snap_to_words

from grefine_core.errors import InputError
from grefine_core.types import Emphasis

PROMPT = "a red cat on a wooden table, 8k"
SPAN = (15, 27)  # "wooden table"


def test_fragments_cover_the_prompt_and_weight_only_the_spans():
    frags = emphasis_fragments(PROMPT, [Emphasis("wooden table", SPAN, 1.1)])
    assert frags == [("a red cat on a ", 1.0), ("wooden table", 1.1), (", 8k", 1.0)]
    assert "".join(t for t, _ in frags) == PROMPT
    assert display_prompt(frags) == "a red cat on a (wooden table)1.1, 8k"
    assert emphasis_fragments(PROMPT, []) == [(PROMPT, 1.0)]
    assert emphasis_fragments(PROMPT, [Emphasis("x", SPAN, 1.0)]) == [(PROMPT, 1.0)]


def test_spans_snap_to_words_and_overlaps_take_the_strongest_weight():
    frags = emphasis_fragments(PROMPT, [Emphasis("ooden tab", (16, 25), 1.2)])
    assert ("wooden table", 1.2) in frags  # no cut inside a word: tokenisation unchanged
    frags = emphasis_fragments(
        PROMPT, [Emphasis("red cat", (2, 9), 1.1), Emphasis("cat", (6, 9), 1.3)]
    )
    assert frags[:3] == [("a ", 1.0), ("red ", 1.1), ("cat", 1.3)]


def test_bad_spans_and_weights_are_named():
    with pytest.raises(InputError, match="outside the prompt"):
        emphasis_fragments(PROMPT, [Emphasis("x", (10, 99), 1.1)])
    with pytest.raises(InputError, match="must be > 0"):
        emphasis_fragments(PROMPT, [Emphasis("x", SPAN, 0.0)])


def test_display_escapes_parentheses_in_weighted_text():
    assert display_prompt([("a ", 1.0), ("big (red) hat", 1.1)]) == "a (big \\(red\\) hat)1.1"


# ----------------------------------------------------------------- embeddings (tiny pipeline)

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def pipe():
    from grefine_sdxl.loading import load_inpaint_pipeline
    from grefine_sdxl.settings import SDXLSettings

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_inpaint_pipeline(SDXLSettings(model="tiny"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoder(pipe):
    from grefine_sdxl.emphasis import SDXLPromptEncoder

    return SDXLPromptEncoder(pipe)


def _plain(pipe, prompt, negative=None):
    with torch.no_grad():
        return pipe.encode_prompt(prompt, device="cpu", negative_prompt=negative)


def _span_tokens(pipe, prompt, span):
    """Token positions (BOS included) of ``prompt[span[0]:span[1]]``."""
    n_before = len(pipe.tokenizer(prompt[: span[0]], add_special_tokens=False).input_ids)
    n_span = len(pipe.tokenizer(prompt[span[0] : span[1]], add_special_tokens=False).input_ids)
    return list(range(1 + n_before, 1 + n_before + n_span))


@pytest.mark.parametrize(
    "prompt",
    [
        PROMPT,
        'a cat+ with "quotes", (parens)1.3 and a \\(escaped\\) dog-',
        "  ",
        "日本の猫",
        "x " * 100,
    ],
)
def test_weight_one_is_exactly_the_plain_conditioning(pipe, encoder, prompt):
    embeds, _, pooled, _ = _plain(pipe, prompt)
    span = (0, min(6, len(prompt)))
    cut = snap_to_words(prompt, 2, 2)[1] if len(prompt) > 2 else 0  # a word boundary
    for frags in (
        [(prompt, 1.0)],
        emphasis_fragments(prompt, [Emphasis("x", span, 1.0)]),
        [(prompt[:cut], 1.0), (prompt[cut:], 1.0)],  # split fragments, still weight 1
    ):
        out = encoder.encode(frags)
        assert torch.equal(out["prompt_embeds"], embeds)  # compel syntax never parsed
        assert torch.equal(out["pooled_prompt_embeds"], pooled)
        assert "negative_prompt_embeds" not in out  # the pipeline zeroes an empty negative


def test_positive_weight_changes_only_the_span_tokens(pipe, encoder):
    embeds, _, pooled, _ = _plain(pipe, PROMPT)
    empty, _, _, _ = _plain(pipe, "")
    weight = 1.25
    out = encoder.encode(emphasis_fragments(PROMPT, [Emphasis("wooden table", SPAN, weight)]))
    got = out["prompt_embeds"]
    assert got.shape == embeds.shape
    changed = (got - embeds).abs().amax(dim=-1)[0].nonzero().flatten().tolist()
    span_tokens = _span_tokens(pipe, PROMPT, SPAN)
    assert span_tokens == [6, 7] and changed == span_tokens  # "wooden", "table"; both encoders
    expected = empty + (embeds - empty) * weight  # compel: empty + (z - empty) * weight
    torch.testing.assert_close(got[:, span_tokens], expected[:, span_tokens])
    half = embeds.shape[-1] // 2  # [te1 | te2] hidden sizes: both halves move
    assert (got[:, 6, :half] != embeds[:, 6, :half]).any()
    assert (got[:, 6, half:] != embeds[:, 6, half:]).any()
    assert torch.equal(out["pooled_prompt_embeds"], pooled)  # pooled: the plain prompt


def test_negative_prompt_matches_the_pipeline(pipe, encoder):
    embeds, neg, pooled, neg_pooled = _plain(pipe, PROMPT, negative="blurry, low quality")
    out = encoder.encode([(PROMPT, 1.0)], negative_prompt="blurry, low quality")
    assert torch.equal(out["negative_prompt_embeds"], neg)
    assert torch.equal(out["negative_pooled_prompt_embeds"], neg_pooled)
    assert torch.equal(out["prompt_embeds"], embeds)


LONG = ", ".join(["a red cat on a wooden table"] * 14)  # 111 CLIP tokens


def test_long_prompts_are_cut_at_the_window_exactly_like_the_pipeline(pipe, encoder):
    embeds, neg, pooled, neg_pooled = _plain(pipe, LONG, negative="blurry")
    out = encoder.encode([(LONG[:15], 1.0), (LONG[15:], 1.0)], negative_prompt="blurry")
    assert out["prompt_embeds"].shape == embeds.shape == (1, 77, embeds.shape[-1])
    assert torch.equal(out["prompt_embeds"], embeds)  # weight 1, any length: the pipeline's own
    assert torch.equal(out["pooled_prompt_embeds"], pooled)
    assert torch.equal(out["negative_prompt_embeds"], neg)
    # A weighted long prompt has the same window; tokens past it are gone in both.
    weighted = encoder.encode(emphasis_fragments(LONG, [Emphasis("red cat", (2, 9), 1.1)]))
    assert weighted["prompt_embeds"].shape == embeds.shape


def test_prompt_window_counts_tokens_and_names_what_is_kept(pipe):
    from grefine_sdxl.emphasis import prompt_window

    n, kept = prompt_window(pipe, LONG)
    assert n == 111 and kept is not None and kept.startswith("a red cat on a wooden table ,")
    assert len(pipe.tokenizer(kept, add_special_tokens=False).input_ids) == 75
    assert prompt_window(pipe, PROMPT) == (len(pipe.tokenizer(PROMPT).input_ids) - 2, None)


# ----------------------------------------------------------------- the user's A1111 weights


def _weights(prompt):
    from grefine_sdxl.prompt_weights import weighted_fragments

    return [(f.text, f.weight) for f in weighted_fragments(prompt)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a (red:1.3) ball", [("a ", 1.0), ("red", 1.3), (" ball", 1.0)]),
        ("a (red) ball", [("a ", 1.0), ("red", 1.1), (" ball", 1.0)]),
        ("a ((red)) ball", [("a ", 1.0), ("red", 1.21), (" ball", 1.0)]),
        ("a [red] ball", [("a ", 1.0), ("red", 0.909091), (" ball", 1.0)]),
        ("a ((red:1.5) ball:0.5)", [("a ", 1.0), ("red", 0.75), (" ball", 0.5)]),
        ("a \\(red\\) ball", [("a (red) ball", 1.0)]),  # escaped: literal brackets
        ("a (red ball", [("a ", 1.0), ("red ball", 1.1)]),  # never closed: the rest
        ("red) ball: 1.3)", [("red) ball: 1.3)", 1.0)]),  # nothing to close: text
        ("a cat <lora:styleX:0.8>, 8k", [("a cat , 8k", 1.0)]),  # extra networks: not text
        ("a (red hat)1.2 on a cat", [("a ", 1.0), ("red hat", 1.2), (" on a cat", 1.0)]),  # compel
        ("a [b:c:0.5] d", [("a ", 1.0), ("b:c:0.5", 0.909091), (" d", 1.0)]),  # editing: text
    ],
)
def test_a1111_markup_is_read(prompt, expected):
    assert _weights(prompt) == expected


def test_the_defect_emphasis_multiplies_the_users_weight_and_both_are_reported():
    from grefine_sdxl.prompt_weights import weight_report, weighted_fragments

    prompt = "a (red:1.3) ball on a box"
    span = (2, 16)  # the parser's span of "red ball", in the raw prompt
    frags = weighted_fragments(prompt, [Emphasis("red ball", span, 1.1)])
    assert [(f.text, f.weight) for f in frags] == [
        ("a ", 1.0),
        ("red", 1.43),
        (" ball", 1.1),
        (" on a box", 1.0),
    ]
    assert display_prompt([(f.text, f.weight) for f in frags]) == "a (red)1.43 (ball)1.1 on a box"
    assert weight_report(frags) == [
        {"text": "red", "weight": 1.43, "user": 1.3, "emphasis": 1.1},
        {"text": "ball", "weight": 1.1, "user": 1.0, "emphasis": 1.1},
    ]
    literal = weighted_fragments(prompt, [], syntax="none")
    assert [(f.text, f.weight) for f in literal] == [(prompt, 1.0)]
    with pytest.raises(InputError, match="prompt_weights = 'xyz' is not valid; valid: a1111, none"):
        weighted_fragments(prompt, [], syntax="xyz")


@pytest.mark.parametrize("prompt", ["a (red:0) ball", "a (red:-1) ball", "a (red)0 ball"])
def test_non_positive_weights_are_refused_in_one_line(prompt):
    from grefine_sdxl.prompt_weights import weighted_fragments

    with pytest.raises(InputError, match=r"prompt weight '.*' must be > 0"):
        weighted_fragments(prompt)


def test_the_report_keeps_factors_that_cancel_out():
    from grefine_sdxl.prompt_weights import weight_report, weighted_fragments

    frags = weighted_fragments("a [red] ball", [Emphasis("red", (3, 6), 1.1)])
    assert weight_report(frags) == [
        {"text": "red", "weight": 1.0, "user": 0.909091, "emphasis": 1.1}
    ]
