"""The weights a configuration needs: collected from the active plugins (``grefine_weights``),
checked on disk without the network, listed, and fetched into the standard caches.

Sources: ``hf://org/repo`` (a Hugging Face repository, fetched into the hub cache, where
diffusers and open_clip read it) or a base ``https://`` URL (files fetched into the weight's
``target`` folder, each checked against its sha256). ``$GREFINE_WEIGHTS_MIRROR`` names a local
folder that stands in for every remote source, laid out as ``<mirror>/hf/<org>/<repo>/<files>``
and ``<mirror>/url/<host>/<path>/<file>`` (an offline site, or the tests).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grefine_core.app.fingerprint import sha256_file
from grefine_core.errors import PluginError

#: The environment variable naming a local mirror of the remote sources.
MIRROR_ENV = "GREFINE_WEIGHTS_MIRROR"
HF_PREFIX = "hf://"
#: ``pip:<extra>``: a Python package the plugin imports at run time, installed with pip.
PIP_PREFIX = "pip:"
_REQUIRED = ("name", "present", "source", "files", "target")


@dataclass
class Weight:
    """One weight a plugin loads (the ``grefine_weights`` dict, checked), and its state.

    :ivar verified: ``True`` when every file matched its published sha256, ``False`` when one did
        not, ``None`` when the publisher gives none (the hub checks its own downloads).
    """

    plugin: str
    name: str
    present: bool
    source: str
    files: dict[str, str]
    target: str
    size: str = ""
    licence: str = ""
    how: str = ""
    unpack: bool = False
    contains: list[str] = field(default_factory=list)
    optional: bool = False
    verified: bool | None = None

    @property
    def repo(self) -> str | None:
        """The Hugging Face repository of an ``hf://`` source."""
        return self.source[len(HF_PREFIX) :] if self.source.startswith(HF_PREFIX) else None

    @property
    def fetchable(self) -> bool:
        """``grefine weights fetch`` can get it (a Python package or a local-only file: no)."""
        return bool(self.repo) or self.source.startswith(("https://", "http://"))

    @property
    def where(self) -> str:
        """Where it is looked for, for people."""
        if self.source.startswith(PIP_PREFIX):
            return "this Python environment"
        if self.target:
            return self.target
        from grefine_core.hub import hub_cache_dir

        return f"{hub_cache_dir()} (Hugging Face cache)" if self.repo else "(nowhere)"

    def fetch_hint(self) -> str:
        """The exact command or URL that gets it."""
        if self.how:
            return self.how
        if self.repo:
            return f"hf download {self.repo}"
        return f"download {', '.join(self.files)} from {self.source} into {self.target}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "where": self.where, "fetch": self.fetch_hint()}


