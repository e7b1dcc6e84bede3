"""Traceable torch modules over an open_clip CLIP: the CLIP Surgery image encoder and text encoders.

Each module shares its parameters with the open_clip model it wraps and maps tensors to tensors
(no Python-side state in ``forward``), so ``torch.onnx.export`` can trace it:

* :class:`SurgeryVisionEncoder`: pixel values ``[B, 3, S, S]`` -> all tokens ``[B, 1 + g*g, D]``.
* :class:`TextEncoder`: token ids ``[B, L]`` -> text features ``[B, D]`` (not normalised).
* :class:`EmbeddingTextEncoder`: token embeddings ``[B, L, W]`` (PQ learned prompts) -> ``[B, D]``.

Attention is computed with ``scaled_dot_product_attention`` from the block's own ``in_proj`` /
``out_proj`` weights, for both the ordinary and the surgery blocks (docs/indicators.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grefine_clip.constants import SURGERY_LAYERS
from grefine_core.errors import InputError


def _check_block(block: nn.Module, where: str) -> None:
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or not hasattr(block, "mlp"):
        raise InputError(
            f"{where}: block type {type(block).__name__} is not supported; CLIP Surgery needs "
            "open_clip ResidualAttentionBlocks with nn.MultiheadAttention (standard CLIP ViTs)"
        )
    if attn.in_proj_weight is None or not attn._qkv_same_embed_dim:
        raise InputError(f"{where}: attention with separate q/k/v projections is not supported")
    if hasattr(block, "ln_1_kv"):
        raise InputError(f"{where}: cross-attention blocks are not supported")


def _qkv(block: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project ``h [B, N, W]`` to per-head q, k, v ``[B, heads, N, W / heads]``."""
    attn = block.attn
    b, n, w = h.shape
    heads = attn.num_heads
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    qkv = qkv.reshape(b, n, 3, heads, w // heads).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, N, d]`` -> ``[B, N, heads * d]``."""
    b, heads, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, heads * d)


