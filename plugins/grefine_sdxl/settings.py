"""The ``[plugins.sdxl]`` settings section of the stage-1 refiner."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from grefine_core.config import StrictModel

DEFAULT_MODEL = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
TINY_MODEL = "tiny"
#: The SDXL VAE fine-tuned to stay finite in float16 (MIT licence).
FP16_FIX_VAE = "madebyollin/sdxl-vae-fp16-fix"


class SDXLSettings(StrictModel):
    """Stage 1: SDXL inpainting inside the mask (docs/refiners.md explains every key).

    Loading: ``model`` is a hub id, a local diffusers folder, a single ``.safetensors`` file or
    ``"tiny"`` (random weights built in code); ``vae`` optionally replaces the VAE (e.g.
    ``madebyollin/sdxl-vae-fp16-fix`` for fp16 on a GPU); ``single_file_config`` gives a single
    file the diffusers configs it needs offline (a local diffusers folder or a hub id).

    Strength (docs/refiners.md): ``quality`` = ``strength_min + (strength_max - strength_min) * (1 - q)``
    with ``q = (p + a) / 2``; ``literal`` = ``q``; ``fixed`` = ``strength``.

    Crop-to-mask: when the mask covers less than ``crop_max_fraction`` of the image, only its
    bounding box plus ``crop_padding`` (fraction of the box's longer side, at least
    ``crop_min_padding_px``) is inpainted, at a working size between ``min_working_size`` and
    ``native_size`` (0 = the model's native size, and half of it).

    Prompt: ``emphasis`` = ``weight`` (defective phrases weighted ``1 + w`` through compel),
    ``suffix`` (``prompt + prompt_suffix``, the released code) or ``none``. ``prompt_weights`` =
    ``a1111`` reads the user's own ``(red:1.3)`` markup (multiplied by the emphasis), ``none``
    takes the prompt literally. Every mode cuts at the text encoders' 77-token window, with a
    warning; when every weight is 1 the pipeline encodes the plain text itself.
    """

    model: str = Field(
        DEFAULT_MODEL,
        description="SDXL inpainting weights: hub id, diffusers folder, .safetensors file or 'tiny'",
        json_schema_extra={"flag": "--sdxl-model"},
    )
    vae: str = ""
    fp16_fix_vae: str = Field(
        FP16_FIX_VAE,
        description="VAE used instead of the model's when the run is float16 and 'vae' is empty "
        "(SDXL's own VAE overflows in float16); '' = keep the model's",
    )
    variant: str = ""
    single_file_config: str = ""
    local_files_only: bool = False
    cpu_offload: bool = False
    vae_tiling: bool = False

    steps: int = Field(
        10, ge=1, le=1000, description="denoising steps", json_schema_extra={"flag": "--steps"}
    )
    guidance_scale: float = Field(
        7.5,
        ge=0.0,
        description="classifier-free guidance",
        json_schema_extra={"flag": "--guidance"},
    )
    negative_prompt: str = Field(
        "", description="negative prompt", json_schema_extra={"flag": "--negative-prompt"}
    )

    strength_mode: Literal["quality", "literal", "fixed"] = "quality"
    strength_min: float = Field(0.3, ge=0.0, le=1.0)
    strength_max: float = Field(0.9, ge=0.0, le=1.0)
    strength: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="a fixed inpainting strength instead of the quality-driven one",
        json_schema_extra={"flag": "--strength", "with": {"strength_mode": "fixed"}},
    )

    emphasis: Literal["weight", "suffix", "none"] = "weight"
    prompt_weights: Literal["a1111", "none"] = "a1111"
    prompt_suffix: str = ", high quality, hyper detail"

    crop_to_mask: bool = True
    per_region: bool = Field(
        True,
        description="inpaint each group of mask blobs in its own box (docs/refiners.md); false: "
        "one box over the whole mask",
    )
    region_emphasis: bool = Field(
        True,
        description="a region's prompt weights only the attribute defects whose object it covers "
        "(a missing object is weighted in every region)",
    )
    size_buckets: list[float] = Field(
        default_factory=lambda: [0.5, 0.75, 1.0],
        description="working-size sides snap up to these fractions of the native size, so "
        "compiled graphs are reused; [] = exact sizes",
    )
    crop_max_fraction: float = Field(0.5, ge=0.0, le=1.0)
    crop_padding: float = Field(0.25, ge=0.0, le=4.0)
    crop_min_padding_px: int = Field(16, ge=0)
    crop_max_aspect: float = Field(4.0, ge=1.0)
    native_size: int = Field(0, ge=0)
    min_working_size: int = Field(0, ge=0)

    def vae_for(self, dtype: str) -> str:
        """The VAE to load for a run in ``dtype``: ``vae``, else the float16 fix in float16."""
        if self.vae or self.model.strip().lower() == TINY_MODEL:
            return self.vae
        return self.fp16_fix_vae if dtype == "float16" else ""

    @model_validator(mode="after")
    def _check(self) -> SDXLSettings:
        if self.strength_min > self.strength_max:
            raise ValueError(
                f"strength_min ({self.strength_min}) must not exceed strength_max "
                f"({self.strength_max})"
            )
        if not self.model.strip():
            raise ValueError(
                f"model must name SDXL inpainting weights (a hub id such as {DEFAULT_MODEL!r}, "
                f"a local folder, a .safetensors file) or {TINY_MODEL!r}; got an empty string"
            )
        return self
