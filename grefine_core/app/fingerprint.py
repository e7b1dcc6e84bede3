"""The run fingerprint: everything that shapes one item's output, computable before any model loads.

Parts: the input (file sha256, or a digest of an in-memory image's pixels), the prompt, seed and
mode, the preset, the resolved configuration (every setting, plugin sections with their defaults
filled in), the plugins that fill the slots with their versions, the versions of grefine, torch
and the other libraries that compute, and the models the settings name (a local path with its
size and modification time, a hub id with the revision in the local cache; never a hash of
gigabytes of weights). Resume skips an item only when its fingerprint is the same; a changed one
is rerun and the parts that changed are named.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grefine_core.pipeline import GRefine

#: Libraries whose version is part of the fingerprint (read from package metadata; no import).
LIBRARIES = (
    "grefine",
    "torch",
    "diffusers",
    "transformers",
    "open_clip_torch",
    "compel",
    "numpy",
    "scipy",
    "pillow",
    "nltk",
    "textblob",
    "spacy",
    "onnxruntime",
    "onnxruntime-gpu",
)
#: Top-level settings that do not change what an item's outputs are.
_NOT_SHAPING = ("description", "notice", "strict_plugins")
#: Hub ids look like ``org/name``.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Stat at most this many files of a model folder.
_MAX_FILES = 20000


def sha256_file(path: str | os.PathLike[str] | Any, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (hex); ``path`` may also be an object with ``open("rb")``
    (:class:`grefine_core.app.location.ArrowPath`)."""
    h = hashlib.sha256()
    with open(path, "rb") if isinstance(path, str | os.PathLike) else path.open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def input_identity(image: Any) -> dict[str, Any]:
    """The input's identity: ``{"sha256", "size"}`` of a file, or a pixel digest of a PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        h = hashlib.sha256(f"{image.mode}:{image.size}".encode())
        h.update(image.tobytes())
        return {"in_memory": True, "pixels_sha256": h.hexdigest()}
    path = Path(image)
    try:
        return {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    except OSError as e:
        return {"unreadable": f"{type(e).__name__}: {e.strerror or e}"}


def library_versions() -> dict[str, str | None]:
    """Installed versions of :data:`LIBRARIES` (``None`` when not installed)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _hub_revision(repo_id: str) -> str:
    """The commits the local Hugging Face cache holds for ``repo_id`` (no network), or a note."""
    from grefine_core.hub import cached_revisions

    revisions = cached_revisions(repo_id)
    return ",".join(f"{k}={v}" for k, v in revisions.items()) or "not in the local cache"


def local_identity(path: Path) -> dict[str, Any]:
    """``{"path", "bytes", "mtime"}`` of a model file or folder (stat only, capped)."""
    if path.is_file():
        st = path.stat()
        return {"path": str(path.resolve()), "bytes": st.st_size, "mtime": int(st.st_mtime)}
    total, latest, count = 0, 0, 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_size
            latest = max(latest, int(st.st_mtime))
            count += 1
        if count >= _MAX_FILES:
            break
    return {"path": str(path.resolve()), "bytes": total, "mtime": latest, "files": count}


