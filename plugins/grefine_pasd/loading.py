"""Loading real PASD weights: SD-1.5 components + an official PASD checkpoint folder.

Layout expected (PASD.md section 3)::

    <pasd_checkpoint>/unet/{config.json, diffusion_pytorch_model.safetensors|.bin}
    <pasd_checkpoint>/controlnet/{config.json, diffusion_pytorch_model.safetensors|.bin}
    <sd_model>/{vae,text_encoder,tokenizer,scheduler}/   (hub id or local folder)

The SD-1.5 ``unet/`` is not used: the PASD UNet file holds the whole UNet.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from grefine_core.errors import MissingWeightsError
from grefine_core.placement import run_dtype

log = logging.getLogger(__name__)

SD15_PARTS = ("vae", "text_encoder", "tokenizer", "scheduler")
LICENCE_NOTE = (
    "These weights are not part of grefine: SD-1.5 and the PASD checkpoints (which contain the "
    "SD-1.5 UNet) come under the CreativeML OpenRAIL-M licence and its use restrictions; read "
    "and accept it on the model page before use."
)
PASD_DOWNLOAD_HINT = (
    "get the PASD SD-1.5 checkpoint with `grefine weights fetch` (it downloads "
    "pasd/checkpoint-100000/{unet,controlnet} of huggingface.co/yangtao9009/PASD into the Hugging "
    "Face cache, the default hf://yangtao9009/PASD/pasd/checkpoint-100000), or download it by "
    "hand (`hf download yangtao9009/PASD --include 'pasd/checkpoint-100000/*'`, or pasd.zip from "
    "the yangxy/PASD README) and set plugins.pasd.pasd_checkpoint to the folder holding unet/ and "
    "controlnet/. " + LICENCE_NOTE
)
SD15_DOWNLOAD_HINT = (
    "download Stable Diffusion v1.5 in diffusers layout (e.g. `hf download "
    "stable-diffusion-v1-5/stable-diffusion-v1-5 --include 'vae/*' 'text_encoder/*' "
    "'tokenizer/*' 'scheduler/*' --local-dir checkpoints/stable-diffusion-v1-5`) and set "
    "plugins.pasd.sd_model to that folder (or to a hub id when online). " + LICENCE_NOTE
)
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _check_model_folder(folder: Path, what: str) -> None:
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(
            f"PASD {what} not found: {str(folder / 'config.json')!r} does not exist; "
            + PASD_DOWNLOAD_HINT
        )
    if not any((folder / name).is_file() for name in _WEIGHTS):
        raise MissingWeightsError(
            f"PASD {what} weights not found in {str(folder)!r} (expected "
            f"{' or '.join(_WEIGHTS)}); " + PASD_DOWNLOAD_HINT
        )


HF = "hf://"


def split_hub_path(value: str) -> tuple[str, str]:
    """``hf://org/repo/sub/folder`` -> ``("org/repo", "sub/folder")``."""
    parts = value[len(HF) :].strip("/").split("/")
    return "/".join(parts[:2]), "/".join(parts[2:])


def hub_folder(value: str) -> Path:
    """Where ``hf://org/repo/sub`` is in the hub cache (its main revision), without the network;
    a path that does not exist when the repository is not cached."""
    from grefine_core.hub import cached_revisions, hub_cache_dir

    repo, sub = split_hub_path(value)
    commit = cached_revisions(repo).get("main", "not-cached")
    return hub_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots" / commit / sub


def check_pasd_checkpoint(folder: str | Path) -> Path:
    """Check that ``folder`` is a PASD checkpoint (``unet/`` and ``controlnet/`` with weights).

    :param folder: a folder, or ``hf://org/repo/subfolder`` in the Hugging Face cache.
    :raises MissingWeightsError: naming the missing file and what to download.
    """
    root = hub_folder(str(folder)) if str(folder).startswith(HF) else Path(folder).expanduser()
    if not root.is_dir():
        raise MissingWeightsError(
            f"PASD checkpoint folder {str(root)!r} (plugins.pasd.pasd_checkpoint) does not exist; "
            + PASD_DOWNLOAD_HINT
        )
    _check_model_folder(root / "unet", "UNet")
    _check_model_folder(root / "controlnet", "ControlNet")
    return root


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or "\\" in value or value.count("/") > 1


