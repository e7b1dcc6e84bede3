"""The ``pasd`` plugin: fills the ``stage2`` slot with PASD (mild global refinement, docs/pasd.md).

Importing this module does not import torch; models are built on the first run and cached in
``context.models``.
"""

from __future__ import annotations

from typing import Any

from grefine_core.markers import hookimpl
from grefine_pasd.settings import SECTION, PasdSettings

PLUGIN_NAME = "pasd"


@hookimpl
def grefine_settings_models() -> dict[str, type[PasdSettings]]:
    """Declare the ``[plugins.pasd]`` settings section."""
    return {SECTION: PasdSettings}


@hookimpl
def grefine_weights(context: Any) -> list[dict[str, Any]]:
    """SD-1.5's parts and the PASD checkpoint (none for ``tiny``)."""
    from grefine_pasd.weights import pasd_weights

    return pasd_weights(context.settings(SECTION))


@hookimpl
def grefine_refine_stage2(image: Any, prompt: str, context: Any) -> Any:
    """Stage 2: PASD over the whole image, only the last ``strength`` of the schedule.

    :returns: a :class:`~grefine_core.types.StageOutput` of the input's size.
    """
    from grefine_pasd.stage import refine_stage2

    return refine_stage2(image, prompt, context)
