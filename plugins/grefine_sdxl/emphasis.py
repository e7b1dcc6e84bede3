"""Prompt emphasis (docs/indicators.md, Eq. 7) as per-token weighting on SDXL's two text encoders.

The defective phrases' character spans get weight ``1 + w``; compel turns that into embeddings
``empty + (z - empty) * weight`` on exactly those tokens (both encoders), leaving every other token
and the pooled embedding unchanged. A weight of 1 leaves the conditioning exactly as the pipeline's
own ``encode_prompt`` makes it.

Compel pitfall avoided here: its *string* API parses the prompt as compel syntax, so ordinary text
changes meaning (``"cat+"`` is up-weighted, quotes are dropped, ``\\+`` keeps the backslash) and its
pooled embedding is computed from the raw syntax string (``"(red hat)1.1"`` tokens included). So we
hand compel already-split fragments (``Conjunction``/``FlattenedPrompt``/``Fragment``) and take the
pooled embedding from the plain prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grefine_core.types import Emphasis
from grefine_sdxl.prompt_weights import weighted_fragments

Fragments = list[tuple[str, float]]


def emphasis_fragments(
    prompt: str, emphasis: Sequence[Emphasis], syntax: str = "none"
) -> Fragments:
    """Split ``prompt`` into ``(text, weight)`` fragments from the emphasised spans.

    Spans snap to whole words; overlapping spans take the weight farthest from 1. With
    ``syntax="a1111"`` the user's own weight markup is read and multiplied in (see
    :mod:`grefine_sdxl.prompt_weights`); with ``"none"`` concatenating the texts gives ``prompt``.

    :raises InputError: a span outside the prompt or a non-positive weight.
    """
    return [(f.text, f.weight) for f in weighted_fragments(prompt, emphasis, syntax)]


def display_prompt(fragments: Fragments) -> str:
    """The fragments in compel notation, e.g. ``"a (red hat)1.1 on a cat"`` (for reports only)."""
    parts = []
    for text, weight in fragments:
        if weight == 1.0:
            parts.append(text)
            continue
        core = text.strip()
        lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
        core = core.replace("(", "\\(").replace(")", "\\)")
        parts.append(f"{lead}({core}){weight:g}{trail}")
    return "".join(parts)


def _conjunction(fragments: Fragments) -> Any:
    from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

    pieces = []
    for text, weight in fragments:
        if not text:
            continue
        frag = Fragment("", weight)
        frag.text = text  # set after __init__: it would un-escape "\(" in the user's text
        pieces.append(frag)
    return Conjunction([FlattenedPrompt(pieces or [Fragment("", 1.0)])])


#: Tokens the SDXL text encoders read: start, 75 of the prompt, end.
TOKEN_WINDOW = 77


def truncate_to_window(compel: Any) -> None:
    """Make compel cut prompts at the encoder's 77-token window, as the pipeline's own
    ``encode_prompt`` does (``CompelForSDXL`` chains 77-token chunks instead, which changes what a
    long prompt means and makes weighted and plain conditioning incomparable)."""
    for side in (compel.compel_1, compel.compel_2):
        side.conditioning_provider.truncate_to_model_max_length = True


def prompt_window(pipe: Any, text: str) -> tuple[int, str | None]:
    """``(number of prompt tokens, the text kept when they exceed the window, else None)``."""
    ids = pipe.tokenizer(text, add_special_tokens=False, truncation=False).input_ids
    keep = TOKEN_WINDOW - 2
    if len(ids) <= keep:
        return len(ids), None
    return len(ids), pipe.tokenizer.decode(ids[:keep])


class SDXLPromptEncoder:
    """Weighted SDXL conditioning through compel's ``CompelForSDXL`` providers, cut at the text
    encoders' 77-token window like the pipeline's own encoding (so all weights 1 give exactly the
    pipeline's conditioning, for any prompt length).

    :param pipe: a diffusers SDXL pipeline (two tokenizers, two text encoders).
    :param device: where the text encoders run (default: theirs).
    """

    def __init__(self, pipe: Any, device: str | None = None) -> None:
        from compel import CompelForSDXL

        self.pipe = pipe
        self._compel = CompelForSDXL(pipe, device=device)
        truncate_to_window(self._compel)

    def _encode(self, fragments: Fragments) -> tuple[Any, Any]:
        """``([1, 77, d1 + d2] token embeddings, [1, d2] pooled)`` for one prompt."""
        import torch

        conj = _conjunction(fragments)
        c1, c2 = self._compel.compel_1, self._compel.compel_2
        left = c1.build_conditioning_tensor_for_conjunction(conj)[0]
        right = c2.build_conditioning_tensor_for_conjunction(conj)[0]
        plain = "".join(text for text, _ in fragments)
        pooled = c2.conditioning_provider.get_pooled_embeddings([plain], device=c2.device)
        return torch.cat([left, right], dim=-1), pooled

    def encode(self, fragments: Fragments, negative_prompt: str = "") -> dict[str, Any]:
        """Pipeline keyword arguments (``prompt_embeds``, ``pooled_prompt_embeds`` and, unless the
        pipeline zeroes an empty negative prompt itself, the negative ones).

        :param fragments: ``(text, weight)`` pairs, e.g. from :func:`emphasis_fragments`.
        :param negative_prompt: the negative prompt (plain text, never weighted).
        :returns: a dict to pass to the pipeline call.
        """
        import torch

        with torch.no_grad():
            embeds, pooled = self._encode(fragments)
            out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
            zero_negative = bool(getattr(self.pipe.config, "force_zeros_for_empty_prompt", False))
            if negative_prompt or not zero_negative:
                neg, neg_pooled = self._encode([(negative_prompt, 1.0)])
                out["negative_prompt_embeds"] = neg
                out["negative_pooled_prompt_embeds"] = neg_pooled
        return out
