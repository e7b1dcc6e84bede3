"""The weights stage 2 loads (``grefine weights``), found without torch or the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grefine_pasd.loading import HF, split_hub_path
from grefine_pasd.settings import PasdSettings

SD15_LICENCE = "CreativeML OpenRAIL-M"
PASD_LICENCE = (
    "none stated by the authors; it holds SD-1.5 weights, so CreativeML OpenRAIL-M applies"
)
#: The SD-1.5 parts PASD reads (its own UNet and ControlNet come from the PASD checkpoint).
SD15_FILES = [
    "model_index.json",
    "scheduler/*",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
SD15_NAME = "SD-1.5 VAE, text encoder, tokenizer, scheduler"
PASD_NAME = "PASD checkpoint (UNet with pixel-aware attention + ControlNet)"


def _includes(files: list[str]) -> str:
    return " ".join(f'--include "{f}"' for f in files)


def _sd15(sd_model: str) -> dict[str, Any]:
    folder = Path(sd_model).expanduser()
    if folder.is_dir() or sd_model.startswith((".", "/", "~")):
        return {
            "name": f"{SD15_NAME} ({sd_model})",
            "present": all((folder / p).is_dir() for p in ("vae", "text_encoder", "tokenizer")),
            "source": "",
            "files": {},
            "target": str(folder),
            "licence": SD15_LICENCE,
            "how": "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 "
            f"--local-dir {folder} {_includes(SD15_FILES)}",
        }
    return {
        "name": f"{SD15_NAME} ({sd_model})",
        "present": False,  # checked against the hub cache by the caller
        "source": f"hf://{sd_model}",
        "files": dict.fromkeys(SD15_FILES, ""),
        "target": "",
        "size": "about 0.8 GB",
        "licence": SD15_LICENCE,
        "how": f"hf download {sd_model} {_includes(SD15_FILES)}",
    }


def _checkpoint(value: str) -> dict[str, Any]:
    if value.startswith(HF):
        repo, sub = split_hub_path(value)
        files = [f"{sub}/unet/*", f"{sub}/controlnet/*"] if sub else ["unet/*", "controlnet/*"]
        return {
            "name": PASD_NAME,
            "present": False,  # checked against the hub cache by the caller
            "source": f"hf://{repo}",
            "files": dict.fromkeys(files, ""),
            "target": "",
            "size": "several GB (a 1.1 B-parameter UNet and a 0.36 B ControlNet)",
            "licence": PASD_LICENCE,
            "how": f"hf download {repo} {_includes(files)}",
        }
    folder = Path(value).expanduser()
    return {
        "name": PASD_NAME,
        "present": all((folder / p / "config.json").is_file() for p in ("unet", "controlnet")),
        "source": "",
        "files": {},
        "target": str(folder),
        "licence": PASD_LICENCE,
        "how": f"put a PASD checkpoint (unet/ and controlnet/) at {folder}, e.g. `hf download "
        f"yangtao9009/PASD --include 'pasd/checkpoint-100000/*' --local-dir DIR`",
    }


def pasd_weights(settings: PasdSettings) -> list[dict[str, Any]]:
    """SD-1.5's VAE, text encoder, tokenizer and scheduler, and the PASD checkpoint."""
    if settings.is_tiny:
        return []
    return [_sd15(settings.sd_model), _checkpoint(settings.pasd_checkpoint)]
