"""Settings of the ``pasd`` section (``[plugins.pasd]``). No torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from grefine_core.config import StrictModel
from grefine_pasd.prompts import DEFAULT_ADDED_PROMPT, DEFAULT_NEGATIVE_PROMPT

SECTION = "pasd"
TINY = "tiny"
#: The PASD authors' checkpoint in their Hugging Face repository, read from the hub cache
#: (``grefine weights fetch`` puts it there; independent of the working folder).
DEFAULT_CHECKPOINT = "hf://yangtao9009/PASD/pasd/checkpoint-100000"


class PasdSettings(StrictModel):
    """Stage-2 PASD refiner settings.

    ``paper``: 10 steps at strength 0.1 (one denoising step, img2img-style tail of the schedule).
    ``reference``: 20 steps at strength 1.0 (the full PASD run with its latent start).
    ``tiny``: ``sd_model = pasd_checkpoint = "tiny"`` (random weights built in code).
    """

    sd_model: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="SD-1.5 hub id or local folder (vae, text_encoder, tokenizer, scheduler), or 'tiny'",
    )
    pasd_checkpoint: str = Field(
        DEFAULT_CHECKPOINT,
        description="PASD checkpoint holding unet/ and controlnet/: a folder ('~' expands) or "
        "hf://org/repo/subfolder in the Hugging Face cache (`grefine weights fetch` gets the "
        "default), or 'tiny'",
    )
    steps: int = Field(10, ge=1, le=1000, description="steps of the full schedule")
    strength: float = Field(
        0.1, ge=0.0, le=1.0, description="fraction of the schedule run: int(steps*strength) steps"
    )
    guidance_scale: float = Field(9.0, ge=0.0)
    conditioning_scale: float = Field(1.0, ge=0.0)
    added_noise_level: int | None = Field(
        900, ge=0, le=999, description="PASD's extra start noise (full schedule only; None = off)"
    )
    added_noise_mode: Literal["scheduler", "absolute", "none"] = Field(
        "scheduler",
        description="'scheduler' reproduces the reference (UniPC maps 900 to the last step)",
    )
    process_size: int = Field(
        768, ge=8, description="images whose short side is smaller are upscaled to it"
    )
    added_prompt: str = DEFAULT_ADDED_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    use_prompt: bool = Field(True, description="include the run's prompt in the PASD prompt")
    captioner: str = Field(
        "none", description="'package.module:function' (PIL image -> caption) or 'none'"
    )
    color_fix: Literal["wavelet", "adain", "none"] = "wavelet"
    latent_tiled_size: int = Field(320, ge=8)
    latent_tiled_overlap: int = Field(8, ge=0)
    local_files_only: bool = Field(False, description="never contact the Hugging Face hub")
    cpu_offload: bool = Field(
        False,
        description="keep the models in CPU memory and move each to the GPU only while it runs "
        "(diffusers' model CPU offload: less GPU memory, slower; GPU runs only)",
    )

    @model_validator(mode="after")
    def _check(self) -> PasdSettings:
        if self.latent_tiled_overlap >= self.latent_tiled_size:
            raise ValueError(
                f"latent_tiled_overlap ({self.latent_tiled_overlap}) must be smaller than "
                f"latent_tiled_size ({self.latent_tiled_size})"
            )
        if (self.sd_model == TINY) != (self.pasd_checkpoint == TINY):
            raise ValueError(
                "sd_model and pasd_checkpoint must both be 'tiny' or both be real weights "
                f"(got sd_model={self.sd_model!r}, pasd_checkpoint={self.pasd_checkpoint!r})"
            )
        return self

    @property
    def is_tiny(self) -> bool:
        return self.sd_model == TINY

    def steps_to_run(self) -> int:
        """Denoising steps actually run: ``int(steps * strength)`` (diffusers' img2img rule)."""
        return min(int(self.steps * self.strength), self.steps)
