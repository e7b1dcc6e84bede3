"""Emphasis (Eq. 7) as compel token weighting on both SDXL text encoders, compared token-wise."""

from __future__ import annotations

import pytest
from grefine_sdxl.emphasis import _snap_to_words, display_prompt, emphasis_fragments

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
    [PROMPT, 'a cat+ with "quotes", (parens)1.3 and a \\(escaped\\) dog-', "  ", "日本の猫"],
)
def test_weight_one_is_exactly_the_plain_conditioning(pipe, encoder, prompt):
    embeds, _, pooled, _ = _plain(pipe, prompt)
    span = (0, min(6, len(prompt)))
    cut = _snap_to_words(prompt, 2, 2)[1] if len(prompt) > 2 else 0  # a word boundary
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


def test_long_prompts_keep_every_token_and_pad_the_negative(pipe, encoder):
    long = ", ".join(["a red cat on a wooden table"] * 14)
    out = encoder.encode([(long, 1.0)], negative_prompt="blurry")
    n = out["prompt_embeds"].shape[1]
    assert n > 77 and n % 77 == 0
    assert out["negative_prompt_embeds"].shape == out["prompt_embeds"].shape
