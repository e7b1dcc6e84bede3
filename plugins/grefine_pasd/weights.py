"""The weights stage 2 loads (``grefine weights``), found without torch or the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grefine_core.hub import is_cached
from grefine_pasd.settings import PasdSettings

SD15_LICENCE = "CreativeML OpenRAIL-M"
PASD_REPO = "yangtao9009/PASD"
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


def _sd15(sd_model: str) -> dict[str, Any]:
    folder = Path(sd_model).expanduser()
    if folder.is_dir() or sd_model.startswith((".", "/", "~")):
        return {
            "name": f"SD-1.5 VAE, text encoder, tokenizer, scheduler ({sd_model})",
            "present": all((folder / p).is_dir() for p in ("vae", "text_encoder", "tokenizer")),
            "source": "",
            "files": {},
            "target": str(folder),
            "licence": SD15_LICENCE,
            "how": f"hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir {folder} "
            + " ".join(f'--include "{f}"' for f in SD15_FILES),
        }
    return {
        "name": f"SD-1.5 VAE, text encoder, tokenizer, scheduler ({sd_model})",
        "present": is_cached(sd_model),
        "source": f"hf://{sd_model}",
        "files": dict.fromkeys(SD15_FILES, ""),
        "target": "",
        "size": "about 0.8 GB",
        "licence": SD15_LICENCE,
        "how": f"hf download {sd_model} " + " ".join(f'--include "{f}"' for f in SD15_FILES),
    }


def _checkpoint(folder_text: str) -> dict[str, Any]:
    folder = Path(folder_text).expanduser()
    present = all((folder / part / "config.json").is_file() for part in ("unet", "controlnet"))
    return {
        "name": "PASD checkpoint (UNet with pixel-aware attention + ControlNet)",
        "present": present,
        "source": f"hf://{PASD_REPO}",
        "files": {"pasd.zip": ""},
        "target": str(folder),
        "unpack": True,
        "contains": ["unet", "controlnet"],
        "size": "several GB (fp32 UNet + ControlNet; not checked offline)",
        "licence": "none stated by the authors; it holds SD-1.5 weights, so CreativeML "
        "OpenRAIL-M applies",
        "how": f"download pasd.zip (huggingface.co/{PASD_REPO}, or the link in the yangxy/PASD "
        f"README) and unzip it so that {folder}/unet/ and {folder}/controlnet/ exist",
    }


def pasd_weights(settings: PasdSettings) -> list[dict[str, Any]]:
    """SD-1.5's VAE, text encoder, tokenizer and scheduler, and the PASD checkpoint."""
    if settings.is_tiny:
        return []
    return [_sd15(settings.sd_model), _checkpoint(settings.pasd_checkpoint)]