def code_identity(modules: Sequence[Any]) -> str:
    """A digest of the size and modification time of every ``.py`` file of the packages the
    ``modules`` belong to: a code edit (an editable install) changes it; nothing is read."""
    roots = set()
    for module in modules:
        file = getattr(module, "__file__", None)
        if file:
            path = Path(file).resolve().parent
            roots.add(path)
    h = hashlib.sha256()
    for root in sorted(roots):
        for p in sorted(root.rglob("*.py")):
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def model_identifiers(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Every setting naming a model, by ``section.key``: local paths with size and mtime, hub ids
    with their cached revision. Computed from the settings alone, before anything loads."""
    out: dict[str, Any] = {}
    for section, values in sorted(sections.items()):
        for key, value in sorted(values.items()):
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                continue
            if "cache" in key:  # caches are written by runs: not what shapes the output
                continue
            path = Path(os.path.expanduser(value))
            try:
                exists = path.exists()
            except OSError:
                exists = False
            if exists and (path.is_dir() or path.is_file()):
                out[f"{section}.{key}"] = local_identity(path)
            elif _HUB_ID.match(value) and not value.startswith(("./", "../")):
                out[f"{section}.{key}"] = {"hub": value, "revision": _hub_revision(value)}
            elif value.startswith("hf://"):  # hf://org/repo/subfolder
                repo = "/".join(value[5:].strip("/").split("/")[:2])
                out[f"{section}.{key}"] = {"hub": value, "revision": _hub_revision(repo)}
    return out


@dataclass
class Fingerprint:
    """The parts that shape an item's output and their digest.

    :ivar parts: ``{input, prompt, seed, mode, preset, config, plugins, versions, models}``.
    :ivar digest: sha256 of the canonical JSON of ``parts``.
    """

    parts: dict[str, Any]
    digest: str = field(default="")

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = hashlib.sha256(_canonical(self.parts).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, **self.parts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        parts = {k: v for k, v in data.items() if k != "digest"}
        return cls(parts=parts, digest=str(data.get("digest", "")))

    def changes(self, old: Fingerprint | Mapping[str, Any] | None, limit: int = 6) -> list[str]:
        """What differs from ``old``, as short phrases (``"seed 0 -> 5"``,
        ``"config.plugins.sdxl.steps 4 -> 2"``), at most ``limit`` of them."""
        if old is None:
            return ["no fingerprint in the old report (written by another grefine)"]
        old_parts = old.parts if isinstance(old, Fingerprint) else dict(old)
        found: list[str] = []
        _diff(old_parts, self.parts, "", found)
        if len(found) > limit:
            found = [*found[:limit], f"and {len(found) - limit} more"]
        return found or ["the digest differs"]


def _short(value: Any) -> str:
    text = _canonical(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _diff(old: Any, new: Any, where: str, found: list[str]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new)):
            _diff(old.get(key), new.get(key), f"{where}.{key}" if where else str(key), found)
        return
    if old != new:
        found.append(f"{where} {_short(old)} -> {_short(new)}")


def shaping_plugins(pipeline: GRefine) -> list[str]:
    """The plugins whose settings and code can shape an output: those in the slots, and every
    loaded plugin that offers a backbone (the indicators run on one of them). Evaluation and
    command-only plugins are left out."""
    from grefine_core.types import SLOTS

    names = [n for n in (pipeline.slot_plugin(s) for s in SLOTS) if n is not None]
    for name, info in sorted(pipeline.host.infos.items()):
        if info.status == "loaded" and "grefine_backbones" in info.hooks and name not in names:
            names.append(name)
    return names


def resolved_config(pipeline: GRefine) -> dict[str, Any]:
    """The configuration as it shapes outputs: every top-level setting except free text (with
    ``auto`` device and dtype resolved: a result made on a GPU is not one made on the CPU), and
    the sections that the :func:`shaping_plugins` read, validated (defaults filled in); the
    sections of other plugins (evaluation) are left out."""
    data = pipeline.config.model_dump(mode="json")
    if "auto" in (data.get("device"), data.get("dtype")):  # what "auto" means on this machine
        from grefine_core.placement import auto_dtype, resolve_device

        data["device"] = resolve_device(data["device"])
        data["dtype"] = auto_dtype(data["device"], data["dtype"])
    if data.get("device") == "cuda":  # the same GPU as "cuda:0"
        data["device"] = "cuda:0"
    for key in _NOT_SHAPING:
        data.pop(key, None)
    used: set[str] = set()
    for name in shaping_plugins(pipeline):
        used |= pipeline.host.sections_by_plugin.get(name, set())
    data["plugins"] = {
        section: model.model_dump(mode="json")
        for section, model in sorted(pipeline.plugin_settings.items())
        if section in used
    }
    return data


def static_parts(pipeline: GRefine) -> dict[str, Any]:
    """The parts that do not depend on the item: computed once per pipeline."""
    from grefine_core.types import SLOTS

    config = resolved_config(pipeline)
    plugins: dict[str, Any] = {}
    modules = [sys.modules["grefine_core"]]  # the kernel and the app
    for slot in SLOTS:
        name = pipeline.slot_plugin(slot)
        plugins[slot] = None if name is None else [name, pipeline.host.plugin_version(name)]
    for name in shaping_plugins(pipeline):  # their code, the backbones' included
        obj = pipeline.host.pm.get_plugin(name)
        modules.append(sys.modules.get(getattr(obj, "__module__", "") or "") or obj)
    return {
        "preset": pipeline.config.preset,
        "config": config,
        "plugins": plugins,
        "versions": {**library_versions(), "code": code_identity(modules)},
        "models": model_identifiers(config["plugins"]),
    }


def run_fingerprint(
    pipeline: GRefine,
    image: Any,
    prompt: str,
    seed: int,
    mode: str,
    static: dict[str, Any] | None = None,
) -> Fingerprint:
    """The fingerprint of running ``image`` + ``prompt`` through ``pipeline`` (see the module).

    :param static: :func:`static_parts` of the pipeline when already computed.
    """
    parts = {
        "input": input_identity(image),
        "prompt": prompt,
        "seed": int(seed),
        "mode": mode,
        **(static if static is not None else static_parts(pipeline)),
    }
    return Fingerprint(parts)


def pipeline_fingerprint(
    pipeline: GRefine, image: Any, prompt: str, seed: int | None, mode: str
) -> Fingerprint:
    """The fingerprint of one run of ``pipeline`` (``seed=None``: the configured seed); the
    item-independent parts are computed once per pipeline and kept on it."""
    static = getattr(pipeline, "_fingerprint_static", None)
    if static is None:
        static = pipeline._fingerprint_static = static_parts(pipeline)
    run_seed = pipeline.config.seed if seed is None else int(seed)
    return run_fingerprint(pipeline, image, prompt, run_seed, mode, static)
