"""grefine_clip: the torch CLIP Surgery backbone (:class:`~grefine_clip.model.SurgeryCLIP`) and the
planted-truth oracle backbone, offered to the quality indicators (``grefine_quality``) through
the ``grefine_backbones`` hook (plugin ``clip``).

The public names are imported lazily so that ``import grefine_clip`` (and the plugin module) do
not import torch::

    from grefine_clip import SurgeryCLIP, OracleCLIP
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "SurgeryCLIP": "grefine_clip.model",
    "OracleCLIP": "grefine_clip.oracle",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