def _sd_part(loader: Any, sd_model: str, part: str, local_files_only: bool, **kwargs: Any) -> Any:
    local = Path(sd_model).expanduser()
    if local.is_dir():
        if not (local / part).is_dir():
            raise MissingWeightsError(
                f"SD-1.5 folder {str(local)!r} (plugins.pasd.sd_model) has no {part}/ "
                "subfolder; " + SD15_DOWNLOAD_HINT
            )
        source = str(local)
    elif _looks_like_path(sd_model):
        raise MissingWeightsError(
            f"SD-1.5 folder {sd_model!r} (plugins.pasd.sd_model) does not exist; "
            + SD15_DOWNLOAD_HINT
        )
    else:
        from grefine_core.hub import is_cached

        source = sd_model
        local_files_only = local_files_only or is_cached(sd_model)  # files present: stay offline
    try:
        return loader.from_pretrained(
            source, subfolder=part, local_files_only=local_files_only, **kwargs
        )
    except (OSError, ValueError) as e:
        raise MissingWeightsError(
            f"could not load the SD-1.5 {part} from {sd_model!r} (plugins.pasd.sd_model): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; " + SD15_DOWNLOAD_HINT
        ) from None


def load_pasd_pipeline(
    sd_model: str,
    pasd_checkpoint: str | Path,
    device: str = "cpu",
    dtype: str = "float32",
    local_files_only: bool = False,
    cpu_offload: bool = False,
) -> Any:
    """Build a :class:`~grefine_pasd.pipeline.PASDPipeline` from real weights.

    :param sd_model: SD-1.5 hub id or local folder (``vae``, ``text_encoder``, ``tokenizer``,
        ``scheduler`` are used; the scheduler config becomes UniPC as in the reference).
    :param pasd_checkpoint: the PASD ``checkpoint-N`` folder.
    :param device: torch device string.
    :param dtype: ``float32``, ``float16`` or ``bfloat16``.
    :param local_files_only: never contact the hub.
    :param cpu_offload: diffusers' model CPU offload on a GPU ``device`` (ignored on the CPU).
    :raises MissingWeightsError: when a file is missing, with what to download and where.
    """
    import torch
    from diffusers import AutoencoderKL, UniPCMultistepScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from grefine_pasd.controlnet import load_pasd_controlnet
    from grefine_pasd.pipeline import PASDPipeline
    from grefine_pasd.unet import PASDUNet2DConditionModel

    torch_dtype = getattr(torch, run_dtype(device, dtype, "pasd"))
    root = check_pasd_checkpoint(pasd_checkpoint)
    unet = PASDUNet2DConditionModel.from_pretrained(str(root / "unet"), torch_dtype=torch_dtype)
    controlnet = load_pasd_controlnet(root / "controlnet", torch_dtype=torch_dtype)
    vae = _sd_part(AutoencoderKL, sd_model, "vae", local_files_only, torch_dtype=torch_dtype)
    text_encoder = _sd_part(
        CLIPTextModel, sd_model, "text_encoder", local_files_only, torch_dtype=torch_dtype
    )
    tokenizer = _sd_part(CLIPTokenizer, sd_model, "tokenizer", local_files_only)
    scheduler = _sd_part(UniPCMultistepScheduler, sd_model, "scheduler", local_files_only)
    pipe = PASDPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        controlnet=controlnet,
        scheduler=scheduler,
    )
    if cpu_offload and device != "cpu":
        pipe.enable_model_cpu_offload(device=device)
        return pipe
    return pipe.to(device)
