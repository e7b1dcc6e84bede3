"""``PASDPipeline``: PASD's inference loop on diffusers components (PASD.md section 2).

What it does, in order:

1. Prompt: ``captioner(image)``, ``prompt`` and ``added_prompt`` assembled (see
   :mod:`grefine_pasd.prompts`) and encoded with the SD-1.5 CLIP text encoder; CFG batch order
   ``[negative, positive]``, CFG iff ``guidance_scale > 1``. Or pass ``prompt_embeds``.
2. Schedule: ``scheduler.set_timesteps(num_inference_steps)``; with ``strength < 1`` only the last
   ``int(num_inference_steps * strength)`` steps run (the G-Refine extension, img2img style);
   zero steps return the input unchanged.
3. Latent start. Full schedule (the reference): the VAE posterior sample of the image (x 0.18215)
   is noised to ``timesteps[0]`` and then noised again at ``added_noise_level`` through the
   scheduler's own ``add_noise`` (UniPC maps a timestep absent from the inference schedule to the
   *last* step, so 900 acts as t=50 at 20 steps: reproduced with ``added_noise_mode="scheduler"``;
   ``"absolute"`` uses the true t). RNG draw order: posterior, noise 1, noise 2. Partial schedule:
   the posterior sample is noised once to the first timestep run (no added noise).
4. Loop: ControlNet on the (doubled) latent with the control image in [0, 1]; its scaled residuals
   feed the PASD UNet (skip additions + PACA); CFG; scheduler step. Latents larger than
   ``latent_tiled_size**2`` are processed in Gaussian-blended tiles (:mod:`grefine_pasd.tiling`).
5. Decode (diffusers' tiled VAE only above the reference's thresholds), optional colour fix
   against the input (``color_fix="wavelet"|"adain"``).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from grefine_pasd.color_fix import adain, color_fix_pil, wavelet_reconstruction
from grefine_pasd.prompts import assemble_prompt
from grefine_pasd.tiling import gaussian_weights, needs_tiling, tile_boxes

#: The reference's tiled-VAE hook bypasses itself up to these sizes (PASD.md section 2.7).
VAE_ENCODE_TILE_ABOVE_PX = 1088
VAE_DECODE_TILE_ABOVE_LATENT = 246
ADDED_NOISE_MODES = ("scheduler", "absolute", "none")
COLOR_FIXES = ("wavelet", "adain", "none")


@dataclass
class PASDPipelineOutput(BaseOutput):
    """Result of :class:`PASDPipeline`.

    :ivar images: list of PIL images, a ``(B, H, W, 3)`` float array, a ``(B, 3, H, W)`` tensor,
        or latents, depending on ``output_type``.
    :ivar steps_run: denoising steps actually run.
    :ivar timesteps: the timesteps run.
    :ivar tiled: whether latent tiling was used.
    :ivar prompt: the assembled prompt (``None`` when embeddings were given).
    """

    images: Any
    steps_run: int
    timesteps: list[int]
    tiled: bool
    prompt: str | None = None


def images_to_tensor(image: Any) -> torch.Tensor:
    """PIL image(s), a ``(H, W, 3)``/``(B, H, W, 3)`` array in [0, 1] or a tensor -> ``(B, 3, H, W)``.

    Tensors are taken as ``(B, 3, H, W)`` (or ``(3, H, W)``) in [0, 1].
    """
    if isinstance(image, torch.Tensor):
        return image.unsqueeze(0) if image.ndim == 3 else image
    if isinstance(image, np.ndarray):
        arr = image[None] if image.ndim == 3 else image
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(0, 3, 1, 2)
    images = image if isinstance(image, list | tuple) else [image]
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2)


class PASDPipeline(DiffusionPipeline):
    """PASD super-resolution / restoration pipeline (SD-1.5 variant) on diffusers components.

    :param vae: ``AutoencoderKL`` (SD-1.5's).
    :param text_encoder: ``CLIPTextModel`` or ``None`` (then pass ``prompt_embeds``).
    :param tokenizer: ``CLIPTokenizer`` or ``None``.
    :param unet: :class:`~grefine_pasd.unet.PASDUNet2DConditionModel`.
    :param controlnet: :class:`~grefine_pasd.controlnet.PASDControlNetModel`.
    :param scheduler: a diffusers scheduler; PASD uses ``UniPCMultistepScheduler`` built from the
        SD-1.5 scheduler config.
    """

    model_cpu_offload_seq = "text_encoder->controlnet->unet->vae"
    _optional_components = ["text_encoder", "tokenizer"]

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        unet: Any,
        controlnet: Any,
        scheduler: Any,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            controlnet=controlnet,
            scheduler=scheduler,
        )
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ prompts

    def encode_prompt(self, prompt: str | list[str], device: torch.device) -> torch.Tensor:
        """CLIP last hidden states of ``prompt`` (padded to the tokenizer's max length)."""
        if self.tokenizer is None or self.text_encoder is None:
            raise ValueError(
                "PASDPipeline has no tokenizer/text_encoder: pass prompt_embeds and "
                "negative_prompt_embeds instead of prompt/negative_prompt"
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        return self.text_encoder(ids)[0].to(dtype=self.unet.dtype)

    def _prompt_embeddings(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        batch: int,
        do_cfg: bool,
        device: torch.device,
    ) -> torch.Tensor:
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(prompt if prompt is not None else "", device)
        if do_cfg and negative_prompt_embeds is None:
            n = prompt_embeds.shape[0]
            neg = negative_prompt if negative_prompt is not None else ""
            negative_prompt_embeds = self.encode_prompt(
                [neg] * n if isinstance(neg, str) else neg, device
            )
        embeds = prompt_embeds.to(device=device, dtype=self.unet.dtype)
        if embeds.shape[0] == 1 and batch > 1:
            embeds = embeds.repeat(batch, 1, 1)
        if not do_cfg:
            return embeds
        neg_embeds = negative_prompt_embeds.to(device=device, dtype=self.unet.dtype)
        if neg_embeds.shape[0] == 1 and batch > 1:
            neg_embeds = neg_embeds.repeat(batch, 1, 1)
        return torch.cat([neg_embeds, embeds])

    # ------------------------------------------------------------------ latents

    @contextlib.contextmanager
    def _vae_tiling(self, enabled: bool) -> Iterator[None]:
        was = bool(getattr(self.vae, "use_tiling", False))
        if enabled and not was:
            self.vae.enable_tiling()
        try:
            yield
        finally:
            if enabled and not was:
                self.vae.disable_tiling()

    def encode_image(self, image01: torch.Tensor, generator: Any = None) -> torch.Tensor:
        """VAE posterior sample of ``2 * image01 - 1`` times the scaling factor (1 RNG draw)."""
        x = (image01 * 2.0 - 1.0).to(device=self.vae.device, dtype=self.vae.dtype)
        with self._vae_tiling(max(x.shape[-2:]) > VAE_ENCODE_TILE_ABOVE_PX):
            posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(generator=generator)
        return z * self.vae.config.scaling_factor

    def start_latents(
        self,
        image_latents: torch.Tensor,
        timesteps: torch.Tensor,
        full_schedule: bool,
        generator: Any = None,
        noise: Sequence[torch.Tensor] | None = None,
        added_noise_level: int | None = 900,
        added_noise_mode: str = "scheduler",
    ) -> torch.Tensor:
        """Noise the image latents for the first timestep run.

        Call after ``scheduler.set_timesteps`` and before ``set_begin_index`` when
        ``full_schedule`` (the reference has no begin index; UniPC's lookup fallback depends on it).

        :param image_latents: scaled VAE latents of the input.
        :param timesteps: the timesteps that will run (``timesteps[0]`` is the start).
        :param full_schedule: True for the PASD start (noise to ``timesteps[0]``, then the added
            noise); False for the img2img start (one noise draw).
        :param generator: the torch generator for the noise draws.
        :param noise: explicit noise tensors ``(n1[, n2])`` instead of drawing them.
        :param added_noise_level: the reference's ``added_noise_level`` (``None`` = skip).
        :param added_noise_mode: ``"scheduler"`` (reference behaviour), ``"absolute"`` (true t) or
            ``"none"``.
        """
        if added_noise_mode not in ADDED_NOISE_MODES:
            raise ValueError(
                f"added_noise_mode {added_noise_mode!r}; valid: {', '.join(ADDED_NOISE_MODES)}"
            )
        shape, device, dtype = image_latents.shape, image_latents.device, image_latents.dtype

        def draw(i: int) -> torch.Tensor:
            if noise is not None:
                return noise[i].to(device=device, dtype=dtype)
            return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

        t0 = timesteps[:1].repeat(shape[0])
        latents = self.scheduler.add_noise(image_latents, draw(0), t0)
        if full_schedule and added_noise_level is not None and added_noise_mode != "none":
            extra = draw(1)
            if added_noise_mode == "scheduler":
                level = torch.full((shape[0],), int(added_noise_level), dtype=torch.long)
                latents = self.scheduler.add_noise(latents, extra, level.to(device))
            else:
                ac = self.scheduler.alphas_cumprod[int(added_noise_level)].to(device=device)
                latents = ac.sqrt().to(dtype) * latents + (1 - ac).sqrt().to(dtype) * extra
        return latents * self.scheduler.init_noise_sigma

    # ------------------------------------------------------------------ denoiser

    def _controlled_unet(
        self,
        latents: torch.Tensor,
        t: Any,
        embeds: torch.Tensor,
        control: torch.Tensor,
        conditioning_scale: float,
    ) -> torch.Tensor:
        _, downs, mid = self.controlnet(
            latents,
            t,
            encoder_hidden_states=embeds,
            controlnet_cond=control,
            conditioning_scale=conditioning_scale,
            return_dict=False,
        )
        return self.unet(
            latents,
            t,
            encoder_hidden_states=embeds,
            down_block_additional_residuals=downs,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]

    def predict_noise(
        self,
        latents: torch.Tensor,
        t: Any,
        embeds: torch.Tensor,
        control: torch.Tensor,
        guidance_scale: float = 9.0,
        conditioning_scale: float = 1.0,
        latent_tiled_size: int = 320,
        latent_tiled_overlap: int = 8,
    ) -> torch.Tensor:
        """The (CFG-combined) noise prediction for ``latents`` at ``t``.

        :param latents: ``(B, 4, h, w)`` latents (not doubled for CFG).
        :param t: the timestep.
        :param embeds: prompt embeddings, ``[negative, positive]`` concatenated when CFG is on.
        :param control: control image ``(B, 3, 8h, 8w)`` in [0, 1].
        """
        do_cfg = embeds.shape[0] == 2 * latents.shape[0]
        model_in = torch.cat([latents] * 2) if do_cfg else latents
        model_in = self.scheduler.scale_model_input(model_in, t)
        control_in = torch.cat([control] * 2) if do_cfg else control
        h, w = latents.shape[-2:]
        if not needs_tiling(h, w, latent_tiled_size):
            noise = self._controlled_unet(model_in, t, embeds, control_in, conditioning_scale)
        else:
            noise = self._tiled_noise(
                model_in,
                t,
                embeds,
                control_in,
                conditioning_scale,
                latent_tiled_size,
                latent_tiled_overlap,
            )
        if do_cfg:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance_scale * (cond - uncond)
        return noise

    def _tiled_noise(
        self,
        model_in: torch.Tensor,
        t: Any,
        embeds: torch.Tensor,
        control: torch.Tensor,
        conditioning_scale: float,
        tile_size: int,
        overlap: int,
    ) -> torch.Tensor:
        h, w = model_in.shape[-2:]
        s = self.vae_scale_factor
        acc_dtype = torch.float32 if model_in.device.type == "mps" else torch.float64
        total = torch.zeros(model_in.shape, dtype=acc_dtype, device=model_in.device)
        weight_sum = torch.zeros((1, 1, h, w), dtype=acc_dtype, device=model_in.device)
        for y, x, side in tile_boxes(h, w, tile_size, overlap):
            tile = model_in[..., y : y + side, x : x + side]
            tile_control = control[..., y * s : (y + side) * s, x * s : (x + side) * s]
            pred = self._controlled_unet(tile, t, embeds, tile_control, conditioning_scale)
            weight = torch.from_numpy(gaussian_weights(side, side)).to(model_in.device, acc_dtype)
            total[..., y : y + side, x : x + side] += pred.to(acc_dtype) * weight
            weight_sum[..., y : y + side, x : x + side] += weight
        return (total / weight_sum).to(model_in.dtype)

    # ------------------------------------------------------------------ call

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: Any = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 9.0,
        negative_prompt: str | list[str] | None = None,
        conditioning_scale: float = 1.0,
        generator: Any = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        latent_tiled_size: int = 320,
        latent_tiled_overlap: int = 8,
        added_noise_level: int | None = 900,
        added_noise_mode: str = "scheduler",
        strength: float = 1.0,
        added_prompt: str | None = None,
        captioner: Callable[[Any], str] | None = None,
        color_fix: str = "none",
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> PASDPipelineOutput | tuple:
        """Restore ``image``.

        :param prompt: the prompt (assembled with ``added_prompt`` and a caption).
        :param image: PIL image(s) or a ``(B, 3, H, W)`` tensor in [0, 1]; sides must be multiples
            of the VAE factor (8); it is both the control image and the latent start.
        :param num_inference_steps: steps of the full schedule (reference default 20).
        :param guidance_scale: CFG scale (reference 9.0); CFG is off at ``<= 1``.
        :param negative_prompt: the negative prompt (``""`` when ``None``).
        :param conditioning_scale: ControlNet residual scale (also scales PACA's keys/values).
        :param generator: torch generator(s) for the VAE posterior and the noise draws.
        :param latents: start latents (skips the latent start; for teacher forcing).
        :param prompt_embeds: precomputed positive embeddings ``(1 or B, L, D)``.
        :param negative_prompt_embeds: precomputed negative embeddings.
        :param output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
        :param return_dict: return a :class:`PASDPipelineOutput` (else ``(images,)``).
        :param latent_tiled_size: latent tile side ``T``; tiling when ``h * w > T**2``.
        :param latent_tiled_overlap: latent tile overlap.
        :param added_noise_level: the reference's extra noise level (``None`` = none).
        :param added_noise_mode: ``"scheduler"`` (reference quirk), ``"absolute"``, ``"none"``.
        :param strength: fraction of the schedule to run (1 = the full PASD run; 0 = return the
            input unchanged).
        :param added_prompt: suffix appended to the prompt.
        :param captioner: callable PIL image -> caption, prepended to the prompt.
        :param color_fix: ``"wavelet"``, ``"adain"`` or ``"none"`` (against the input image).
        :param callback_on_step_end: ``f(pipe, step, t, {name: tensor})`` after each step; may
            return replacement tensors (diffusers convention).
        :param callback_on_step_end_tensor_inputs: names of tensors passed to the callback.
        """
        if image is None:
            raise ValueError("PASDPipeline: image is required")
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if color_fix not in COLOR_FIXES:
            raise ValueError(f"color_fix {color_fix!r}; valid: {', '.join(COLOR_FIXES)}")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass either prompt or prompt_embeds, not both")
        device = self._execution_device
        image01 = images_to_tensor(image).to(device=device, dtype=torch.float32)
        batch, _, height, width = image01.shape
        s = self.vae_scale_factor
        if height % s or width % s:
            raise ValueError(
                f"PASDPipeline: image size {width}x{height} must be a multiple of {s} on both "
                "sides (the reference never resizes the control image; resize or pad first)"
            )

        steps_run = min(int(num_inference_steps * strength), num_inference_steps)
        if steps_run == 0:
            return self._passthrough(image, image01, output_type, return_dict)

        assembled = None
        if prompt_embeds is None:
            caption = None
            if captioner is not None:
                first = image[0] if isinstance(image, list | tuple) else image
                caption = captioner(first)
            prompts = [prompt] if prompt is None or isinstance(prompt, str) else list(prompt)
            joined = [assemble_prompt(p, added_prompt, caption) for p in prompts]
            assembled = joined[0] if len(joined) == 1 else joined
        do_cfg = guidance_scale > 1.0
        embeds = self._prompt_embeddings(
            assembled, negative_prompt, prompt_embeds, negative_prompt_embeds, batch, do_cfg, device
        )

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        order = getattr(self.scheduler, "order", 1)
        t_start = (num_inference_steps - steps_run) * order
        timesteps = self.scheduler.timesteps[t_start:]
        full = t_start == 0

        dtype = self.unet.dtype
        control = image01.to(dtype=self.controlnet.dtype)
        if latents is None:
            if not full and hasattr(self.scheduler, "set_begin_index"):
                self.scheduler.set_begin_index(t_start)
            z0 = self.encode_image(image01, generator).to(dtype)
            latents = self.start_latents(
                z0,
                timesteps,
                full,
                generator=generator,
                added_noise_level=added_noise_level,
                added_noise_mode=added_noise_mode,
            )
        latents = latents.to(device=device, dtype=dtype)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start)

        step_kwargs = {}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            step_kwargs["generator"] = generator
        tiled = needs_tiling(latents.shape[-2], latents.shape[-1], latent_tiled_size)
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                noise = self.predict_noise(
                    latents,
                    t,
                    embeds,
                    control,
                    guidance_scale,
                    conditioning_scale,
                    latent_tiled_size,
                    latent_tiled_overlap,
                )
                latents = self.scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)[
                    0
                ]
                if callback_on_step_end is not None:
                    local = {"latents": latents, "noise_pred": noise}
                    tensors = {k: local[k] for k in callback_on_step_end_tensor_inputs}
                    out = callback_on_step_end(self, i, t, tensors) or {}
                    latents = out.get("latents", latents)
                bar.update()

        images = self._decode(latents, image, image01, output_type, color_fix)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return PASDPipelineOutput(
            images=images,
            steps_run=len(timesteps),
            timesteps=[int(t) for t in timesteps],
            tiled=tiled,
            prompt=assembled if isinstance(assembled, str) or assembled is None else None,
        )

    def _decode(
        self,
        latents: torch.Tensor,
        image: Any,
        image01: torch.Tensor,
        output_type: str,
        color_fix: str,
    ) -> Any:
        if output_type == "latent":
            return latents
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        with self._vae_tiling(max(z.shape[-2:]) > VAE_DECODE_TILE_ABOVE_LATENT):
            decoded = self.vae.decode(z, return_dict=False)[0]
        decoded = (decoded.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pil":
            from PIL import Image

            arr = decoded.permute(0, 2, 3, 1).cpu().numpy()
            pils = [Image.fromarray((a * 255).round().astype("uint8")) for a in arr]
            if color_fix == "none":
                return pils
            sources = image if isinstance(image, list | tuple) else [image]
            if not hasattr(sources[0], "convert"):
                sources = [
                    Image.fromarray((a * 255).round().astype("uint8")) for a in self._np(image01)
                ]
            return [color_fix_pil(p, src, color_fix) for p, src in zip(pils, sources, strict=True)]
        if color_fix == "wavelet":
            decoded = wavelet_reconstruction(decoded, image01.to(decoded)).clamp(0, 1)
        elif color_fix == "adain":
            decoded = adain(decoded, image01.to(decoded)).clamp(0, 1)
        if output_type == "np":
            return decoded.permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "pt":
            return decoded
        raise ValueError(f"output_type {output_type!r}; valid: 'pil', 'np', 'pt', 'latent'")

    @staticmethod
    def _np(image01: torch.Tensor) -> np.ndarray:
        return image01.permute(0, 2, 3, 1).cpu().numpy()

    def _passthrough(
        self, image: Any, image01: torch.Tensor, output_type: str, return_dict: bool
    ) -> Any:
        """Strength 0: the input, unchanged, in the requested output type."""
        if output_type == "pil" and not isinstance(image, torch.Tensor | np.ndarray):
            images = [im.copy() for im in (image if isinstance(image, list | tuple) else [image])]
        elif output_type == "np":
            images = self._np(image01)
        elif output_type == "pt":
            images = image01
        elif output_type == "latent":
            raise ValueError("strength 0 runs no step: output_type 'latent' is not available")
        else:
            from PIL import Image

            images = [Image.fromarray((a * 255).round().astype("uint8")) for a in self._np(image01)]
        if not return_dict:
            return (images,)
        return PASDPipelineOutput(
            images=images, steps_run=0, timesteps=[], tiled=False, prompt=None
        )
