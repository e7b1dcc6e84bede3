"""Running many token sequences through a CLIP text tower in length-sorted chunks: each chunk is
cut after its longest end-of-text token (exact under the causal mask) and holds at most
``max_tokens`` tokens. Shared by the backbones that tokenise (torch and ONNX)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def encode_by_length(
    tokens: Any, tower: Callable[[Any], Any], embed_dim: int, device: Any, max_tokens: int = 8192
) -> Any:
    """Features ``[n, D]`` (float32, on ``device``) of token ids ``[n, L]`` (end-of-text = the
    largest id of a row), in the input order.

    :param tower: token ids ``[m, l]`` (on ``device``) -> features ``[m, D]``.
    """
    import torch

    lengths = tokens.argmax(dim=-1) + 1
    order = torch.argsort(lengths, stable=True)
    feats = torch.empty((len(tokens), int(embed_dim)), dtype=torch.float32, device=device)
    start = 0
    while start < len(tokens):
        # Grow the chunk while (rows x longest length) stays within the token budget.
        end = start + 1
        while end < len(tokens) and (end + 1 - start) * int(lengths[order[end]]) <= max_tokens:
            end += 1
        idx = order[start:end]
        chunk = tokens[idx, : int(lengths[idx].max())]
        feats[idx.to(device)] = tower(chunk.to(device)).float()
        start = end
    return feats


def token_ids(texts_or_tokens: Any, tokenize: Callable[[Any], Any], cut: bool = True) -> Any:
    """Token ids ``[n, L]`` of texts (or ids given as a tensor), cut after the longest
    end-of-text token when ``cut`` (exact under the causal mask)."""
    import torch

    if isinstance(texts_or_tokens, torch.Tensor):
        tokens = texts_or_tokens
    else:
        tokens = tokenize(texts_or_tokens)
    return tokens[:, : int(tokens.argmax(dim=-1).max()) + 1] if cut else tokens
