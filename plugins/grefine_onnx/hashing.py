"""Hashes that key the export cache: the source weights (a state dict) and the exported files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """sha256 over a state dict: every entry's name, dtype, shape and raw bytes, by sorted name.

    Independent of the file format the weights came from (``.pt``, ``.safetensors``, open_clip
    cache) and of dict order; any changed value, dtype or shape changes it.

    :param state_dict: ``{name: torch.Tensor}``.
    :returns: the hex digest.
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            # A uint8 view hashes every dtype (bfloat16 has no numpy type) without a copy.
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def clip_weights_sha256(clip: Any) -> str:
    """The source-weights hash of the torch ``clip`` backbone (its open_clip model)."""
    return state_dict_sha256(clip.model.state_dict())


def options_key(payload: Mapping[str, Any], length: int = 16) -> str:
    """A short stable hash of a JSON-able mapping (the export cache key)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
