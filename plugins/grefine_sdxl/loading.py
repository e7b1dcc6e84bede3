"""Loading the SDXL inpainting pipeline: hub id, local diffusers folder, single file, or ``tiny``.

``tiny`` goes through the same code as real weights: the in-code pipeline is written with
``save_pretrained`` to a temporary folder and read back by :func:`from_pretrained_source`.
Missing weights raise :class:`~grefine_core.errors.MissingWeightsError` naming what was tried and
how to get it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grefine_core.errors import ConfigError, MissingWeightsError
from grefine_core.placement import run_dtype
from grefine_sdxl.settings import DEFAULT_MODEL, TINY_MODEL, SDXLSettings

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

LICENCE_NOTE = (
    "SDXL weights are not part of grefine and keep their own licence (CreativeML Open RAIL++-M "
    "for SDXL 1.0 and diffusers/stable-diffusion-xl-1.0-inpainting-0.1): read and accept it on the "
    "model page before use."
)


def classify_source(model: str, setting: str = "plugins.sdxl.model") -> str:
    """What ``model`` names: ``"tiny"``, ``"folder"``, ``"single_file"`` or ``"hub"``.

    :param model: the value to classify.
    :param setting: the configuration key it came from (for messages).

    :raises MissingWeightsError: a path that does not exist.
    :raises ConfigError: an existing file that is not a checkpoint.
    """
    text = model.strip()
    if text.lower() == TINY_MODEL:
        return "tiny"
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
            return "single_file"
        raise ConfigError(
            f"{setting} = {text!r} is a file but not a checkpoint; expected a "
            f"{' or '.join(SINGLE_FILE_SUFFIXES)} file, a diffusers folder or a hub id"
        )
    looks_like_path = (
        text.startswith(("/", ".", "~", "\\"))
        or text.lower().endswith(SINGLE_FILE_SUFFIXES)
        or "\\" in text
        or ("/" in text and not _HUB_ID.match(text))
    )
    if looks_like_path:
        raise MissingWeightsError(
            f"weights not found: {setting} = {text!r} looks like a path "
            f"but {str(path)!r} does not exist. Point it at a diffusers folder (with "
            f"model_index.json), a single .safetensors file, or a hub id such as "
            f"{DEFAULT_MODEL!r}; preset 'tiny' needs no weights. {LICENCE_NOTE}"
        )
    return "hub"


def _hub_help(model_id: str) -> str:
    return (
        f"Download it once with `hf download {model_id}` (huggingface_hub CLI; about 10 GB in "
        'fp32, set plugins.sdxl.variant = "fp16" for the half-size files), or set '
        "plugins.sdxl.model to a local diffusers folder or a single .safetensors file. Offline, "
        f"use preset 'tiny'. {LICENCE_NOTE}"
    )


def _dtype_kwargs(torch_dtype: Any) -> dict[str, Any]:
    """``dtype=`` on diffusers versions that renamed ``torch_dtype``, else ``torch_dtype=``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": torch_dtype}
    return {"dtype": torch_dtype}


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Hide diffusers' and transformers' loading/saving progress bars for the block."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    before = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if before[0]:
            dlog.enable_progress_bar()
        if before[1]:
            tlog.enable_progress_bar()


def _load_vae(vae: str, torch_dtype: Any, local_files_only: bool) -> Any:
    from diffusers import AutoencoderKL

    kind = classify_source(vae, "plugins.sdxl.vae")
    try:
        if kind == "single_file":
            return AutoencoderKL.from_single_file(vae, **_dtype_kwargs(torch_dtype))
        return AutoencoderKL.from_pretrained(
            vae, local_files_only=local_files_only, **_dtype_kwargs(torch_dtype)
        )
    except (OSError, ValueError) as e:
        raise MissingWeightsError(
            f"VAE not found: plugins.sdxl.vae = {vae!r} ({kind}): {e}. Download it with "
            f'`hf download {vae}` or set plugins.sdxl.vae = "" to keep the model\'s own VAE.'
        ) from e


def from_pretrained_source(
    source: str,
    *,
    torch_dtype: Any,
    variant: str = "",
    vae: str = "",
    local_files_only: bool = False,
) -> Any:
    """``StableDiffusionXLInpaintPipeline.from_pretrained`` for a diffusers folder or hub id.

    The one loading path for real weights and for the ``tiny`` model (read back from its
    temporary folder).

    :raises MissingWeightsError: the folder/id cannot be loaded (not cached, incomplete folder).
    """
    from diffusers import StableDiffusionXLInpaintPipeline

    kwargs: dict[str, Any] = {"local_files_only": local_files_only, **_dtype_kwargs(torch_dtype)}
    if variant:
        kwargs["variant"] = variant
    if vae:
        kwargs["vae"] = _load_vae(vae, torch_dtype, local_files_only)
    folder = Path(source).expanduser()
    if folder.is_dir() and not (folder / "model_index.json").is_file():
        raise MissingWeightsError(
            f"plugins.sdxl.model = {source!r} is a folder without model_index.json; expected a "
            "diffusers pipeline folder (from save_pretrained or `hf download`). " + LICENCE_NOTE
        )
    try:
        with quiet_progress_bars():
            return StableDiffusionXLInpaintPipeline.from_pretrained(str(source), **kwargs)
    except ValueError as e:
        if not variant:
            raise
        # diffusers raises ValueError when the requested variant's files are not there.
        raise MissingWeightsError(
            f"plugins.sdxl.variant = {variant!r}: the weights of plugins.sdxl.model = "
            f"{source!r} are not available in that variant ({e}). Set plugins.sdxl.variant = "
            '"" to load the default files, or download the variant (`hf download '
            f"{source if not folder.is_dir() else DEFAULT_MODEL}`). {LICENCE_NOTE}"
        ) from e
    except OSError as e:
        where = "local folder" if folder.is_dir() else "hub id"
        raise MissingWeightsError(
            f"SDXL inpainting weights not found: plugins.sdxl.model = {source!r} ({where}, "
            f"local_files_only={local_files_only}, variant={variant or None!r}): {e}. "
            + _hub_help(source if where == "hub id" else DEFAULT_MODEL)
        ) from e


