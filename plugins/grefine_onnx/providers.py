"""ONNX Runtime sessions: providers in order TensorRT -> CUDA -> CPU, with logged fallbacks.

``onnxruntime-gpu`` lists the TensorRT and CUDA providers in ``get_available_providers()`` even on
a machine without a GPU (they are compiled in, not usable), so the GPU is detected from what a
created session actually runs on, ``session.get_providers()``. Every requested provider that is
not obtained is reported with a warning, never dropped silently; the CPU provider is always the
last resort.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grefine_quality.extras import require

from grefine_core.errors import ConfigError

log = logging.getLogger("grefine.onnx")

#: What installs the packages of the onnx backend (exactly one of the two ONNX Runtime builds:
#: both install the same ``onnxruntime`` module).
INSTALL_HINT = 'pip install "grefine[onnx]" (or "grefine[onnx-gpu]" for CUDA; never both)'


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module (CPU or GPU build).

    :raises MissingExtraError: it is not installed, naming the pip command (exit status 2).
    """
    return require("onnxruntime", plugin="onnx", what="ONNX Runtime", extra=INSTALL_HINT)


def import_onnx() -> Any:
    """The ``onnx`` package (model protos; torch's exporter needs it too).

    :raises MissingExtraError: it is not installed, naming the pip command (exit status 2).
    """
    return require("onnx", plugin="onnx", what="the onnx package", extra=INSTALL_HINT)


