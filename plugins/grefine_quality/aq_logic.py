"""AQ-Map defect logic (docs/indicators.md, paper Eqs. 6-8): pure numpy, no torch.

Given the per-phrase and per-noun alignment scores and maps of a prompt (docs/indicators.md, computed by the
CLIP side), decide which phrases are defective, merge the maps they point at into ``A_defect``,
list the phrases to emphasise and compute the alignment score ``a``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grefine_core.errors import ConfigError
from grefine_core.types import (
    AlignmentResult,
    Emphasis,
    ParsedPrompt,
    Phrase,
    PhraseAlignment,
)

MERGES: tuple[str, ...] = ("paper", "union")


def scored_indices(phrases: Sequence[Phrase]) -> list[int]:
    """Indices (into the full phrase list) of the phrases that have a head noun, i.e. the phrases
    AQ scores, in order. Score/map arrays handed to :func:`resolve_alignment` follow this order."""
    return [i for i, ph in enumerate(phrases) if ph.noun is not None]


def _stack(maps: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(maps, dtype=np.float32)
    if n == 0 and arr.size == 0:
        return arr.reshape((0,) + (arr.shape[1:] if arr.ndim == 3 else (0, 0)))
    if arr.ndim != 3 or arr.shape[0] != n:
        raise ValueError(
            f"{name} must hold one (H, W) map per scored phrase: expected shape ({n}, H, W), "
            f"got {arr.shape}"
        )
    return arr


def _scores(values: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must hold one score per scored phrase ({n}), got {arr.shape[0]}")
    return arr


def _noun_parent(phrases: Sequence[Phrase], i: int) -> int | None:
    """The nearest proper ancestor of phrase ``i`` that has a noun (None for none)."""
    seen = {i}
    j = phrases[i].parent
    while 0 <= j < len(phrases) and j not in seen:
        if phrases[j].noun is not None:
            return j
        seen.add(j)
        j = phrases[j].parent
    return None


def emphasise(prompt: str, spans: Sequence[tuple[int, int]], weight: float) -> str:
    """The prompt with each span wrapped in compel syntax ``(text)1.1``.

    Overlapping or touching spans are merged; brackets inside a wrapped span are escaped
    (``\\(``), as compel expects. A weight of 1 returns the prompt unchanged.
    """
    if weight == 1.0 or not spans:
        return prompt
    merged: list[list[int]] = []
    for s, e in sorted((int(s), int(e)) for s, e in spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    out, pos = [], 0
    for s, e in merged:
        out.append(prompt[pos:s])
        core = prompt[s:e].replace("(", "\\(").replace(")", "\\)")
        out.append(f"({core}){round(weight, 6):g}")
        pos = e
    out.append(prompt[pos:])
    return "".join(out)


def resolve_alignment(
    phrases: Sequence[Phrase] | ParsedPrompt,
    phrase_scores: Any,
    noun_scores: Any,
    phrase_maps: Any,
    noun_maps: Any,
    prompt_score: float,
    prompt: str,
    *,
    merge: str,
    a_bound: float,
    beta: float,
    emphasis_weight: float,
    shape: tuple[int, int] | None = None,
) -> AlignmentResult:
    """Defects, ``A_defect``, emphasis and the score ``a`` of one prompt (Eqs. 6-8).

    **Phrase indexing.** ``phrases`` is the *full* phrase list of the parse (``parsed.phrases``,
    or the :class:`ParsedPrompt` itself), because ``Phrase.parent`` indexes that list. The score
    and map arguments hold one entry per phrase *with a noun*, in order
    (:func:`scored_indices`); phrases without a noun are skipped, as in docs/parsers.md.

    **Defects**, for each scored phrase ``j``:

    * noun unmatched, ``a_pns[j] < a_bound``: the object is missing; the used map is the noun map
      of ``j``'s parent. When the parent has no noun, the nearest ancestor with a noun is used;
      when there is none (``j`` is a root, or only noun-less ancestors), ``j``'s own noun map.
    * else attribute unmatched, ``a_phs[j] < a_pns[j]``: the object exists without its attributes;
      the used map is ``j``'s own noun map.

    **Merge** of the used maps: ``"paper"`` = element-wise product starting from 1, but all zeros
    when nothing is defective (nothing to fix); ``"union"`` = element-wise max starting from 0.

    **Emphasis**: each defective phrase's span with weight ``1 + emphasis_weight``, and the prompt
    in compel syntax (``"a (red hat)1.1 ..."``). ``emphasis_weight = 0`` gives no emphasis entries
    and the prompt unchanged (the defects stay recorded in ``phrases[j].defect``).

    **Score** (Eq. 8): ``a = prompt_score * prod_j min(a_phs[j] / beta, 1)``, clipped to [0, 1].

    :param phrases: the full phrase list (or the parse).
    :param phrase_scores: ``a_phs``, one float per scored phrase.
    :param noun_scores: ``a_pns``, one float per scored phrase.
    :param phrase_maps: ``A_phs``, ``(K, H, W)`` (or a list of ``(H, W)``).
    :param noun_maps: ``A_pns``, same shape.
    :param prompt_score: ``a_prompt``, the whole prompt scored like a phrase.
    :param prompt: the prompt (spans index it).
    :param merge: ``"paper"`` or ``"union"``.
    :param a_bound: noun-missing threshold (0.5 in the paper).
    :param beta: cask threshold of Eq. 8 (> 0).
    :param emphasis_weight: ``w`` of Eq. 7 (>= 0).
    :param shape: ``(H, W)``, needed only when no phrase has a noun and the map arrays are empty
        without a shape of their own.
    :returns: an :class:`~grefine_core.types.AlignmentResult` (``defect_map`` float32 ``(H, W)``).
    :raises ConfigError: bad ``merge``, ``beta`` or ``emphasis_weight``.
    :raises ValueError: score/map counts that do not match the phrases with a noun.
    """
    if isinstance(phrases, ParsedPrompt):
        phrases = phrases.phrases
    if merge not in MERGES:
        raise ConfigError(
            f"[plugins.aq] merge = {merge!r} is not valid; valid: {', '.join(MERGES)}"
        )
    if not beta > 0:
        raise ConfigError(f"[plugins.aq] beta must be > 0, got {beta!r}")
    if not emphasis_weight >= 0:
        raise ConfigError(f"[plugins.aq] emphasis_weight must be >= 0, got {emphasis_weight!r}")

    scored = scored_indices(phrases)
    k = len(scored)
    a_phs = _scores(phrase_scores, k, "phrase_scores")
    a_pns = _scores(noun_scores, k, "noun_scores")
    m_phs = _stack(phrase_maps, k, "phrase_maps")
    m_pns = _stack(noun_maps, k, "noun_maps")
    if m_phs.shape != m_pns.shape:
        raise ValueError(f"phrase_maps {m_phs.shape} and noun_maps {m_pns.shape} differ in shape")
    if k:
        hw = m_pns.shape[1:]
    elif m_pns.ndim == 3 and m_pns.shape[1] * m_pns.shape[2] > 0:
        hw = m_pns.shape[1:]
    elif shape is not None:
        hw = (int(shape[0]), int(shape[1]))
    else:
        raise ValueError("no phrase has a noun and the maps carry no shape: pass shape=(H, W)")

    slot_of = {full: pos for pos, full in enumerate(scored)}
    results: list[PhraseAlignment] = []
    used: list[np.ndarray] = []
    for pos, full in enumerate(scored):
        ph = phrases[full]
        defect = None
        if a_pns[pos] < a_bound:
            defect = "noun"
            anc = _noun_parent(phrases, full)
            used.append(m_pns[slot_of[anc]] if anc is not None else m_pns[pos])
        elif a_phs[pos] < a_pns[pos]:
            defect = "attribute"
            used.append(m_pns[pos])
        results.append(
            PhraseAlignment(
                text=ph.text,
                noun=ph.noun,
                span=tuple(ph.span),
                parent=ph.parent,
                score=float(a_phs[pos]),
                noun_score=float(a_pns[pos]),
                map=m_phs[pos],
                noun_map=m_pns[pos],
                defect=defect,
            )
        )

    if not used:
        defect_map = np.zeros(hw, np.float32)
    elif merge == "paper":
        defect_map = np.ones(hw, np.float32)
        for m in used:
            defect_map = defect_map * m
    else:
        defect_map = np.zeros(hw, np.float32)
        for m in used:
            defect_map = np.maximum(defect_map, m)
    defect_map = np.clip(defect_map, 0.0, 1.0).astype(np.float32)

    weight = 1.0 + float(emphasis_weight)
    emphasis: list[Emphasis] = []
    if emphasis_weight > 0:
        emphasis = [
            Emphasis(text=r.text, span=tuple(r.span), weight=weight)
            for r in results
            if r.defect is not None
        ]
    emphasised = emphasise(prompt, [e.span for e in emphasis], weight)

    score = float(prompt_score) * float(np.prod(np.minimum(a_phs / beta, 1.0)))  # 1 when k = 0
    return AlignmentResult(
        score=float(np.clip(score, 0.0, 1.0)),
        defect_map=defect_map,
        phrases=results,
        emphasis=emphasis,
        prompt_score=float(prompt_score),
        emphasised_prompt=emphasised,
    )
