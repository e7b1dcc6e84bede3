"""The weights stage 1 loads (``grefine weights``), found without torch or the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grefine_sdxl.settings import FP16_FIX_VAE, SDXLSettings

SDXL_LICENCE = "CreativeML Open RAIL++-M (accept it on the model page)"
#: The files of a diffusers SDXL inpainting repository that the pipeline reads (no .bin copies,
#: no other variants' weights): configs, tokenizers, and each model's weights, named one by one so
#: that a half-finished download is not taken for a complete one.
PIPELINE_FILES = [
    "model_index.json",
    "*/config.json",
    "scheduler/*",
    "tokenizer/*",
    "tokenizer_2/*",
]
WEIGHT_FILES = (
    "unet/diffusion_pytorch_model{}",
    "vae/diffusion_pytorch_model{}",
    "text_encoder/model{}",
    "text_encoder_2/model{}",
)


def _hub(name: str, repo: str, files: list[str], size: str, licence: str) -> dict[str, Any]:
    return {
        "name": name,
        "present": False,  # the hub cache is checked by the caller (every file pattern)
        "source": f"hf://{repo}",
        "files": dict.fromkeys(files, ""),
        "target": "",
        "size": size,
        "licence": licence,
        "how": f"hf download {repo} " + " ".join(f'--include "{f}"' for f in files),
    }


def _local(name: str, path: str, marker: str, licence: str) -> dict[str, Any]:
    folder = Path(path).expanduser()
    present = (folder / marker).is_file() if marker else folder.is_file()
    return {
        "name": name,
        "present": present,
        "source": "",
        "files": {},
        "target": str(folder),
        "licence": licence,
        "how": f"put {'a diffusers folder (with ' + marker + ')' if marker else 'the file'} at "
        f"{folder}",
    }


def known_dtype(context: Any) -> str | None:
    """The run's dtype when it is known without importing torch: ``None`` when both device and
    dtype are ``auto`` (the check before a run asks again with the device resolved)."""
    device, dtype = context.config.device, context.config.dtype
    if dtype == "auto" and device == "auto":
        return None
    dtype = context.dtype
    return "float32" if dtype == "float16" and context.device == "cpu" else dtype  # the fallback


def sdxl_weights(settings: SDXLSettings, dtype: str | None) -> list[dict[str, Any]]:
    """The inpainting pipeline and, in float16, the fp16-fix VAE (unless ``vae`` names one;
    ``dtype=None``: not known yet, the VAE is left out)."""
    from grefine_sdxl.loading import classify_source

    kind = classify_source(settings.model)
    if kind == "tiny":
        return []
    name = f"SDXL inpainting pipeline ({settings.model})"
    if kind == "hub":
        suffix = f".{settings.variant}.safetensors" if settings.variant else ".safetensors"
        files = [*PIPELINE_FILES, *(f.format(suffix) for f in WEIGHT_FILES)]
        size = "about 7 GB (fp16 variant)" if settings.variant else "about 14 GB"
        out = [_hub(name, settings.model, files, size, SDXL_LICENCE)]
    else:
        marker = "model_index.json" if kind == "folder" else ""
        out = [_local(name, settings.model, marker, SDXL_LICENCE)]
    vae = settings.vae if dtype is None else settings.vae_for(dtype)
    if vae and classify_source(vae, "plugins.sdxl.vae") == "hub":
        label = "SDXL VAE, float16 fix" if vae == FP16_FIX_VAE else f"SDXL VAE ({vae})"
        licence = "MIT" if vae == FP16_FIX_VAE else "see the model page"
        files = ["config.json", "diffusion_pytorch_model.safetensors"]
        out.append(_hub(label, vae, files, "about 0.3 GB", licence))
    return out