def _from_single_file(path: str, settings: SDXLSettings, torch_dtype: Any, vae: str) -> Any:
    from diffusers import StableDiffusionXLInpaintPipeline

    kwargs: dict[str, Any] = {"local_files_only": settings.local_files_only}
    if settings.single_file_config:
        kwargs["config"] = settings.single_file_config
    if vae:
        kwargs["vae"] = _load_vae(vae, torch_dtype, settings.local_files_only)
    try:
        with quiet_progress_bars():
            return StableDiffusionXLInpaintPipeline.from_single_file(
                path, **kwargs, **_dtype_kwargs(torch_dtype)
            )
    except (OSError, ValueError) as e:
        raise MissingWeightsError(
            f"could not load the single-file checkpoint plugins.sdxl.model = {path!r}: {e}. "
            "diffusers also needs the model's config files: offline, set "
            "plugins.sdxl.single_file_config to a local diffusers folder of the same architecture "
            f"(e.g. from `hf download {DEFAULT_MODEL} --exclude '*.safetensors'`). {LICENCE_NOTE}"
        ) from e


def _own_memory(pipe: Any) -> None:
    """Copy every weight into freshly allocated memory.

    Loaded tensors can be unaligned views of the (memory-mapped) files; own copies make the
    reloaded tiny model compute bit-for-bit what the in-memory one does, and let its temporary
    folder go.
    """
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.data = tensor.data.clone()


class _DropFp32CastWarning(logging.Filter):
    """diffusers 0.42 warns "modules ... should be kept in float32: []" whenever the pipeline
    casts its VAE (every inpainting call), even when the list is empty. Drop only that record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


_FP32_FILTER = _DropFp32CastWarning()


def prepare_pipeline(pipe: Any, device: str, cpu_offload: bool, vae_tiling: bool) -> Any:
    """Move to ``device`` (or enable model CPU offload on CUDA), VAE tiling, no progress bar."""
    diffusers_log = logging.getLogger("diffusers.models.modeling_utils")
    if _FP32_FILTER not in diffusers_log.filters:
        diffusers_log.addFilter(_FP32_FILTER)
    if cpu_offload and device != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_inpaint_pipeline(
    settings: SDXLSettings, device: str = "cpu", dtype: str = "float32"
) -> Any:
    """Load the pipeline that ``settings.model`` names.

    :param settings: the ``[plugins.sdxl]`` section.
    :param device: ``cpu`` or ``cuda``.
    :param dtype: ``float32``, ``float16`` or ``bfloat16`` (float16 becomes float32 on a CPU).
    :returns: a ready ``StableDiffusionXLInpaintPipeline``.
    :raises MissingWeightsError: the weights are not available (message says how to get them).
    """
    import torch

    dtype_name = run_dtype(device, dtype, "sdxl")
    torch_dtype = getattr(torch, dtype_name)
    vae = settings.vae_for(dtype_name)
    kind = classify_source(settings.model)
    if kind == "tiny":
        from grefine_sdxl.tiny import build_tiny_pipeline

        if settings.vae or settings.variant:
            log.warning(
                "sdxl: vae/variant are ignored for the tiny model (its VAE is built in code)"
            )

        with tempfile.TemporaryDirectory(prefix="grefine-tiny-sdxl-") as folder:
            with quiet_progress_bars():
                build_tiny_pipeline().save_pretrained(folder)
            pipe = from_pretrained_source(folder, torch_dtype=torch_dtype, local_files_only=True)
            _own_memory(pipe)
    elif kind == "single_file":
        pipe = _from_single_file(str(Path(settings.model).expanduser()), settings, torch_dtype, vae)
    else:
        pipe = from_pretrained_source(
            str(Path(settings.model).expanduser()) if kind == "folder" else settings.model,
            torch_dtype=torch_dtype,
            variant=settings.variant,
            vae=vae,
            local_files_only=settings.local_files_only or _cached(settings.model, kind),
        )
    return prepare_pipeline(pipe, device, settings.cpu_offload, settings.vae_tiling)


def _cached(model: str, kind: str) -> bool:
    """A hub id whose files the local cache holds loads offline (no request to the hub)."""
    from grefine_core.hub import is_cached

    return kind == "hub" and is_cached(model)


def cache_key(settings: SDXLSettings, device: str, dtype: str) -> tuple[Any, ...]:
    """The model-cache key: everything that changes what :func:`load_inpaint_pipeline` returns."""
    return (
        "grefine_sdxl.pipeline",
        settings.model,
        settings.vae_for(dtype),
        settings.variant,
        settings.single_file_config,
        settings.local_files_only,
        settings.cpu_offload,
        settings.vae_tiling,
        device,
        dtype,
    )


def native_size(pipe: Any) -> int:
    """The model's native resolution: ``unet.sample_size * vae_scale_factor`` (1024 for SDXL)."""
    sample = pipe.unet.config.sample_size
    sample = sample[0] if isinstance(sample, list | tuple) else sample
    return int(sample) * int(pipe.vae_scale_factor)


def size_multiple(pipe: Any) -> int:
    """Working sizes are multiples of this: the VAE factor times the UNet's downsampling, >= 8."""
    downs = max(len(pipe.unet.config.block_out_channels) - 1, 0)
    return max(8, int(pipe.vae_scale_factor) * 2**downs)
