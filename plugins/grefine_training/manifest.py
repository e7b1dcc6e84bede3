"""What training and calibration write: the prompt files in the released layout with their sha256
and the manifest beside them (which the PQ loader checks trained files against), the validation
scores, and preset files (TOML) that extend a shipped preset (docs/training.md).

Every file is written atomically; ``manifest.json`` is written after the prompt files it vouches
for, so a folder whose manifest is complete holds complete files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import re
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: Format version of the manifest (its name and kind are the PQ loader's:
#: ``grefine_quality.trained.TRAINED_MANIFEST`` / ``TRAINED_MANIFEST_KIND``).
MANIFEST_FORMAT = 1


def versions() -> dict[str, str]:
    """The versions a trained file depends on: grefine, torch, open_clip, numpy, Python."""
    out = {"python": platform.python_version()}
    for dist in ("grefine", "torch", "open_clip_torch", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def write_prompt_files(
    out: Path, params: Mapping[str, Mapping[str, Any]], info: Mapping[str, Any]
) -> dict[str, str]:
    """Write ``PQ-<factor>.pth`` (``{"params": {...}}``, float32, the released layout) for each
    factor, then ``manifest.json`` with their sha256, ``info`` and the versions.

    :returns: ``{file name: sha256}``.
    """
    import torch
    from grefine_quality.constants import pq_filename
    from grefine_quality.pq import sha256_of
    from grefine_quality.trained import TRAINED_MANIFEST, TRAINED_MANIFEST_KIND

    from grefine_core.atomic import atomic_path, write_text

    files: dict[str, str] = {}
    for factor, tensors in params.items():
        name = pq_filename(factor)
        data = {
            "params": {k: v.detach().float().cpu().contiguous().clone() for k, v in tensors.items()}
        }
        with atomic_path(out / name) as tmp:
            torch.save(data, str(tmp))
        files[name] = sha256_of(out / name)
    width = int(next(iter(params.values()))["prompt_learner.ctx"].shape[-1])
    manifest = {
        "kind": TRAINED_MANIFEST_KIND,
        "format": MANIFEST_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        "layout": {
            "prompt_learner.ctx": [2, 16, width],
            "prompt_learner.token_prefix": [2, 1, width],
            "prompt_learner.token_suffix": [2, 60, width],
            "assembled": "cat(prefix, ctx[:, :8], suffix[:, :3], ctx[:, 8:], suffix[:, 3:]): "
            "class tokens at rows 9-11, end-of-text at row 20; row 0 good, row 1 bad",
            "width": width,
        },
        **info,
        "versions": versions(),
    }
    write_text(out / TRAINED_MANIFEST, json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    return files


def write_val_scores(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """The validation images' scores as a CSV (floats written exactly: ``repr``)."""
    from grefine_core.atomic import write_text

    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------- TOML

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value!r}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise ValueError(f"no TOML form for {type(value).__name__} {value!r}")


def toml_text(data: Mapping[str, Any], comments: Sequence[str] = ()) -> str:
    """``data`` (nested dicts of strings, numbers, booleans and lists) as TOML, after
    ``comments`` (one ``#`` line each)."""
    lines = [f"# {c}".rstrip() for c in comments]

    def table(prefix: str, body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        if prefix and scalars:
            lines.extend(["", f"[{prefix}]"])
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)

    table("", data)
    return "\n".join(lines) + "\n"


def preset_data(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A user config file's table: ``preset = base preset``, the settings the run used (its
    ``--config`` file and ``--set`` overrides), then ``extra`` on top."""
    from grefine_core.config import deep_merge

    merged = deep_merge(dict(base.get("settings") or {}), dict(extra))
    merged.pop("preset", None)
    return {"preset": str(base.get("preset") or "paper"), **merged}


def write_preset(
    path: Path, *, base: Mapping[str, Any], prompts: Path, compat: str, comment: str
) -> None:
    """``preset.toml`` beside trained prompts: the base preset with ``[plugins.pq] prompts``
    pointing at them (use it with ``--config``)."""
    from grefine_core.atomic import write_text

    data = preset_data(
        base, {"plugins": {"pq": {"prompts": str(prompts.resolve()), "compat": compat}}}
    )
    comments = [
        comment,
        f"Use: grefine refine IMAGE --prompt '...' --config {path}",
    ]
    write_text(path, toml_text(data, comments))