#: Short names -> ONNX Runtime provider names.
PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GPU_PROVIDERS: frozenset[str] = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})
_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are created (built from ``[plugins.onnx]`` by :meth:`from_settings`).

    :ivar providers: short names in order of preference (``tensorrt``, ``cuda``, ``cpu``).
    :ivar io_binding: ``auto`` binds inputs/outputs to device memory on a GPU provider only.
    :ivar trt_cache_dir: TensorRT engine + timing cache folder (``None``: no engine cache).
    :ivar trt_fp16: let TensorRT build float16 engines.
    :ivar cuda_tf32: let the CUDA provider run float32 MatMul / Conv in TF32.
    """

    providers: tuple[str, ...] = ("tensorrt", "cuda", "cpu")
    device_id: int = 0
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool = True
    graph_optimization: str = "all"
    io_binding: str = "auto"
    cuda_tf32: bool = False
    trt_engine_cache: bool = True
    trt_cache_dir: str | None = None
    trt_fp16: bool = False
    trt_max_workspace_gb: float = 4.0
    trt_max_image_batch: int = 16
    trt_max_text_batch: int = 256
    check_driver: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        unknown = [p for p in self.providers if p not in PROVIDER_NAMES]
        if unknown or not self.providers:
            raise ConfigError(
                f"[plugins.onnx] providers: unknown or empty {list(self.providers)}; valid: "
                f"{', '.join(PROVIDER_NAMES)}"
            )
        if self.graph_optimization not in _OPT_LEVELS:
            raise ConfigError(
                f"[plugins.onnx] graph_optimization {self.graph_optimization!r}; valid: "
                f"{', '.join(_OPT_LEVELS)}"
            )
        if self.io_binding not in ("auto", "on", "off"):
            raise ConfigError(
                f"[plugins.onnx] io_binding {self.io_binding!r}; valid: auto, on, off"
            )

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> SessionConfig:
        """From an :class:`~grefine_onnx.settings.OnnxSettings` (plus keyword overrides)."""
        values = {
            "providers": tuple(settings.providers),
            "device_id": settings.device_id,
            "intra_op_threads": settings.intra_op_threads,
            "inter_op_threads": settings.inter_op_threads,
            "allow_spinning": settings.allow_spinning,
            "graph_optimization": settings.graph_optimization,
            "io_binding": settings.io_binding,
            "cuda_tf32": settings.cuda_tf32,
            "trt_engine_cache": settings.trt_engine_cache,
            "trt_cache_dir": settings.trt_engine_cache_dir or None,
            "trt_fp16": settings.fp16,
            "trt_max_workspace_gb": settings.trt_max_workspace_gb,
            "trt_max_image_batch": settings.trt_max_image_batch,
            "trt_max_text_batch": settings.trt_max_text_batch,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def wants_gpu(self) -> bool:
        return any(p in ("tensorrt", "cuda") for p in self.providers)


def nvidia_driver_present() -> bool:
    """Whether the NVIDIA driver library can be loaded (without it no GPU provider can work).

    Checked before asking ONNX Runtime for a GPU provider, because ORT prints a long error for
    each GPU provider it fails to load.
    """
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def session_options(config: SessionConfig) -> Any:
    """``onnxruntime.SessionOptions`` for ``config`` (threads, spinning, optimisation level)."""
    ort = import_onnxruntime()

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[config.graph_optimization]
    if config.intra_op_threads:
        so.intra_op_num_threads = int(config.intra_op_threads)
    if config.inter_op_threads:
        so.inter_op_num_threads = int(config.inter_op_threads)
    spin = "1" if config.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return so


def _shape_text(shapes: Mapping[str, Sequence[int]]) -> str:
    return ",".join(
        f"{name}:{'x'.join(str(int(d)) for d in dims)}" for name, dims in shapes.items()
    )


def tensorrt_options(
    config: SessionConfig, profile: Mapping[str, Mapping[str, Sequence[int]]] | None = None
) -> dict[str, Any]:
    """TensorRT provider options: fp16, workspace, engine + timing cache, shape profile.

    :param profile: ``{"min"|"opt"|"max": {input: shape}}`` for a dynamic-shape graph; TensorRT
        builds one engine covering that range instead of one per new shape.
    """
    opts: dict[str, Any] = {
        "device_id": int(config.device_id),
        "trt_fp16_enable": bool(config.trt_fp16),
        "trt_max_workspace_size": int(config.trt_max_workspace_gb * (1 << 30)),
    }
    if config.trt_engine_cache and config.trt_cache_dir:
        Path(config.trt_cache_dir).mkdir(parents=True, exist_ok=True)
        opts.update(
            {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(config.trt_cache_dir),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(config.trt_cache_dir),
            }
        )
    if profile:
        opts["trt_profile_min_shapes"] = _shape_text(profile["min"])
        opts["trt_profile_opt_shapes"] = _shape_text(profile["opt"])
        opts["trt_profile_max_shapes"] = _shape_text(profile["max"])
    return opts


def provider_plan(
    config: SessionConfig,
    profile: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The ``(provider, options)`` list to ask ONNX Runtime for, in order, CPU last.

    Providers missing from this ONNX Runtime build, and GPU providers on a machine without the
    NVIDIA driver, are dropped here with a warning.
    """
    ort = import_onnxruntime()

    available = set(ort.get_available_providers())
    driver = (not config.check_driver) or (not config.wants_gpu) or nvidia_driver_present()
    plan: list[tuple[str, dict[str, Any]]] = []
    for short in config.providers:
        name = PROVIDER_NAMES[short]
        if name not in available:
            log.warning(
                "onnx: execution provider %r (%s) is not part of this onnxruntime build "
                "(available: %s); falling back to the next provider",
                short,
                name,
                ", ".join(sorted(available)),
            )
            continue
        if name in GPU_PROVIDERS and not driver:
            log.warning(
                "onnx: execution provider %r requested but no NVIDIA driver can be loaded on "
                "this machine (libcuda); falling back to the next provider",
                short,
            )
            continue
        if name == "TensorrtExecutionProvider":
            plan.append((name, tensorrt_options(config, profile)))
        elif name == "CUDAExecutionProvider":
            # ORT enables TF32 by default; off, float32 results match torch's (whose matmuls
            # default to full float32) to ~1e-5 instead of ~1e-3 on Ampere and newer GPUs.
            opts = {"device_id": int(config.device_id), "use_tf32": int(config.cuda_tf32)}
            plan.append((name, opts))
        else:
            plan.append((name, {}))
    if not any(name == PROVIDER_NAMES["cpu"] for name, _ in plan):
        plan.append((PROVIDER_NAMES["cpu"], {}))
    return plan


@dataclass
class SessionInfo:
    """A created session and what it really runs on.

    :ivar providers: ``session.get_providers()`` (the truth, not what was asked for).
    :ivar on_gpu: a TensorRT or CUDA provider is active.
    """

    session: Any
    providers: list[str]
    on_gpu: bool
    requested: list[str]


