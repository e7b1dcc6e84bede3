"""Where plugin models run: the precision rule shared by the model plugins, and the report of
what a model really ran on. No torch import here; callers map the dtype name themselves."""

from __future__ import annotations

import logging
from typing import Any

from grefine_core.errors import ConfigError

#: The dtype names a model may run in; a configuration may also say ``auto`` (:func:`auto_dtype`).
DTYPES = ("float32", "float16", "bfloat16")
#: The device names a configuration may give: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"

#: Plugins that have already reported the float16-on-CPU fallback (``warn_once``).
_WARNED_FP16_CPU: set[str] = set()


def resolve_device(device: str) -> str:
    """The device a run uses: ``device``, or for ``auto`` the first of CUDA, MPS and the CPU that
    torch can use (torch is imported only then)."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def auto_dtype(device: str, dtype: str) -> str:
    """``dtype``, or for ``auto`` float16 on CUDA and float32 elsewhere (MPS and the CPU)."""
    return dtype if dtype != "auto" else ("float16" if device.startswith("cuda") else "float32")


def run_dtype(device: str, dtype: str, plugin: str, *, warn_once: bool = False) -> str:
    """The dtype name ``plugin`` runs its models in: ``dtype``, except float16 on the CPU (slow
    and partly unsupported there), which falls back to float32 with a warning.

    :param plugin: names the logger (``grefine.<plugin>``) and the message.
    :param warn_once: warn only the first time for this plugin in this process (for callers that
        ask on every run rather than once per model load).
    :raises ConfigError: ``dtype`` is not one of :data:`DTYPES`.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if device != "cpu" or dtype != "float16":
        return dtype
    if not (warn_once and plugin in _WARNED_FP16_CPU):
        _WARNED_FP16_CPU.add(plugin)
        logging.getLogger(f"grefine.{plugin}").warning(
            "%s: float16 is not supported on the CPU; using float32", plugin
        )
    return "float32"


def model_placement(model: Any) -> dict[str, str]:
    """``{"device": "cuda:0", "dtype": "float16"}`` of a torch module or a diffusers pipeline (its
    UNet's), for stage reports: what a model really ran on after any fallback. Empty when
    ``model`` tells neither (a fake in tests)."""
    unet = getattr(model, "unet", None)
    target = unet if unet is not None else model
    out: dict[str, str] = {}
    device = getattr(target, "device", None)
    dtype = getattr(target, "dtype", None)
    if device is not None:
        out["device"] = str(device)
    if dtype is not None:
        out["dtype"] = str(dtype).removeprefix("torch.")
    return out
