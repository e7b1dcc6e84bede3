"""The local Hugging Face cache, read without the network: is a repository there, and at which
revision. Loaders use it to stay offline when the files are present (``local_files_only``), and
the run fingerprint records the revision."""

from __future__ import annotations

import os
from pathlib import Path


def hub_cache_dir() -> Path:
    """``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    root = os.environ.get("HF_HUB_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface"))) / "hub"


def cached_revisions(repo_id: str) -> dict[str, str]:
    """``{ref: commit}`` of a model repository in the local cache (empty when absent)."""
    refs = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs"
    try:
        heads = sorted(p for p in refs.iterdir() if p.is_file())
    except OSError:
        return {}
    out = {}
    for ref in heads:
        try:
            out[ref.name] = ref.read_text(encoding="utf-8").strip()
        except OSError:
            continue
    return out


def is_cached(repo_id: str) -> bool:
    """True when the cache holds a snapshot of ``repo_id``'s main revision (load it offline)."""
    commit = cached_revisions(repo_id).get("main")
    if not commit:
        return False
    snapshot = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit
    return snapshot.is_dir() and any(snapshot.iterdir())
