"""The PASD ControlNet: diffusers' ``ControlNetModel`` with PASD's conditioning stem.

The trunk (time embedding, down/mid blocks, zero convolutions, ``conditioning_scale``, guess mode)
is diffusers' own and unchanged. PASD differs only inside ``controlnet_cond_embedding``:

* ``return_rgbs``: after every stride-2 convolution (+SiLU) of the stem a 3x3 ``to_rgbs.{k}``
  convolution emits an RGB image at 1/2, 1/4, 1/8 resolution. Training-only side outputs; they do
  not feed the embedding.
* ``use_rrdb``: two ESRGAN RRDB blocks (``preprocesser.{0,1}``) after ``conv_in`` + SiLU.

``forward(..., return_dict=False)`` returns ``(rgbs, down_residuals, mid_residual)`` as the
reference does.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
from diffusers.utils import BaseOutput
from torch import nn
from torch.nn import functional as F

from grefine_pasd.rrdb import RRDB

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_RRDB_PREFIX = "controlnet_cond_embedding.preprocesser."
_RGB_PREFIX = "controlnet_cond_embedding.to_rgbs."


class PASDConditioningEmbedding(ControlNetConditioningEmbedding):
    """diffusers' ControlNet conditioning stem plus PASD's optional RRDB pre-processor and RGB heads.

    With both options off it computes exactly what the parent computes.
    """

    def __init__(
        self,
        conditioning_embedding_channels: int,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        return_rgbs: bool = True,
        use_rrdb: bool = False,
    ) -> None:
        super().__init__(conditioning_embedding_channels, conditioning_channels, block_out_channels)
        self.return_rgbs = return_rgbs
        self.use_rrdb = use_rrdb
        first = block_out_channels[0]
        if use_rrdb:
            self.preprocesser = nn.Sequential(RRDB(first, first), RRDB(first, first))
        if return_rgbs:
            self.to_rgbs = nn.ModuleList(
                nn.Conv2d(ch, 3, kernel_size=3, padding=1) for ch in block_out_channels[1:]
            )
        self.last_rgbs: tuple[torch.Tensor, ...] = ()

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        embedding = F.silu(self.conv_in(conditioning))
        if self.use_rrdb:
            embedding = self.preprocesser(embedding)
        rgbs = []
        for i, block in enumerate(self.blocks):
            embedding = F.silu(block(embedding))
            if self.return_rgbs and i % 2 == 1:  # after each stride-2 convolution
                rgbs.append(self.to_rgbs[i // 2](embedding))
        self.last_rgbs = tuple(rgbs)
        return self.conv_out(embedding)


@dataclass
class PASDControlNetOutput(BaseOutput):
    """Output of :class:`PASDControlNetModel` with ``return_dict=True``.

    :ivar rgbs: the RGB side outputs (empty when ``return_rgbs`` is off).
    :ivar down_block_res_samples: the down-block residuals, already scaled.
    :ivar mid_block_res_sample: the mid-block residual, already scaled.
    """

    rgbs: tuple[torch.Tensor, ...]
    down_block_res_samples: tuple[torch.Tensor, ...]
    mid_block_res_sample: torch.Tensor


class PASDControlNetModel(ControlNetModel):
    """``ControlNetModel`` with PASD's ``return_rgbs`` / ``use_rrdb`` config options.

    The constructor takes the parent's arguments plus the two PASD options (defaults as in the
    reference: ``return_rgbs=True``, ``use_rrdb=False``); they are stored in the config, so
    ``save_pretrained`` writes an official-style ``config.json``.
    """

    def __init__(
        self, *args: Any, return_rgbs: bool = True, use_rrdb: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.register_to_config(return_rgbs=bool(return_rgbs), use_rrdb=bool(use_rrdb))
        if return_rgbs or use_rrdb:
            old = self.controlnet_cond_embedding
            channels = self.config.conditioning_embedding_out_channels
            stem = PASDConditioningEmbedding(
                conditioning_embedding_channels=old.conv_out.out_channels,
                conditioning_channels=old.conv_in.in_channels,
                block_out_channels=tuple(channels),
                return_rgbs=return_rgbs,
                use_rrdb=use_rrdb,
            )
            # Keep the parent's initialisation of the shared layers (zero conv_out included).
            stem.load_state_dict(old.state_dict(), strict=False)
            self.controlnet_cond_embedding = stem

    def forward(self, *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        """The parent's forward, plus the RGB side outputs in front.

        :returns: ``(rgbs, down_block_res_samples, mid_block_res_sample)`` with
            ``return_dict=False``, else a :class:`PASDControlNetOutput`.
        """
        stem = self.controlnet_cond_embedding
        try:
            downs, mid = super().forward(*args, return_dict=False, **kwargs)
            rgbs = tuple(getattr(stem, "last_rgbs", ()))
        finally:
            if isinstance(stem, PASDConditioningEmbedding):
                stem.last_rgbs = ()
        if not return_dict:
            return rgbs, tuple(downs), mid
        return PASDControlNetOutput(
            rgbs=rgbs, down_block_res_samples=tuple(downs), mid_block_res_sample=mid
        )


def _signature_with_pasd_options() -> inspect.Signature:
    """The parent's ``__init__`` signature plus ``return_rgbs`` and ``use_rrdb``.

    diffusers reads the constructor signature to decide which config keys to pass; without the
    parent's named parameters ``from_config`` would silently build a default-sized model.
    """
    parent = inspect.signature(ControlNetModel.__init__)
    params = list(parent.parameters.values())
    extra = [
        inspect.Parameter("return_rgbs", inspect.Parameter.KEYWORD_ONLY, default=True),
        inspect.Parameter("use_rrdb", inspect.Parameter.KEYWORD_ONLY, default=False),
    ]
    return parent.replace(parameters=params + extra)


PASDControlNetModel.__init__.__signature__ = _signature_with_pasd_options()  # type: ignore[attr-defined]


def _checkpoint_keys(folder: Path) -> tuple[Path, list[str]]:
    for name in WEIGHT_NAMES:
        path = folder / name
        if path.is_file():
            break
    else:
        from grefine_core.errors import MissingWeightsError

        raise MissingWeightsError(
            f"PASD ControlNet weights not found in {str(folder)!r}: expected one of "
            f"{', '.join(WEIGHT_NAMES)} next to config.json (the 'controlnet' folder of a PASD "
            "checkpoint, e.g. runs/pasd/checkpoint-100000/controlnet from the official pasd.zip)"
        )
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return path, list(f.keys())
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return path, list(state)


def load_pasd_controlnet(
    folder: str | Path, torch_dtype: torch.dtype | None = None, **kwargs: Any
) -> PASDControlNetModel:
    """Load a PASD ControlNet from an official ``checkpoint-N/controlnet`` folder.

    Reads ``return_rgbs`` / ``use_rrdb`` from ``config.json`` (when ``return_rgbs`` is absent it is
    inferred from the weights) and checks the weight names against them: an RRDB checkpoint with
    ``use_rrdb`` false (or the reverse) is refused instead of silently dropping ``preprocesser.*``
    weights, and so is any missing or unexpected key.

    :param folder: the folder with ``config.json`` and ``diffusion_pytorch_model.safetensors``
        (or ``.bin``).
    :param torch_dtype: dtype to load the weights in (default: as stored).
    :param kwargs: passed to ``ModelMixin.from_pretrained`` (e.g. ``low_cpu_mem_usage``).
    :returns: a :class:`PASDControlNetModel` in eval mode.
    :raises MissingWeightsError: when the folder, config or weights are missing.
    :raises ValueError: when the weights do not match the config.
    """
    from grefine_core.errors import MissingWeightsError

    root = Path(folder)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise MissingWeightsError(
            f"PASD ControlNet config not found: {str(config_path)!r} does not exist (expected the "
            "'controlnet' folder of a PASD checkpoint, e.g. runs/pasd/checkpoint-100000/controlnet)"
        )
    config = json.loads(config_path.read_text("utf-8"))
    _, keys = _checkpoint_keys(root)
    has_rrdb = any(k.startswith(_RRDB_PREFIX) or k.startswith("preprocesser.") for k in keys)
    has_rgbs = any(k.startswith(_RGB_PREFIX) for k in keys)
    use_rrdb = bool(config.get("use_rrdb", False))
    return_rgbs = bool(config.get("return_rgbs", has_rgbs))
    if has_rrdb != use_rrdb:
        raise ValueError(
            f"{str(root)!r}: config.json says use_rrdb={use_rrdb} but the weights "
            f"{'contain' if has_rrdb else 'lack'} RRDB 'preprocesser.*' keys; refusing to load "
            "(a mismatched RRDB stem would silently change the model)"
        )
    if any(k.startswith("preprocesser.") for k in keys):
        raise ValueError(
            f"{str(root)!r}: RRDB weights are stored at the top level ('preprocesser.*'); this "
            f"loader expects them under {_RRDB_PREFIX!r} as in the official layout"
        )
    model, info = PASDControlNetModel.from_pretrained(
        str(root),
        return_rgbs=return_rgbs,
        use_rrdb=use_rrdb,
        torch_dtype=torch_dtype,
        output_loading_info=True,
        **kwargs,
    )
    problems = {k: v for k, v in info.items() if k != "error_msgs" and v}
    if problems:
        detail = "; ".join(f"{k}: {sorted(v)[:5]}" for k, v in problems.items())
        raise ValueError(
            f"{str(root)!r}: PASD ControlNet weights do not match its config ({detail})"
        )
    return model.eval()
