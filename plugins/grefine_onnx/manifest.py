"""The export manifest (``manifest.json`` next to the ``.onnx`` files) and its checks.

The manifest records the source weights' hash, the export options and key, the opset, dtype,
input/output shapes, each file's sha256 and the grefine / torch versions. :func:`check_export`
compares a folder against what the caller expects and says, in words, what does not match.
Standard library only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from grefine_onnx.constants import EXPORT_FORMAT, MANIFEST_NAME, PART_FILES
from grefine_onnx.hashing import file_sha256

#: ``ok``: usable as is; ``missing``: nothing exported there; ``stale``: an export of the same
#: weights and options whose files are missing, changed or from an older format; ``foreign``:
#: files or a manifest that belong to other weights or other options (or ``.onnx`` files with no
#: manifest at all).
Status = Literal["ok", "missing", "stale", "foreign"]


@dataclass
class ExportCheck:
    """The outcome of :func:`check_export`.

    :ivar status: see :data:`Status`.
    :ivar reason: a sentence for the user (empty when ``ok``).
    :ivar manifest: the parsed manifest when there is one.
    """

    status: Status
    reason: str = ""
    manifest: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def manifest_path(directory: str | Path) -> Path:
    return Path(directory) / MANIFEST_NAME


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest of ``directory``, ``None`` when there is none.

    :raises ValueError: the file exists but is not a JSON object.
    """
    path = manifest_path(directory)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def write_manifest(directory: str | Path, data: dict[str, Any]) -> Path:
    """Write the manifest atomically (temporary file + rename)."""
    path = manifest_path(directory)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", "utf-8")
    os.replace(tmp, path)
    return path


def _onnx_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.onnx")) if directory.is_dir() else []


def check_export(
    directory: str | Path,
    *,
    key: str | None = None,
    weights_sha256: str | None = None,
    parts: tuple[str, ...] | None = None,
    verify_files: bool = True,
) -> ExportCheck:
    """Check an export folder against the expected weights / export key.

    :param directory: the folder.
    :param key: the expected export key (weights + options); ``None`` accepts any options.
    :param weights_sha256: the expected source-weights hash; ``None`` accepts any weights.
    :param parts: graphs that must be present (default: those the manifest lists).
    :param verify_files: re-hash every ``.onnx`` file against the manifest (catches files
        replaced or truncated after the export).
    """
    d = Path(directory)
    try:
        manifest = read_manifest(d)
    except ValueError as e:
        return ExportCheck("stale", f"the manifest is unreadable: {e}")
    if manifest is None:
        files = _onnx_files(d)
        if files:
            return ExportCheck(
                "foreign",
                f"{d} holds ONNX file(s) {', '.join(files)} without a {MANIFEST_NAME}: they were "
                "not written by grefine export-onnx (or the export was interrupted)",
            )
        return ExportCheck("missing", f"no export in {d}")
    source = manifest.get("source") or {}
    found_weights = source.get("weights_sha256")
    if weights_sha256 is not None and found_weights != weights_sha256:
        return ExportCheck(
            "foreign",
            f"{d} holds an export of other weights: its manifest records weights sha256 "
            f"{str(found_weights)[:16]}..., the loaded CLIP has {weights_sha256[:16]}... "
            f"({source.get('description') or 'unknown source'})",
            manifest,
        )
    # Before the key: the key hashes the format too, so an older export of the same weights and
    # options is stale (re-exported), not foreign.
    if manifest.get("format") != EXPORT_FORMAT:
        return ExportCheck(
            "stale",
            f"{d} was exported in format {manifest.get('format')!r}; this grefine writes "
            f"{EXPORT_FORMAT!r}",
            manifest,
        )
    if key is not None and manifest.get("key") != key:
        return ExportCheck(
            "foreign",
            f"{d} holds an export with other options (key {manifest.get('key')}, expected {key}; "
            f"dtype {manifest.get('dtype')}, static {manifest.get('static')}, opset "
            f"{manifest.get('opset')})",
            manifest,
        )
    graphs = manifest.get("graphs") or {}
    wanted = parts if parts is not None else tuple(graphs)
    for part in wanted:
        info = graphs.get(part)
        if not isinstance(info, dict):
            return ExportCheck("stale", f"{d}: the manifest lists no {part!r} graph", manifest)
        path = d / str(info.get("file", PART_FILES.get(part, "")))
        if not path.is_file():
            return ExportCheck("stale", f"{path} is missing", manifest)
        if path.stat().st_size != info.get("bytes"):
            return ExportCheck(
                "stale",
                f"{path} has {path.stat().st_size} bytes, the manifest records {info.get('bytes')}"
                " (replaced or truncated)",
                manifest,
            )
        if verify_files and file_sha256(path) != info.get("sha256"):
            return ExportCheck(
                "stale",
                f"{path} does not match the sha256 in the manifest (replaced or corrupted)",
                manifest,
            )
    return ExportCheck("ok", "", manifest)
