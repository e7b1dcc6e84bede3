"""Tiny random-weight PASD components for the ``tiny`` preset, tests and offline demos.

Shapes are those of the reference fixture (``../shared/fixtures/pasd``): a 3-level SD-1.5-shaped
PASD UNet (channels 16/32/32, 2 heads, cross-attention dim 32) with PACA, a PASD ControlNet
(``return_rgbs``, stem 8/16/16/32), a 4-block VAE (factor 8), UniPC from the SD-1.5 scheduler
config, plus a 2-layer CLIP text encoder (width 32) and the real CLIP BPE tokenizer rebuilt from
open_clip's bundled vocabulary. Weights are drawn in code from a fixed seed (never loaded from the
fixture). The outputs prove the plumbing, not image quality.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Any

import torch

TINY_SEED = 20240428

TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (16, 32, 32),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 2,
    "attention_head_dim": 2,
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
    "norm_eps": 1e-5,
}
TINY_CONTROLNET_STEM = (8, 16, 16, 32)
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (16, 16, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}
#: SD-1.5's ``scheduler/scheduler_config.json`` (PNDM), from which PASD builds UniPC.
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
TINY_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "projection_dim": 32,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
}


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter from a private generator (sorted names, so order is fixed).

    Matrices/kernels get N(0, 1/fan_in); 1-D ``*weight`` (norm scales) 1 + 0.1 N; other 1-D 0.05 N.
    Unlike default initialisation this leaves no zero convolution, so every path is exercised.
    """
    gen = torch.Generator("cpu").manual_seed(seed)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim >= 2:
                fan_in = p.numel() // p.shape[0]
                value = noise / fan_in**0.5
            elif name.endswith("weight"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.05 * noise
            p.copy_(value.to(p.dtype))
    return module


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table used by the BPE vocabulary."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def _open_clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locate without importing it (slow)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the tiny PASD tokenizer needs the CLIP BPE vocabulary bundled with open_clip_torch "
            "(pip install open_clip_torch)"
        )
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> Any:
    """The real 49408-token CLIP tokenizer, built offline from open_clip's bundled BPE merges."""
    from transformers import CLIPTokenizer

    lines = gzip.open(_open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(
        vocab={t: i for i, t in enumerate(vocab_list)}, merges=merges, model_max_length=77
    )
    if len(tok) != 49408:  # transformers 5 silently ignores unsupported vocab arguments
        raise RuntimeError(f"tiny CLIP tokenizer has {len(tok)} tokens, expected 49408")
    return tok


def tiny_scheduler() -> Any:
    """UniPC built from SD-1.5's PNDM config, as PASD builds it."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler.from_config(dict(SD15_SCHEDULER_CONFIG))


def tiny_pasd_models(seed: int = TINY_SEED) -> dict[str, Any]:
    """Tiny PASD UNet, ControlNet, VAE and scheduler with weights drawn from ``seed``.

    :returns: ``{"unet", "controlnet", "vae", "scheduler"}``, models in eval mode.
    """
    from diffusers import AutoencoderKL

    from grefine_pasd.controlnet import PASDControlNetModel
    from grefine_pasd.unet import PASDUNet2DConditionModel

    with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG
        torch.manual_seed(seed)
        unet = PASDUNet2DConditionModel(**TINY_UNET_CONFIG)
        cfg = {
            k: v
            for k, v in TINY_UNET_CONFIG.items()
            if k not in ("sample_size", "out_channels", "up_block_types")
        }
        controlnet = PASDControlNetModel(
            **cfg, conditioning_embedding_out_channels=TINY_CONTROLNET_STEM, return_rgbs=True
        )
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
    randomize_(unet, seed + 1)
    randomize_(controlnet, seed + 2)
    randomize_(vae, seed + 3)
    return {
        "unet": unet.eval(),
        "controlnet": controlnet.eval(),
        "vae": vae.eval(),
        "scheduler": tiny_scheduler(),
    }


def tiny_text_encoder(seed: int = TINY_SEED) -> Any:
    """A 2-layer width-32 ``CLIPTextModel`` with weights drawn from ``seed``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG))
    randomize_(model, seed + 4)
    return model.eval()


def tiny_pasd_pipeline(seed: int = TINY_SEED) -> Any:
    """A complete tiny :class:`~grefine_pasd.pipeline.PASDPipeline` (text encoder included)."""
    from grefine_pasd.pipeline import PASDPipeline

    parts = tiny_pasd_models(seed)
    pipe = PASDPipeline(
        vae=parts["vae"],
        text_encoder=tiny_text_encoder(seed),
        tokenizer=tiny_tokenizer(),
        unet=parts["unet"],
        controlnet=parts["controlnet"],
        scheduler=parts["scheduler"],
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
