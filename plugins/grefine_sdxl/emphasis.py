"""Prompt emphasis (SPEC 3.3, Eq. 7) as per-token weighting on SDXL's two text encoders.

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

from grefine_core.errors import InputError
from grefine_core.types import Emphasis

Fragments = list[tuple[str, float]]


def _snap_to_words(prompt: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span so it neither starts nor ends inside a word (keeps tokenisation unchanged)."""
    while start > 0 and prompt[start - 1].isalnum() and prompt[start].isalnum():
        start -= 1
    while 0 < end < len(prompt) and prompt[end - 1].isalnum() and prompt[end].isalnum():
        end += 1
    return start, end


def emphasis_fragments(prompt: str, emphasis: Sequence[Emphasis]) -> Fragments:
    """Split ``prompt`` into ``(text, weight)`` fragments from the emphasised spans.

    Overlapping spans take the weight farthest from 1. Concatenating the texts gives ``prompt``.

    :param prompt: the prompt.
    :param emphasis: spans (character offsets into ``prompt``) and their weights ``1 + w``.
    :returns: fragments in prompt order, equal-weight neighbours merged.
    :raises InputError: a span outside the prompt or a non-positive weight.
    """
    weights = [1.0] * len(prompt)
    for item in emphasis:
        start, end = (int(v) for v in item.span)
        if not 0 <= start <= end <= len(prompt):
            raise InputError(
                f"emphasis span {item.span} for {item.text!r} lies outside the prompt "
                f"(length {len(prompt)})"
            )
        if not item.weight > 0:
            raise InputError(f"emphasis weight for {item.text!r} must be > 0, got {item.weight}")
        if start == end:
            continue
        start, end = _snap_to_words(prompt, start, end)
        for i in range(start, end):
            if abs(item.weight - 1.0) > abs(weights[i] - 1.0):
                weights[i] = float(item.weight)
    fragments: Fragments = []
    for ch, weight in zip(prompt, weights, strict=True):
        if fragments and fragments[-1][1] == weight:
            fragments[-1] = (fragments[-1][0] + ch, weight)
        else:
            fragments.append((ch, weight))
    return fragments or [("", 1.0)]


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


def _pad_tokens(embeds: Any, length: int, empty: Any) -> Any:
    """Pad ``[1, n, d]`` embeddings to ``length`` tokens with copies of the empty-prompt chunk."""
    import torch

    while embeds.shape[1] < length:
        embeds = torch.cat([embeds, empty[:, : length - embeds.shape[1]]], dim=1)
    return embeds


class SDXLPromptEncoder:
    """Weighted SDXL conditioning through compel's ``CompelForSDXL`` providers.

    :param pipe: a diffusers SDXL pipeline (two tokenizers, two text encoders).
    :param device: where the text encoders run (default: theirs).
    """

    def __init__(self, pipe: Any, device: str | None = None) -> None:
        from compel import CompelForSDXL

        self.pipe = pipe
        self._compel = CompelForSDXL(pipe, device=device)
        self._empty: Any = None

    def _encode(self, fragments: Fragments) -> tuple[Any, Any]:
        """``([1, n, d1 + d2] token embeddings, [1, d2] pooled)`` for one prompt."""
        import torch

        conj = _conjunction(fragments)
        c1, c2 = self._compel.compel_1, self._compel.compel_2
        left = c1.build_conditioning_tensor_for_conjunction(conj)[0]
        right = c2.build_conditioning_tensor_for_conjunction(conj)[0]
        if left.shape[1] != right.shape[1]:
            n = max(left.shape[1], right.shape[1])
            left = _pad_tokens(left, n, c1.build_conditioning_tensor(""))
            right = _pad_tokens(right, n, c2.build_conditioning_tensor("")[0])
        plain = "".join(text for text, _ in fragments)
        pooled = c2.conditioning_provider.get_pooled_embeddings([plain], device=c2.device)
        return torch.cat([left, right], dim=-1), pooled

    def encode(self, fragments: Fragments, negative_prompt: str = "") -> dict[str, Any]:
        """Pipeline keyword arguments (``prompt_embeds``, ``pooled_prompt_embeds`` and, unless the
        pipeline zeroes an empty negative prompt itself, the negative ones).

        :param fragments: from :func:`emphasis_fragments`.
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
                n = max(embeds.shape[1], neg.shape[1])
                if self._empty is None:
                    self._empty = self._encode([("", 1.0)])[0]
                out["prompt_embeds"] = _pad_tokens(embeds, n, self._empty)
                out["negative_prompt_embeds"] = _pad_tokens(neg, n, self._empty)
                out["negative_pooled_prompt_embeds"] = neg_pooled
        return out
