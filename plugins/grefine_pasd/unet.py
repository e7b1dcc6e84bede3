"""The PASD UNet: a stock diffusers ``UNet2DConditionModel`` plus PACA in the up path.

PACA (pixel-aware cross attention) adds one stock ``Transformer2DModel`` per layer of every up
block, stored as ``up_blocks.{b}.pixel_attentions.{j}`` (the key names of the official
checkpoints). After each layer's resnet and text transformer it cross-attends to the ControlNet
residual of that layer's skip connection, flattened to ``(B, H*W, C)``.

The up blocks stay diffusers' own modules (their weights load 1:1); only their ``forward`` is
re-stated here (class swap to a subclass), because PACA sits inside the per-layer loop. That loop
mirrors diffusers 0.42's ``UpBlock2D`` / ``CrossAttnUpBlock2D`` (FreeU kept); re-check it when
upgrading diffusers.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_2d_blocks import CrossAttnUpBlock2D, UpBlock2D
from diffusers.utils.torch_utils import apply_freeu
from torch import nn

PACA_KEY = "pixel_attentions"


def _flatten_map(feature: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)``: a ControlNet residual as a key/value sequence."""
    b, c, h, w = feature.shape
    return feature.permute(0, 2, 3, 1).reshape(b, h * w, c)


def _apply_paca(
    block: nn.Module,
    index: int,
    hidden_states: torch.Tensor,
    paca_states: tuple[torch.Tensor, ...] | None,
    cross_attention_kwargs: dict[str, Any] | None,
) -> torch.Tensor:
    """Run PACA block ``index`` of ``block`` against the residual popped for this layer."""
    if paca_states is None:
        return hidden_states
    pixel = paca_states[len(paca_states) - 1 - index]
    return block.pixel_attentions[index](
        hidden_states,
        encoder_hidden_states=_flatten_map(pixel),
        cross_attention_kwargs=cross_attention_kwargs,
        return_dict=False,
    )[0]


def _freeu(block: nn.Module, hidden: torch.Tensor, skip: torch.Tensor):
    """diffusers' FreeU hook, kept so that ``unet.enable_freeu(...)`` still works."""
    if all(getattr(block, k, None) for k in ("s1", "s2", "b1", "b2")):
        return apply_freeu(
            block.resolution_idx, hidden, skip, s1=block.s1, s2=block.s2, b1=block.b1, b2=block.b2
        )
    return hidden, skip


class PASDUpBlock2D(UpBlock2D):
    """``UpBlock2D`` with a PACA step after each resnet (set by :class:`PASDUNet2DConditionModel`)."""

    _paca_states: tuple[torch.Tensor, ...] | None = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        res_hidden_states_tuple: tuple[torch.Tensor, ...],
        temb: torch.Tensor | None = None,
        upsample_size: int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        paca_states = self._paca_states
        for j, resnet in enumerate(self.resnets):
            skip = res_hidden_states_tuple[-1]
            res_hidden_states_tuple = res_hidden_states_tuple[:-1]
            hidden_states, skip = _freeu(self, hidden_states, skip)
            hidden_states = torch.cat([hidden_states, skip], dim=1)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(resnet, hidden_states, temb)
            else:
                hidden_states = resnet(hidden_states, temb)
            hidden_states = _apply_paca(self, j, hidden_states, paca_states, None)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states


class PASDCrossAttnUpBlock2D(CrossAttnUpBlock2D):
    """``CrossAttnUpBlock2D`` with a PACA step after each text transformer."""

    _paca_states: tuple[torch.Tensor, ...] | None = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        res_hidden_states_tuple: tuple[torch.Tensor, ...],
        temb: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        upsample_size: int | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        paca_states = self._paca_states
        for j, (resnet, attn) in enumerate(zip(self.resnets, self.attentions, strict=True)):
            skip = res_hidden_states_tuple[-1]
            res_hidden_states_tuple = res_hidden_states_tuple[:-1]
            hidden_states, skip = _freeu(self, hidden_states, skip)
            hidden_states = torch.cat([hidden_states, skip], dim=1)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(resnet, hidden_states, temb)
            else:
                hidden_states = resnet(hidden_states, temb)
            hidden_states = attn(
                hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                cross_attention_kwargs=cross_attention_kwargs,
                attention_mask=attention_mask,
                encoder_attention_mask=encoder_attention_mask,
                return_dict=False,
            )[0]
            hidden_states = _apply_paca(self, j, hidden_states, paca_states, cross_attention_kwargs)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states


_PASD_UP_BLOCKS: dict[type, type] = {
    UpBlock2D: PASDUpBlock2D,
    CrossAttnUpBlock2D: PASDCrossAttnUpBlock2D,
}


def _per_block(value: Any, n: int) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value] * n


