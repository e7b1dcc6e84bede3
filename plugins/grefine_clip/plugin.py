"""Plugin ``clip``: offers the torch backbones (``grefine_backbones``) that the quality indicators
run on: ``clip`` (CLIP Surgery, ``[plugins.clip]``) and ``oracle`` (planted truth, proves the
logic, not the quality). Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grefine_clip.runtime import get_clip, get_oracle
from grefine_clip.settings import ClipSettings
from grefine_core.markers import hookimpl


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {"clip": ClipSettings}


@hookimpl
def grefine_backbones() -> dict[str, Callable[[Any], Any]]:
    return {"clip": get_clip, "oracle": get_oracle}
