"""Parity of an export against the torch model it came from (used by ``export-onnx --check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from grefine_onnx.manifest import read_manifest
from grefine_onnx.providers import SessionConfig
from grefine_onnx.session import OrtGraph

#: Default max-abs-diff tolerances by export dtype.
TOLERANCE = {"float32": 1e-4, "float16": 5e-2}


def parity(
    clip: Any,
    directory: str | Path,
    *,
    batch: int = 2,
    config: SessionConfig | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Max absolute difference between each exported graph and ``clip``'s torch encoder on the
    same seeded inputs.

    :param clip: the torch ``clip`` backbone the export came from.
    :param directory: the export folder.
    :param batch: inputs per graph.
    :param config: session configuration (default: CPU provider).
    :returns: ``{graph: max |onnx - torch|}`` for each graph in the manifest.
    """
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"no manifest in {directory}")
    cfg = config or SessionConfig(providers=("cpu",))
    arch = manifest["architecture"]
    gen = torch.Generator("cpu").manual_seed(seed)
    out: dict[str, float] = {}
    for part, info in manifest["graphs"].items():
        graph = OrtGraph(Path(directory) / info["file"], info, cfg, what=part)
        if part == "image":
            x = torch.randn((batch, 3, arch["image_size"], arch["image_size"]), generator=gen)
            ref = clip.encode_image(x)
        elif part == "text":
            words = ["a photo of a cat", "a red car on a wooden table", "", "tree"]
            x = clip.tokenize([words[i % len(words)] for i in range(batch)])
            ref = clip.encode_text(x, cut=False)
        else:
            rows = arch["prompt_eot_index"] + 1
            x = 0.02 * torch.randn((batch, rows, arch["text_width"]), generator=gen)
            ref = clip.encode_prompt_embeddings(x, arch["prompt_eot_index"])
        got = graph(x)
        got = got.cpu().numpy() if isinstance(got, torch.Tensor) else got
        out[part] = float(np.abs(got - ref.cpu().numpy()).max())
    return out
