"""Plugin ``onnx``: the ``onnx`` backbone (the CLIP Surgery encoders in ONNX Runtime, exported
from the torch ``clip`` backbone on first use) and the ``grefine export-onnx`` command.

Settings: ``[plugins.onnx]`` (it also reads ``[plugins.clip]``, declared by the ``clip`` plugin,
for the model to export). Importing this module does not import torch or onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grefine_core.markers import hookimpl
from grefine_onnx.runtime import get_onnx
from grefine_onnx.settings import OnnxSettings


def export_main(argv: list[str]) -> int:
    """``grefine export-onnx ...`` (imports torch and onnx only when run)."""
    from grefine_onnx.cli import main

    return int(main(argv) or 0)


@hookimpl
def grefine_register_commands() -> dict[str, tuple[str, object]]:
    return {
        "export-onnx": (
            "export CLIP Surgery encoders to ONNX (grefine export-onnx --help)",
            export_main,
        )
    }


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {"onnx": OnnxSettings}


@hookimpl
def grefine_backbones() -> dict[str, Callable[[Any], Any]]:
    return {"onnx": get_onnx}
