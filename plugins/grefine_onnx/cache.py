"""The export cache: one folder per (source weights hash, export options), re-exported only when
something changed; stale or foreign exports are re-exported or refused with a clear message."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from grefine_core.errors import ConfigError
from grefine_onnx.constants import CACHE_ENV_VAR, DEFAULT_CACHE_DIR
from grefine_onnx.export import ExportOptions, architecture, export_clip, export_key
from grefine_onnx.hashing import clip_weights_sha256
from grefine_onnx.manifest import check_export

log = logging.getLogger("grefine.onnx")


def default_cache_dir() -> Path:
    """``$GREFINE_ONNX_CACHE``, else ``~/.cache/grefine/onnx``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR).expanduser()


def _slug(text: str) -> str:
    name = Path(text).name if ("/" in text or "\\" in text) else text
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.")[:48] or "clip"


def cache_folder(cache_dir: str | Path | None, model_name: str, key: str) -> Path:
    """``<cache_dir>/<model slug>-<key>``."""
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return base / f"{_slug(model_name)}-{key}"


def ensure_export(
    clip: Any,
    options: ExportOptions,
    *,
    directory: str | Path | None = None,
    cache_dir: str | Path | None = None,
    model_name: str = "clip",
    on_mismatch: str = "reexport",
    weights_sha256: str | None = None,
    source: dict[str, Any] | None = None,
    verify_files: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """An up-to-date export of ``clip``: reused when its manifest matches, exported otherwise.

    :param clip: the torch ``clip`` backbone (the source of truth).
    :param options: the export options (for ``directory``: only used when re-exporting).
    :param directory: an explicit export folder (e.g. from ``grefine export-onnx --out``); any
        export options are accepted there, but its weights hash must match ``clip``'s and it
        must hold the graphs of ``options.parts``.
        ``None`` uses the cache folder of ``(weights, options)`` under ``cache_dir``.
    :param on_mismatch: ``"reexport"`` (log a warning and export again) or ``"refuse"`` (raise)
        for a stale or foreign export.
    :returns: ``(folder, manifest)``.
    :raises ConfigError: a stale / foreign export with ``on_mismatch="refuse"``.
    """
    if on_mismatch not in ("reexport", "refuse"):
        raise ConfigError(f"on_mismatch must be 'reexport' or 'refuse', got {on_mismatch!r}")
    weights = weights_sha256 or clip_weights_sha256(clip)
    key = export_key(weights, options, architecture(clip))
    if directory is not None:
        folder = Path(directory).expanduser()
        # Any options, but the graphs asked for must be there (a `--parts image` export is stale
        # for a backend that needs all three).
        check = check_export(
            folder, weights_sha256=weights, parts=options.parts, verify_files=verify_files
        )
    else:
        folder = cache_folder(cache_dir, model_name, key)
        check = check_export(
            folder, key=key, weights_sha256=weights, parts=options.parts, verify_files=verify_files
        )
    if check.ok:
        assert check.manifest is not None
        log.debug("onnx: using the export in %s", folder)
        return folder, check.manifest
    if check.status != "missing":
        if on_mismatch == "refuse":
            raise ConfigError(
                f"cannot use the ONNX export in {folder}: {check.reason}. Re-export it with "
                "`grefine export-onnx --model ... --out DIR --force`, point [plugins.onnx] "
                'model_dir elsewhere, or set [plugins.onnx] on_mismatch = "reexport"'
            )
        log.warning("onnx: %s; re-exporting into %s", check.reason, folder)
    else:
        log.info("onnx: exporting %s to %s (first use)", model_name, folder)
    manifest = export_clip(clip, folder, options, weights_sha256=weights, source=source)
    return folder, manifest