def block_forward(
    block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """An ordinary pre-LN transformer block (attention + MLP) on ``x [B, N, W]``."""
    q, k, v = _qkv(block, block.ln_1(x))
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    o = F.linear(_merge_heads(o), block.attn.out_proj.weight, block.attn.out_proj.bias)
    x = x + block.ls_1(o)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def surgery_block_forward(
    block: nn.Module, x_ori: torch.Tensor, x_new: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One dual-path CLIP Surgery block (docs/indicators.md).

    Both paths use ``H = LN1(x_ori)``; the original path gets q-k attention and the MLP, the new
    path gets v-v attention (scale ``1/sqrt(d)``, v not normalised) and no MLP.
    """
    q, k, v = _qkv(block, block.ln_1(x_ori))
    o_ori = F.scaled_dot_product_attention(q, k, v)
    o_new = F.scaled_dot_product_attention(v, v, v)
    # One out_proj matmul for both paths.
    b = x_ori.shape[0]
    o = F.linear(
        _merge_heads(torch.cat([o_ori, o_new], 0)),
        block.attn.out_proj.weight,
        block.attn.out_proj.bias,
    )
    o = block.ls_1(o)
    x_ori = x_ori + o[:b]
    x_ori = x_ori + block.ls_2(block.mlp(block.ln_2(x_ori)))
    return x_ori, x_new + o[b:]


class SurgeryVisionEncoder(nn.Module):
    """CLIP Surgery image encoder: pixel values -> surgery tokens ``[B, 1 + g*g, D]``.

    :param visual: an open_clip ``VisionTransformer`` (class token, no attentional pooling).
    :param surgery_layers: how many of the last blocks are dual-path (6 in CLIP Surgery).
    :param surgery: False gives plain CLIP tokens (all tokens through ``ln_post`` and ``proj``).
    """

    def __init__(
        self, visual: nn.Module, surgery_layers: int = SURGERY_LAYERS, surgery: bool = True
    ):
        super().__init__()
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is None or not hasattr(visual, "conv1"):
            raise InputError(
                f"vision tower {type(visual).__name__} is not a CLIP ViT; CLIP Surgery needs a "
                "Vision Transformer (ResNet CLIPs are not supported)"
            )
        if len(blocks) < surgery_layers:
            raise InputError(
                f"the vision tower has {len(blocks)} transformer layers; CLIP Surgery turns the "
                f"last {surgery_layers} into dual-path blocks and needs at least {surgery_layers}"
            )
        for i, blk in enumerate(blocks):
            _check_block(blk, f"vision block {i}")
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "proj", None) is None:
            raise InputError(
                "vision towers with attentional pooling or without a projection are not supported"
            )
        if (
            getattr(visual, "final_ln_after_pool", False)
            or getattr(visual, "pool_type", "tok") != "tok"
        ):
            raise InputError("only class-token pooled CLIP ViTs are supported by CLIP Surgery")
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.blocks = blocks
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.surgery_layers = surgery_layers
        self.surgery = surgery
        self.patch_size = int(self.conv1.kernel_size[0])
        self.grid = round((self.positional_embedding.shape[0] - 1) ** 0.5)
        self.image_size = self.grid * self.patch_size

    def _positional(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Positional embeddings for a ``grid_h x grid_w`` grid (bilinear resize when needed)."""
        pos = self.positional_embedding
        if grid_h == self.grid and grid_w == self.grid:
            return pos
        width = pos.shape[1]
        patches = pos[1:].reshape(1, self.grid, self.grid, width).permute(0, 3, 1, 2)
        patches = F.interpolate(
            patches.float(), size=(grid_h, grid_w), mode="bilinear", align_corners=False
        ).to(pos.dtype)
        patches = patches.reshape(width, grid_h * grid_w).transpose(0, 1)
        return torch.cat([pos[:1], patches], 0)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch embedding + class token + positional embedding + ``ln_pre`` -> ``[B, N, W]``."""
        x = self.conv1(pixel_values.to(self.conv1.weight.dtype))
        b, w, gh, gw = x.shape
        x = x.reshape(b, w, gh * gw).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).reshape(1, 1, w).expand(b, 1, w)
        x = torch.cat([cls, x], 1) + self._positional(gh, gw).to(x.dtype)
        return self.ln_pre(x)

    def forward_streams(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two transformer streams ``(x_new, x_ori)``, each ``[B, N, W]``, before the class
        token swap and ``ln_post`` (``x_new is x_ori`` when surgery is off)."""
        x = self.embed(pixel_values)
        n_plain = len(self.blocks) - (self.surgery_layers if self.surgery else 0)
        for blk in self.blocks[:n_plain]:
            x = block_forward(blk, x)
        x_ori, x_new = x, x
        for blk in self.blocks[n_plain:]:
            x_ori, x_new = surgery_block_forward(blk, x_ori, x_new)
        return x_new, x_ori

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x_new, x_ori = self.forward_streams(pixel_values)
        if self.surgery:
            # Class token from the original path, patches from the v-v path.
            x_new = torch.cat([x_ori[:, :1], x_new[:, 1:]], 1)
        return self.ln_post(x_new) @ self.proj


class TextEncoder(nn.Module):
    """CLIP text tower: token ids ``[B, L]`` -> features ``[B, D]`` (EOT row, not normalised).

    ``L`` may be shorter than the context length: under the causal mask the EOT row only sees the
    tokens before it, so cutting after the longest EOT of a batch gives the same features.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
        if blocks is None or not hasattr(model, "token_embedding"):
            raise InputError(
                f"{type(model).__name__} has no built-in CLIP text tower (custom/HF text towers "
                "are not supported)"
            )
        for i, blk in enumerate(blocks):
            _check_block(blk, f"text block {i}")
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.blocks = blocks
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        ctx = int(self.positional_embedding.shape[0])
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        self.register_buffer("causal_mask", mask, persistent=False)
        self.context_length = ctx
        self.width = int(self.positional_embedding.shape[1])

    def encode_embeddings(self, x: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """Run the transformer on token embeddings ``x [B, L, W]`` (positional embedding added
        here) and return the features at ``eot_index [B]``."""
        seq = x.shape[1]
        x = x + self.positional_embedding[:seq].to(x.dtype)
        mask = self.causal_mask[:seq, :seq].to(x.dtype)
        for blk in self.blocks:
            x = block_forward(blk, x, attn_mask=mask)
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot_index]
        proj = self.text_projection
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(token_ids).to(self.positional_embedding.dtype)
        # The end-of-text token has the largest id of the vocabulary.
        return self.encode_embeddings(x, token_ids.argmax(dim=-1))


class EmbeddingTextEncoder(nn.Module):
    """Learned-prompt text encoder: token embeddings ``[B, L, W]`` -> features ``[B, D]``.

    The EOT position is fixed (row 20 for the PQ prompts), as in the released PQ-Map code.
    """

    def __init__(self, text: TextEncoder, eot_index: int):
        super().__init__()
        self.text = text
        self.eot_index = int(eot_index)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        eot = torch.full(
            (embeddings.shape[0],), self.eot_index, dtype=torch.long, device=embeddings.device
        )
        return self.text.encode_embeddings(embeddings.to(self.text.positional_embedding.dtype), eot)
