"""What the indicators load (``grefine weights``): their backbone's weights (the backbone
factory's ``weights(context)``) and, for PQ, the four learned prompt files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grefine_quality.constants import (
    PQ_BASE_URL,
    PQ_FACTORS,
    PQ_SHA256,
    pq_filename,
    pq_search_dirs,
)
from grefine_quality.trained import TRAINED_MANIFEST, trained_files


def _factory(context: Any, default: str) -> Any:
    """The factory of the backbone the indicator runs on (``None`` when none offers it)."""
    return context.backbones.get(context.settings("backbone").name or default)


def backbone_weights(context: Any, default: str) -> list[dict[str, Any]]:
    """The weights of the backbone the indicator runs on (``[plugins.backbone] name`` or
    ``default``), as its factory declares them (nothing when it declares none)."""
    listed = getattr(_factory(context, default), "weights", None)
    return list(listed(context)) if listed is not None else []


def pq_prompt_weights(context: Any, default: str) -> list[dict[str, Any]]:
    """The four PQ prompt files, unless the backbone plants its own or ``prompts`` is a URL."""
    planted = getattr(_factory(context, default), "plants_pq_prompts", None)
    if planted is not None and planted(context):
        return []
    s = context.settings("pq")
    if s.prompts.startswith(("http://", "https://")):
        return []
    folders = [Path(s.prompts)] if s.prompts else pq_search_dirs()
    names = [pq_filename(f) for f in PQ_FACTORS]
    home = next(
        (Path(d).expanduser() for d in folders if _has_all(Path(d).expanduser(), names)), None
    )
    target = home or Path(folders[0]).expanduser()
    files = {pq_filename(f): PQ_SHA256[f] for f in PQ_FACTORS}
    trained = home is not None and (home / TRAINED_MANIFEST).is_file()
    if trained:  # grefine train-pq output: checked against its own manifest (docs/training.md)
        recorded = trained_files(home / TRAINED_MANIFEST)
        files = {name: recorded.get(name, digest) for name, digest in files.items()}
    return [
        {
            "name": "PQ-Map learned quality prompts (PQ-overall/technical/rational/natural.pth)",
            "present": home is not None,
            "source": PQ_BASE_URL,
            "files": files,
            "target": str(target),
            "size": "about 1.3 MB (4 x 317 kB)",
            "licence": "Apache-2.0 (Q-Future/Q-Refine)",
            # random-weight backbones (tiny) may run on seeded random prompts instead
            "optional": bool(s.random_fallback),
        }
    ]


def _has_all(folder: Any, names: list[str]) -> bool:
    return all((folder / n).is_file() for n in names)


def indicator_weights(context: Any, default: str, perceptual: bool) -> list[dict[str, Any]]:
    """Everything an indicator on the backbone ``default`` (unless configured) loads."""
    out = backbone_weights(context, default)
    return out + pq_prompt_weights(context, default) if perceptual else out