def create_session(
    path: str | Path,
    config: SessionConfig,
    profile: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
    *,
    what: str = "",
) -> SessionInfo:
    """An ``InferenceSession`` for ``path`` with the providers of ``config``.

    Each requested provider the session does not end up using is reported with a warning (ORT
    itself falls back when a provider library fails to load).

    :param profile: TensorRT shape profile of a dynamic-shape graph (see :func:`tensorrt_options`).
    :param what: a name for messages (e.g. ``"image encoder"``).
    """
    ort = import_onnxruntime()

    plan = provider_plan(config, profile)
    if any(name in GPU_PROVIDERS for name, _ in plan):
        _preload_cuda_libraries()
    label = what or Path(path).name
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(config), providers=plan
        )
    except Exception as e:  # noqa: BLE001 - ORT raises plain RuntimeError/Fail for every cause
        if all(name == PROVIDER_NAMES["cpu"] for name, _ in plan):
            raise
        log.warning(
            "onnx: creating the %s session with %s failed (%s: %s); retrying on the CPU provider",
            label,
            [n for n, _ in plan],
            type(e).__name__,
            str(e)[:300],
        )
        session = ort.InferenceSession(
            str(path), sess_options=session_options(config), providers=[PROVIDER_NAMES["cpu"]]
        )
    active = list(session.get_providers())
    requested = [name for name, _ in plan]
    for name in requested:
        if name not in active:
            log.warning(
                "onnx: %s: execution provider %s was requested but the session runs on %s "
                "(ONNX Runtime could not initialise it: missing CUDA / cuDNN / TensorRT "
                "libraries or no usable GPU)",
                label,
                name,
                ", ".join(active),
            )
    return SessionInfo(
        session=session,
        providers=active,
        on_gpu=any(p in GPU_PROVIDERS for p in active),
        requested=requested,
    )


def _preload_cuda_libraries() -> None:
    """Load CUDA / cuDNN from the pip ``nvidia-*`` wheels (torch's) so the CUDA provider finds
    them without ``LD_LIBRARY_PATH``. Importing torch first has the same effect."""
    ort = import_onnxruntime()

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # noqa: BLE001 - best effort; ORT reports the real failure later
        log.debug("onnx: preload_dlls failed: %s", e)


def _identity_model() -> bytes:
    """A one-node float32 Identity model, serialised: enough to ask ORT which providers work."""
    onnx = import_onnx()
    helper, TensorProto = onnx.helper, onnx.TensorProto
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def probe_providers(config: SessionConfig) -> tuple[str, ...]:
    """Which of ``config.providers`` really work here, asked once per backend.

    Drops (with a warning) providers missing from the build or without a driver, then creates a
    session on a trivial model with the remaining CUDA / CPU providers and keeps only what
    ``session.get_providers()`` reports. TensorRT is kept when CUDA works (it needs a real graph
    to be tried; :func:`create_session` reports it if it then fails).

    :returns: short provider names, CPU last.
    """
    ort = import_onnxruntime()

    plan = provider_plan(config)
    names = [n for n, _ in plan]
    gpu_plan = [(n, o) for n, o in plan if n == PROVIDER_NAMES["cuda"]]
    cuda_ok = False
    if any(n in GPU_PROVIDERS for n in names):
        if not gpu_plan:  # TensorRT alone: CUDA tells whether a GPU is usable at all
            gpu_plan = [(PROVIDER_NAMES["cuda"], {"device_id": int(config.device_id)})]
        _preload_cuda_libraries()
        session = ort.InferenceSession(
            _identity_model(),
            sess_options=session_options(config),
            providers=[*gpu_plan, (PROVIDER_NAMES["cpu"], {})],
        )
        cuda_ok = PROVIDER_NAMES["cuda"] in session.get_providers()
        if not cuda_ok:
            log.warning(
                "onnx: execution provider(s) %s requested but ONNX Runtime could not start a "
                "GPU session (session providers: %s; missing CUDA / cuDNN libraries or no usable "
                "GPU); falling back to the CPU provider",
                ", ".join(n for n in names if n in GPU_PROVIDERS),
                ", ".join(session.get_providers()),
            )
    short = {v: k for k, v in PROVIDER_NAMES.items()}
    working = [short[n] for n in names if n not in GPU_PROVIDERS or cuda_ok]
    return tuple(working)
