"""Re-fusing: a new mask from a result's maps with other fuser settings, no map recomputed.

The maps (``P``, ``A_defect``) are the costly part of a run; the fuser is arithmetic on them. A UI
slider for tau or the dilation, a ComfyUI mask node, or a sweep over thresholds calls
:func:`refuse` on one result as often as it likes::

    result = g.assess("photo.png", "a red cat")
    mask = refuse(g, result, tau=0.3, dilate_px=8)      # the active fuser's settings
    print(mask.fraction)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from grefine_core import validation
from grefine_core.config import format_validation_error
from grefine_core.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from grefine_core.pipeline import GRefine
    from grefine_core.result import RefineResult
    from grefine_core.types import MaskResult


def fuser_settings(pipeline: GRefine) -> tuple[str, Any]:
    """``(section, settings)`` of the active fuser plugin (e.g. ``mask_paper`` and its
    ``tau``, ``dilate_px``, ``feather_sigma``).

    :raises UsageError: no fuser is active, or it declares no settings section.
    """
    name = pipeline.slot_plugin("fuser")
    if name is None:
        raise UsageError(
            "no fuser is active (select.fuser is none or disabled): nothing to re-fuse"
        )
    sections = sorted(pipeline.host.sections_by_plugin.get(name, ()))
    if not sections:
        raise UsageError(f"the fuser {name!r} declares no settings: nothing to change")
    return sections[0], pipeline.plugin_settings[sections[0]]


def refuse(pipeline: GRefine, result: RefineResult, **changes: Any) -> MaskResult:
    """The mask the active fuser makes from ``result``'s maps with ``changes`` to its settings.

    :param changes: fields of the fuser's settings section (validated as in a config file).
    :raises ConfigError: a field the fuser does not have, or a value out of its range (the
        message names the section, the field and what is valid).
    """
    section, current = fuser_settings(pipeline)
    try:
        settings = type(current).model_validate({**current.model_dump(), **changes})
    except ValidationError as e:
        lines = format_validation_error(e, type(current)).splitlines()
        raise ConfigError(
            f"invalid settings for [plugins.{section}]: " + "; ".join(x.strip() for x in lines)
        ) from None
    ctx = pipeline.run_context(result.seed, result.item_name, result.prompt)
    ctx.plugin_settings = {**pipeline.plugin_settings, section: settings}
    name = pipeline.slot_plugin("fuser")
    mask = pipeline.host.slot_caller("fuser", name)(
        perceptual=result.perceptual, alignment=result.alignment, context=ctx
    )
    return validation.check_mask(mask, tuple(result.perceptual.map.shape), name)


def with_mask(result: RefineResult, mask: MaskResult) -> RefineResult:
    """A copy of ``result`` with ``mask`` in place of its own (the maps are shared, not copied)."""
    return dataclasses.replace(result, mask=mask, trace=list(result.trace))
