"""The weights the ``clip`` backbone loads (``grefine weights``), found without torch or the
network: the backbone factories carry them as ``factory.weights(context)``, which the indicator
plugins that use the backbone report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: open_clip's Hugging Face copy of OpenAI's CLIP weights, by (model, tag): known here so that
#: listing them needs no torch (open_clip is asked for any other pair).
KNOWN_HUB_FILES = {
    ("ViT-B-16-quickgelu", "openai"): (
        "timm/vit_base_patch16_clip_224.openai",
        "open_clip_model.safetensors",
    ),
    ("ViT-B-16", "openai"): (
        "timm/vit_base_patch16_clip_224.openai",
        "open_clip_model.safetensors",
    ),
}
OPENAI_LICENCE = "MIT (OpenAI CLIP)"


def _hub_file(model: str, tag: str) -> tuple[str, str] | None:
    known = KNOWN_HUB_FILES.get((model, tag))
    if known is not None:
        return known
    from open_clip.pretrained import get_pretrained_cfg  # imports torch: unusual configurations

    hub = (get_pretrained_cfg(model, tag) or {}).get("hf_hub", "")
    if not hub:
        return None
    hub = hub.rstrip("/")  # open_clip writes "org/model/" for the default file name
    repo, filename = os.path.split(hub) if hub.count("/") > 1 else (hub, "")
    return repo, filename or "open_clip_model.safetensors"


def clip_weights(context: Any) -> list[dict[str, Any]]:
    """The CLIP weights ``[plugins.clip]`` names (none for ``tiny`` and ``oracle``)."""
    s = context.settings("clip")
    if s.model in ("tiny", "oracle"):
        return []
    name = f"CLIP {s.model} ({s.pretrained or 'weights file'}), the PQ/AQ backbone"
    path = Path(s.pretrained or s.model).expanduser()
    if path.exists() or str(s.model).endswith((".pt", ".safetensors")):
        return [
            {"name": name, "present": path.exists(), "source": "", "files": {}, "target": str(path)}
        ]
    found = _hub_file(s.model, s.pretrained)
    if found is None:
        return []
    repo, filename = found
    return [
        {
            "name": name,
            "present": False,  # the hub cache is checked by the caller
            "source": f"hf://{repo}",
            "files": {filename: ""},
            "target": s.cache_dir,
            "size": "about 0.6 GB",
            "licence": OPENAI_LICENCE if s.pretrained == "openai" else "see the model page",
            "how": f"hf download {repo} {filename}",
        }
    ]
