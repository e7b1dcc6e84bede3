"""grefine_core: the kernel of G-Refine (plugin host, configuration, pipeline facade, types);
the application (CLI, batches, saving) is :mod:`grefine_core.app`.

Plugin authors need one import: ``from grefine_core import hookimpl, StrictModel, RunContext,
PerceptualResult, ParsedPrompt, Phrase, AlignmentResult, MaskResult, StageOutput,
MissingWeightsError, ...`` (every name in ``__all__``).

Importing it loads no torch, diffusers, spaCy or onnxruntime: those are imported by the plugins,
inside the functions that need them.

It does switch ONNX Runtime's telemetry off (``ORT_DISABLE_TELEMETRY=1``, unless the variable is
already set): onnxruntime reads it once, when it is first imported (diffusers imports it too), and
would otherwise resolve a telemetry host even when everything runs locally.
"""

import os as _os

_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from grefine_core.backbone import ClipBackbone
from grefine_core.config import GRefineConfig, StrictModel, load_config
from grefine_core.context import ModelCache, RunContext
from grefine_core.errors import (
    ConfigError,
    GRefineError,
    InputError,
    MissingWeightsError,
    OutputError,
    PluginError,
    UsageError,
)
from grefine_core.markers import hookimpl, hookspec
from grefine_core.types import (
    SLOTS,
    AlignmentResult,
    Emphasis,
    MaskResult,
    ParsedPrompt,
    PerceptualResult,
    Phrase,
    PhraseAlignment,
    StageOutput,
    StageRecord,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # The facade pulls in PIL and the plugin host; load it on first use.
    if name == "GRefine":
        from grefine_core.pipeline import GRefine

        return GRefine
    if name == "RefineResult":
        from grefine_core.result import RefineResult

        return RefineResult
    raise AttributeError(f"module 'grefine_core' has no attribute {name!r}")


__all__ = [
    "SLOTS",
    "AlignmentResult",
    "ClipBackbone",
    "ConfigError",
    "Emphasis",
    "GRefine",
    "GRefineConfig",
    "GRefineError",
    "InputError",
    "MaskResult",
    "MissingWeightsError",
    "ModelCache",
    "OutputError",
    "ParsedPrompt",
    "PerceptualResult",
    "Phrase",
    "PhraseAlignment",
    "PluginError",
    "RefineResult",
    "RunContext",
    "StageOutput",
    "StageRecord",
    "StrictModel",
    "UsageError",
    "hookimpl",
    "hookspec",
    "load_config",
]
