"""grefine_nltk: the default prompt parser (NLTK constituency tree, paper Eq. 4 / Algorithm 1).

Public API (imported lazily, so ``import grefine_nltk`` loads neither NLTK nor spaCy)::

    from grefine_nltk import parse_prompt, parse_prompts, format_tree
    parsed = parse_prompt("a red cat on a wooden table", tagger="auto")
    print(format_tree(parsed))

The pluggy plugin lives in :mod:`grefine_nltk.plugin` (plugin name ``nltk``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["format_tree", "parse_prompt", "parse_prompts"]


def __getattr__(name: str) -> Any:
    if name in ("parse_prompt", "parse_prompts"):
        from grefine_nltk import parser

        return getattr(parser, name)
    if name == "format_tree":
        from grefine_core.display import format_tree

        return format_tree
    raise AttributeError(f"module 'grefine_nltk' has no attribute {name!r}")