def _weight(plugin: str, raw: Any) -> Weight:
    if not isinstance(raw, Mapping) or any(k not in raw for k in _REQUIRED):
        raise PluginError(
            f"plugin {plugin!r}: grefine_weights() must return dicts with the keys "
            f"{', '.join(_REQUIRED)}, got {raw!r}",
            plugin=plugin,
        )
    known = set(Weight.__dataclass_fields__) - {"plugin", "verified"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PluginError(
            f"plugin {plugin!r}: grefine_weights() returned unknown keys {unknown}; valid: "
            f"{', '.join(sorted(known))}",
            plugin=plugin,
        )
    values = dict(raw)
    values["files"] = {str(k): str(v or "") for k, v in dict(values["files"]).items()}
    values["contains"] = list(values.get("contains", []))
    return Weight(plugin=plugin, **values)


def active_plugins(pipeline: Any) -> list[str]:
    """The plugins that fill a slot of ``pipeline`` (each once, in slot order)."""
    from grefine_core.types import SLOTS

    names = [pipeline.slot_plugin(slot) for slot in SLOTS]
    return list(dict.fromkeys(n for n in names if n))


def collect_weights(pipeline: Any, config: Any = None) -> list[Weight]:
    """Every weight the active plugins of ``pipeline`` would load, without loading anything; two
    plugins naming the same files (PQ and AQ on one CLIP) give one entry.

    :param config: the configuration to ask about (default the pipeline's; the check before a run
        asks again with the device resolved, for weights that only a GPU run loads).
    """
    context = pipeline.run_context(pipeline.config.seed, "weights", "")
    if config is not None:
        context = dataclasses.replace(context, config=config)
    pm = pipeline.host.pm
    out: dict[tuple[str, str, tuple[str, ...]], Weight] = {}
    for name in active_plugins(pipeline):
        others = [p for n, p in pm.list_name_plugin() if n != name]
        caller = pm.subset_hook_caller("grefine_weights", remove_plugins=others)
        try:
            declared = [w for found in caller(context=context) for w in (found or [])]
        except Exception as e:  # noqa: BLE001 - a plugin's bug, named
            raise PluginError(
                f"plugin {name!r} failed in grefine_weights(): {type(e).__name__}: {e}", plugin=name
            ) from e
        for raw in declared:
            weight = verify(_weight(name, raw))
            out.setdefault((weight.source, weight.target, tuple(sorted(weight.files))), weight)
    return list(out.values())


def verify(weight: Weight) -> Weight:
    """Check the sha256 of a present weight's files where the publisher gives one."""
    hashed = {f: h for f, h in weight.files.items() if h}
    if not weight.present or not hashed or not weight.target or weight.unpack:
        return weight
    target = Path(weight.target).expanduser()
    weight.verified = all(
        (target / f).is_file() and sha256_file(target / f) == h for f, h in hashed.items()
    )
    return weight


def missing(weights: Sequence[Weight]) -> list[Weight]:
    """The required weights that are absent or fail their sha256."""
    return [w for w in weights if not w.optional and (not w.present or w.verified is False)]


def missing_message(weights: Sequence[Weight], preset: str) -> str:
    """One line naming every missing weight, where it was looked for, and the command to get
    them all."""
    parts = [f"{w.name} [plugin {w.plugin}; looked in {w.where}]" for w in weights]
    return (
        f"{len(weights)} model weight(s) missing for preset {preset!r}: {'; '.join(parts)}. "
        f"Get them all with `grefine weights fetch --preset {preset}`; `grefine weights "
        f"--preset {preset}` shows each one's size, licence and manual download"
    )


def mirror_dir() -> Path | None:
    """The local mirror named by ``$GREFINE_WEIGHTS_MIRROR`` (``None`` when unset)."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def matching(root: Path, patterns: Sequence[str]) -> list[Path]:
    """Files under ``root`` whose relative path matches one of ``patterns`` (fnmatch, ``*``
    crossing folders, as the hub's ``allow_patterns``)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, pat) for pat in patterns):
            found.append(path)
    return found


def go_offline() -> None:
    """Every weight is local: keep the Hugging Face libraries off the network for this process
    (``HF_HUB_OFFLINE=1``, unless the user set it), also when ``huggingface_hub`` is imported."""
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and os.environ["HF_HUB_OFFLINE"].strip().lower() in ("1", "true"):
        constants.HF_HUB_OFFLINE = True


def check_device(device: str) -> None:
    """Fail before the first item when the configured device cannot be used.

    :raises UsageError: CUDA without a GPU, ``cuda:N`` past the GPUs torch sees, MPS absent.
    """
    from grefine_core.errors import UsageError

    if device in ("auto", "cpu"):
        return
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            seen = f"{count} GPU(s)" if count else "no CUDA GPU"
            raise UsageError(
                f"device {device!r}: torch {torch.__version__} sees {seen}; use --device auto, "
                "cpu, or cuda:N with N below the GPU count (or install a CUDA build of torch)"
            )
    elif device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps': torch sees no Apple GPU (MPS); use --device auto or cpu")


def preflight(pipeline: Any, fetch: bool = False, say: Any = print) -> list[Weight]:
    """What a run checks before its first item: every weight of the active plugins (all missing
    ones named at once; fetched first when ``fetch``), then the device. Without ``fetch`` nothing
    touches the network; when every weight is local, the process goes offline (:func:`go_offline`).

    :raises MissingWeightsError: weights are missing (exit 2).
    :raises UsageError: the device cannot be used.
    """
    from grefine_core.errors import MissingWeightsError
    from grefine_core.placement import auto_dtype, resolve_device

    config = pipeline.config
    for asked in ("as configured", "on the resolved device"):  # the first needs no torch
        weights = collect_weights(pipeline, config)
        absent = missing(weights)
        if absent and fetch:
            from grefine_core.app.weights_fetch import fetch as fetch_one

            for weight in (w for w in absent if w.fetchable):
                fetch_one(weight, say)
            weights = collect_weights(pipeline, config)
            absent = missing(weights)
        if absent:
            raise MissingWeightsError(missing_message(absent, config.preset))
        if asked == "as configured":
            check_device(config.device)
            device = resolve_device(config.device)
            config = config.model_copy(
                update={"device": device, "dtype": auto_dtype(device, config.dtype)}
            )
    go_offline()
    return weights
