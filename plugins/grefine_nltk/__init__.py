"""grefine_nltk: the default prompt parser (NLTK constituency tree, paper Eq. 4 / Algorithm 1).

Public API (imported lazily, so ``import grefine_nltk`` loads neither NLTK nor spaCy)::

    from grefine_nltk import parse_prompt, parse_prompts
    from grefine_core.app.display import format_tree  # the phrase-tree printer
    parsed = parse_prompt("a red cat on a wooden table", tagger="auto")
    print(format_tree(parsed))

The pluggy plugin lives in :mod:`grefine_nltk.plugin` (plugin name ``nltk``).
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "parse_prompt": "grefine_nltk.parser",
    "parse_prompts": "grefine_nltk.parser",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
