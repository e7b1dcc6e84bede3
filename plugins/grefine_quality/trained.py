"""PQ prompt files trained by ``grefine train-pq``: the manifest beside them records their sha256
(the released files' sha256 cannot match). Light: the weights check reads it without torch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from grefine_core.errors import InputError

#: Beside prompt files trained by ``grefine train-pq``: the manifest with their sha256, which the
#: loader checks them against (the released files' sha256 cannot match trained ones).
TRAINED_MANIFEST = "manifest.json"
TRAINED_MANIFEST_KIND = "grefine.pq-prompts"


def trained_files(manifest: Path) -> dict[str, str]:
    """``{file name: sha256}`` recorded by a ``grefine train-pq`` manifest (docs/training.md)."""
    import json

    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"PQ prompt manifest {str(manifest)!r} is unreadable ({e})") from None
    files = data.get("files") if isinstance(data, Mapping) else None
    if not isinstance(files, Mapping) or data.get("kind") != TRAINED_MANIFEST_KIND:
        raise InputError(
            f"{str(manifest)!r} is not a grefine train-pq manifest (kind "
            f"{TRAINED_MANIFEST_KIND!r} with a 'files' table of sha256)"
        )
    return {str(k): str(v) for k, v in files.items()}
