"""Style tags: prompt words about the picture's style or quality, not about objects in it.

"masterpiece", "8k", "oil painting", "highly detailed", "trending on artstation"... A CLIP map of
such a tag cannot say where an object is missing, so the NLTK parser gives them no head noun: they
become phrases of their own, which AQ never scores. The list is ``[plugins.nltk] style_tags``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from grefine_parsing.text import Token

#: The default ``style_tags`` (case-insensitive, matched on whole tokens, longest first).
DEFAULT_STYLE_TAGS: tuple[str, ...] = (
    "masterpiece",
    "best quality",
    "high quality",
    "highest quality",
    "top quality",
    "ultra quality",
    "detailed",
    "highly detailed",
    "ultra detailed",
    "ultra-detailed",
    "hyper detailed",
    "hyperdetailed",
    "extremely detailed",
    "intricate",
    "intricate details",
    "sharp focus",
    "4k",
    "8k",
    "16k",
    "uhd",
    "8k uhd",
    "hd",
    "hdr",
    "high resolution",
    "high-resolution",
    "photorealistic",
    "hyperrealistic",
    "hyper realistic",
    "realistic",
    "photorealism",
    "oil painting",
    "watercolor",
    "watercolour",
    "digital art",
    "digital painting",
    "concept art",
    "illustration",
    "trending on artstation",
    "artstation",
    "octane render",
    "unreal engine",
    "unreal engine 5",
    "cinematic",
    "cinematic lighting",
    "dramatic lighting",
    "studio lighting",
    "volumetric lighting",
    "soft lighting",
    "award winning",
    "award-winning",
    "award winning photography",
    "4k wallpaper",
    "8k wallpaper",
    "hd wallpaper",
)

_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower())


_LEAD = re.compile(r"[^\W_]+")


def _lead(text: str) -> str:
    """The leading run of letters and digits (``"ultra-detailed"`` -> ``"ultra"``)."""
    m = _LEAD.match(text)
    return m.group(0) if m else text


@lru_cache(maxsize=16)
def _index(tags: tuple[str, ...]) -> dict[str, list[str]]:
    """Normalised tags by their leading word, longest first."""
    out: dict[str, list[str]] = {}
    for tag in sorted({_norm(t) for t in tags if _norm(t)}, key=len, reverse=True):
        out.setdefault(_lead(tag), []).append(tag)
    return out


def mark_style(tokens: Sequence[Token], prompt: str, tags: Iterable[str]) -> list[tuple[int, int]]:
    """Find the style tags among ``tokens`` (whole tokens, longest tag first, case-insensitive).

    :returns: ``(first token, end token)`` index ranges, one per occurrence, in order.
    """
    index = _index(tuple(tags))
    found: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        match = None
        for tag in index.get(_lead(tokens[i].text.lower()), ()):
            # The tag must cover whole tokens exactly: try the shortest token run that reaches it.
            for j in range(i, len(tokens)):
                text = _norm(prompt[tokens[i].start : tokens[j].end])
                if text == tag:
                    match = j + 1
                    break
                if len(text) >= len(tag):
                    break
            if match is not None:
                break
        if match is None:
            i += 1
            continue
        found.append((i, match))
        i = match
    return found
