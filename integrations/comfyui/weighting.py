"""Prompt weighting in ComfyUI's syntax: ``(text:1.1)``, as ``CLIPTextEncode`` reads it.

grefine's own stage 1 writes compel's syntax, ``(text)1.1``
(``grefine_quality.aq_logic.emphasise``); ComfyUI's tokenizer reads ``(text:1.1)`` and the escapes
``\\(`` and ``\\)`` for literal brackets. Plain Python: no torch, no grefine import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: A line of the Quality Maps node's ``defects`` text, ``p=0.412 a=0.633 defects: a (kind); ...``,
#: or of the Refine node's report (the same, then `` | high_quality: ...``).
_DEFECTS_RE = re.compile(r"^\s*p=\S+\s+a=\S+\s+defects:\s*(.*?)(?:\s+\|.*)?$")
_KIND_RE = re.compile(r"\s*\((?:noun|attribute)\)\s*$")


def escape(text: str) -> str:
    """Brackets as literal text for ComfyUI (``(`` -> ``\\(``, ``)`` -> ``\\)``)."""
    return text.replace("(", "\\(").replace(")", "\\)")


def format_weight(weight: float) -> str:
    """``1.1`` for 1.1, ``1.25`` for 1.25: at most six decimals, no trailing zeros."""
    return f"{round(float(weight), 6):g}"


def merge_spans(
    spans: Iterable[tuple[int, int, float]],
) -> list[tuple[int, int, float]]:
    """Sorted, non-overlapping ``(start, end, weight)`` spans: overlapping or touching spans merge
    into one with the larger weight (as ``aq_logic.emphasise`` merges them); empty spans drop."""
    merged: list[list[float]] = []
    for s, e, w in sorted((int(s), int(e), float(w)) for s, e, w in spans):
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
            merged[-1][2] = max(merged[-1][2], w)
        else:
            merged.append([s, e, w])
    return [(int(s), int(e), w) for s, e, w in merged]


def weight_spans(prompt: str, spans: Iterable[tuple[int, int, float]]) -> str:
    """``prompt`` with each ``(start, end, weight)`` span wrapped as ``(text:weight)``.

    Spans are clipped to the prompt and merged (:func:`merge_spans`); brackets inside a wrapped
    span are escaped. A span of weight 1 is left as it is.
    """
    n = len(prompt)
    clipped = [(max(0, min(s, n)), max(0, min(e, n)), w) for s, e, w in spans]
    out, pos = [], 0
    for s, e, w in merge_spans(clipped):
        if round(w, 6) == 1.0:
            continue
        out.append(prompt[pos:s])
        out.append(f"({escape(prompt[s:e])}:{format_weight(w)})")
        pos = e
    out.append(prompt[pos:])
    return "".join(out)


def find_phrase(prompt: str, phrase: str) -> tuple[int, int] | None:
    """The ``(start, end)`` of the first occurrence of ``phrase``'s words in ``prompt`` (case and
    spacing ignored, whole words), or ``None``."""
    words = phrase.split()
    if not words:
        return None
    pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
    found = re.search(pattern, prompt, flags=re.IGNORECASE)
    return (found.start(), found.end()) if found else None


def defect_phrases(text: str) -> list[str]:
    """The defective phrases named in the Quality Maps node's ``defects`` text, in order, without
    repeats: ``"p=0.4 a=0.6 defects: blue box (attribute); tree (noun)"`` -> ``["blue box", "tree"]``.
    The Refine node's report lines are read the same way; other lines (notes) and ``none`` are
    ignored."""
    found: list[str] = []
    for line in text.splitlines():
        m = _DEFECTS_RE.search(line)
        if not m:
            continue
        for item in m.group(1).split(";"):
            phrase = _KIND_RE.sub("", item).strip()
            if phrase and phrase.lower() != "none" and phrase not in found:
                found.append(phrase)
    return found


def phrase_spans(
    prompt: str, phrases: Sequence[str], weight: float
) -> list[tuple[int, int, float]]:
    """``(start, end, weight)`` for each phrase found in ``prompt`` (missing ones are skipped)."""
    spans = []
    for phrase in phrases:
        span = find_phrase(prompt, phrase)
        if span is not None:
            spans.append((*span, weight))
    return spans
