"""Locate the project's shared reference folder (fixtures, PQ prompts, PartiPrompts).

It is never copied into the project: it is read in place from ``$GREFINE_SHARED_DIR`` or, in a
checkout, from the ``shared`` folder beside the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "GREFINE_SHARED_DIR"


def shared_dir() -> Path | None:
    """The shared folder, or ``None`` when it is not available."""
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    repo_root = Path(__file__).resolve().parents[2]
    candidate = repo_root.parent / "shared"
    return candidate if candidate.is_dir() else None


def shared_path(*parts: str) -> Path | None:
    """A path inside the shared folder, or ``None`` when the folder or the path is missing."""
    base = shared_dir()
    if base is None:
        return None
    p = base.joinpath(*parts)
    return p if p.exists() else None