def paca_layout(config: Any) -> list[list[dict[str, int]]]:
    """The PACA block shapes of a UNet config, per up block and layer (PASD.md section 1).

    Each entry has ``channels`` (C_out of the layer), ``heads`` (the block's head count) and
    ``kv_dim`` (the skip-channel count in ``CrossAttnUpBlock2D``, but C_out in ``UpBlock2D``, as
    in the official code; equal for SD-1.5).

    :param config: a ``UNet2DConditionModel`` config (``FrozenDict`` or a mapping).
    :returns: ``layout[b][j]`` for up block ``b``, layer ``j``.
    """
    get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
    n = len(get("down_block_types"))
    heads = get("num_attention_heads") or get("attention_head_dim")
    rev_heads = list(reversed(_per_block(heads, n)))
    rev_out = list(reversed(list(get("block_out_channels"))))
    rev_layers = list(reversed(_per_block(get("layers_per_block"), n)))
    layout: list[list[dict[str, int]]] = []
    for i, block_type in enumerate(get("up_block_types")):
        out_ch = rev_out[i]
        in_ch = rev_out[min(i + 1, n - 1)]
        n_layers = rev_layers[i] + 1
        layers = []
        for j in range(n_layers):
            skip_ch = in_ch if j == n_layers - 1 else out_ch
            kv_dim = skip_ch if block_type == "CrossAttnUpBlock2D" else out_ch
            layers.append({"channels": out_ch, "heads": int(rev_heads[i]), "kv_dim": kv_dim})
        layout.append(layers)
    return layout


class PASDUNet2DConditionModel(UNet2DConditionModel):
    """diffusers ``UNet2DConditionModel`` + PASD's PACA blocks (``up_blocks.*.pixel_attentions.*``).

    The constructor signature is the parent's (so ``from_config``/``from_pretrained`` read the
    official ``unet/config.json``, whose ``_class_name`` is ``UNet2DConditionModel``). Call it like
    a ControlNet-conditioned UNet: ``down_block_additional_residuals`` and
    ``mid_block_additional_residual`` from the PASD ControlNet feed both the skip additions and
    PACA (scaled residuals as keys/values, so ``conditioning_scale`` also scales PACA's inputs).
    Without residuals PACA is skipped and the model behaves like the stock UNet (the reference
    raises instead).
    """

    @functools.wraps(UNet2DConditionModel.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._add_pixel_attentions()

    def _add_pixel_attentions(self) -> None:
        cfg = self.config
        only_cross = list(reversed(_per_block(cfg.only_cross_attention, len(cfg.down_block_types))))
        for b, (block, layers) in enumerate(zip(self.up_blocks, paca_layout(cfg), strict=True)):
            new_cls = _PASD_UP_BLOCKS.get(type(block))
            if new_cls is None:
                raise ValueError(
                    f"PASD UNet: up block {b} is {type(block).__name__}; PACA is defined only for "
                    "UpBlock2D and CrossAttnUpBlock2D"
                )
            block.__class__ = new_cls
            block.pixel_attentions = nn.ModuleList(
                Transformer2DModel(
                    layer["heads"],
                    layer["channels"] // layer["heads"],
                    in_channels=layer["channels"],
                    num_layers=1,
                    cross_attention_dim=layer["kv_dim"],
                    norm_num_groups=cfg.norm_num_groups,
                    use_linear_projection=cfg.use_linear_projection,
                    only_cross_attention=bool(only_cross[b]),
                    upcast_attention=cfg.upcast_attention,
                )
                for layer in layers
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:
        """``ModelMixin.from_pretrained`` that refuses a checkpoint without PACA weights.

        A plain SD-1.5 ``unet/`` folder would otherwise load with randomly initialised PACA.
        """
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, output_loading_info=True, **kwargs
        )
        missing = [k for k in info.get("missing_keys", []) if f".{PACA_KEY}." in k]
        if missing:
            raise ValueError(
                f"{pretrained_model_name_or_path!s}: {len(missing)} PACA weights are missing (e.g. "
                f"{missing[0]!r}); this is not a PASD UNet checkpoint (expected a PASD "
                "'checkpoint-N/unet' folder, not the SD-1.5 'unet' folder)"
            )
        return (model, info) if want_info else model

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        down_intrablock_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Any:
        """The parent's forward with PACA fed from ``down_block_additional_residuals``.

        :returns: as ``UNet2DConditionModel.forward`` (``(sample,)`` with ``return_dict=False``).
        """
        if (down_block_additional_residuals is None) != (mid_block_additional_residual is None):
            raise ValueError(
                "PASD UNet: pass both down_block_additional_residuals and "
                "mid_block_additional_residual (the PASD ControlNet outputs), or neither"
            )
        if down_block_additional_residuals is not None:
            remaining = tuple(down_block_additional_residuals)
            expected = sum(len(b.resnets) for b in self.up_blocks)
            if len(remaining) != expected:
                raise ValueError(
                    f"PASD UNet: got {len(remaining)} down-block residuals, expected {expected}"
                )
            for block in self.up_blocks:
                n = len(block.resnets)
                block._paca_states = remaining[-n:]
                remaining = remaining[:-n]
        try:
            return super().forward(
                sample,
                timestep,
                encoder_hidden_states,
                class_labels=class_labels,
                timestep_cond=timestep_cond,
                attention_mask=attention_mask,
                cross_attention_kwargs=cross_attention_kwargs,
                added_cond_kwargs=added_cond_kwargs,
                down_block_additional_residuals=down_block_additional_residuals,
                mid_block_additional_residual=mid_block_additional_residual,
                down_intrablock_additional_residuals=down_intrablock_additional_residuals,
                encoder_attention_mask=encoder_attention_mask,
                return_dict=return_dict,
            )
        finally:
            for block in self.up_blocks:
                block._paca_states = None

    def paca_parameters(self) -> int:
        """Number of parameters in the PACA blocks."""
        return sum(p.numel() for n, p in self.named_parameters() if f".{PACA_KEY}." in n)
