"""The weights a configuration needs: collected from the active plugins (``grefine_weights``),
checked on disk without the network, listed, and fetched into the standard caches.

Sources: ``hf://org/repo`` (a Hugging Face repository, fetched into the hub cache, where
diffusers and open_clip read it), a base ``https://`` URL (files fetched into the weight's
``target`` folder, each checked against its sha256), or ``pip:<module>`` (a Python package a
plugin imports at run time: named with its pip command, never installed by grefine).
``$GREFINE_WEIGHTS_MIRROR`` names a local folder that stands in for every remote source, laid out
as ``<mirror>/hf/<org>/<repo>/<files>`` and ``<mirror>/url/<host>/<path>/<file>`` (an offline
site, or the tests).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from grefine_core.app.fingerprint import sha256_file
from grefine_core.errors import PluginError

#: The environment variable naming a local mirror of the remote sources.
MIRROR_ENV = "GREFINE_WEIGHTS_MIRROR"
HF_PREFIX = "hf://"
PIP_PREFIX = "pip:"
_REQUIRED = ("name", "present", "source", "files", "target")
#: Slots whose plugins an ``assess`` never calls.
REFINE_ONLY = ("stage1", "stage2")
Say = Callable[[str], Any]


@dataclass
class Weight:
    """One weight a plugin loads (the ``grefine_weights`` dict, checked), and its state.

    :ivar present: on disk and complete (for a hub repository: every declared file pattern has
        a file in the cached snapshot and no download is half done).
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
        if self.repo:
            from grefine_core.hub import hub_cache_dir

            return f"{self.target or hub_cache_dir()} (Hugging Face cache)"
        return self.target or "(nowhere)"

    def fetch_hint(self) -> str:
        """The exact command (or commands) that get it by hand."""
        if self.how:
            return self.how
        if self.repo:
            return f"hf download {self.repo}"
        if self.fetchable:
            base, target = self.source.rstrip("/"), self.target
            return "; ".join(f"curl -L -o {target}/{f} {base}/{f}" for f in self.files)
        return f"put it at {self.target}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "where": self.where, "fetch": self.fetch_hint()}


def _weight(plugin: str, raw: Any) -> Weight:
    """The checked :class:`Weight` of one declared dict.

    :raises PluginError: missing or unknown keys, or ``files`` not a mapping.
    """
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
    if not isinstance(raw["files"], Mapping):
        raise PluginError(
            f"plugin {plugin!r}: grefine_weights() 'files' must be {{file or glob: sha256}}, got "
            f"{type(raw['files']).__name__}",
            plugin=plugin,
        )
    values = dict(raw)
    values["files"] = {str(k): str(v or "") for k, v in raw["files"].items()}
    return Weight(plugin=plugin, **values)


def active_plugins(pipeline: Any, mode: str = "refine") -> list[str]:
    """The plugins that fill a slot of ``pipeline`` in ``mode`` (each once, in slot order); an
    ``assess`` leaves the refiners out."""
    from grefine_core.types import SLOTS

    slots = [s for s in SLOTS if mode == "refine" or s not in REFINE_ONLY]
    names = [pipeline.slot_plugin(slot) for slot in slots]
    return list(dict.fromkeys(n for n in names if n))


def collect_weights(pipeline: Any, config: Any = None, mode: str = "refine") -> list[Weight]:
    """Every weight the active plugins of ``pipeline`` would load in ``mode``, checked on disk
    without loading anything; one entry per distinct weight (PQ and AQ on one CLIP give one).

    :param config: the configuration to ask about (default the pipeline's; pass one with the
        device resolved, :func:`resolved`, to include the weights only a GPU run loads).
    """
    context = pipeline.run_context(pipeline.config.seed, "weights", "")
    if config is not None:
        context = dataclasses.replace(context, config=config)
    pm = pipeline.host.pm
    out: dict[tuple[str, str, str, tuple[str, ...]], Weight] = {}
    for name in active_plugins(pipeline, mode):
        others = [p for n, p in pm.list_name_plugin() if n != name]
        caller = pm.subset_hook_caller("grefine_weights", remove_plugins=others)
        try:
            found = [_weight(name, w) for result in caller(context=context) for w in result or []]
        except PluginError:
            raise
        except Exception as e:  # noqa: BLE001 - a plugin's bug, named
            raise PluginError(
                f"plugin {name!r} failed in grefine_weights(): {type(e).__name__}: {e}", plugin=name
            ) from e
        for weight in found:
            key = (weight.name, weight.source, weight.target, tuple(sorted(weight.files)))
            kept = out.setdefault(key, weight)
            kept.optional = kept.optional and weight.optional  # required by one: required
    return [verify(w) for w in out.values()]


def hub_complete(repo: str, patterns: Sequence[str], cache: str = "") -> bool:
    """True when the hub cache holds a snapshot of ``repo``'s main revision in which every
    pattern matches a file, and no download of the repository is half done (``*.incomplete``).
    A snapshot with only the small files of an interrupted download is not complete."""
    from grefine_core.hub import hub_cache_dir

    root = (Path(cache).expanduser() if cache else hub_cache_dir()) / (
        f"models--{repo.replace('/', '--')}"
    )
    try:
        commit = (root / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return False
    snapshot = root / "snapshots" / commit
    if not snapshot.is_dir() or any((root / "blobs").glob("*.incomplete")):
        return False
    files = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    return bool(files) and all(any(fnmatch.fnmatch(f, pat) for f in files) for pat in patterns)


def verify(weight: Weight) -> Weight:
    """Check what the plugin declared: a hub repository's snapshot is complete; each URL file
    matches the sha256 its publisher gives."""
    if weight.repo:
        weight.present = hub_complete(weight.repo, list(weight.files) or ["*"], weight.target)
        return weight
    hashed = {f: h for f, h in weight.files.items() if h}
    if weight.present and hashed and weight.target:
        target = Path(weight.target).expanduser()
        weight.verified = all(
            (target / f).is_file() and sha256_file(target / f) == h for f, h in hashed.items()
        )
    return weight


def missing(weights: Sequence[Weight]) -> list[Weight]:
    """The required weights that are absent or fail their sha256."""
    return [w for w in weights if not w.optional and (not w.present or w.verified is False)]


def missing_message(weights: Sequence[Weight], preset: str, fetch_with: str) -> str:
    """One line naming every missing weight and where it was looked for; ``fetch_with`` says how
    to fetch those that can be fetched; Python packages get their pip command."""
    parts = [
        f"{w.name} [plugin {w.plugin}; "
        + (f"install it: {w.how}]" if w.source.startswith(PIP_PREFIX) else f"looked in {w.where}]")
        for w in weights
    ]
    text = f"{len(weights)} model weight(s) or package(s) missing for preset {preset!r}: "
    text += "; ".join(parts)
    if any(w.fetchable for w in weights):
        text += f". Fetch the weights with {fetch_with}"
    return text + "; `grefine weights` lists each one's size, licence and manual download"


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


def resolved(config: Any) -> Any:
    """``config`` with an ``auto`` device and dtype resolved (imports torch only for ``auto``)."""
    from grefine_core.placement import auto_dtype, resolve_device

    device = resolve_device(config.device)
    return config.model_copy(update={"device": device, "dtype": auto_dtype(device, config.dtype)})


def fetch_missing(weights: Sequence[Weight], say: Say) -> list[str]:
    """Fetch every fetchable missing weight, going on after a failure; the failures' messages."""
    from grefine_core.app.weights_fetch import fetch
    from grefine_core.errors import GRefineError

    failures = []
    for weight in (w for w in missing(weights) if w.fetchable):
        try:
            say(f"{weight.name}: {fetch(weight, say)}")
        except GRefineError as e:
            failures.append(str(e))
    return failures


def preflight(
    pipeline: Any, fetch: bool = False, say: Say = print, mode: str = "refine"
) -> list[Weight]:
    """What a run checks before its first item: the device, and every weight of the plugins the
    run calls (an ``assess`` never loads the refiners), all problems named in one message.

    The first pass asks the plugins without importing torch (the device as configured), so that
    missing weights are reported at once; once they are there, the device is resolved and the
    plugins asked again (a GPU run loads more, e.g. SDXL's float16 VAE). Without ``fetch``
    nothing touches the network; with it, missing weights are fetched first. When every weight
    is local, the process goes offline (:func:`go_offline`).

    :raises MissingWeightsError: weights or packages are missing (exit 2).
    :raises UsageError: the device cannot be used (exit 2).
    """
    from grefine_core.errors import MissingWeightsError, UsageError

    fetch_with = (
        "--fetch-weights (the same command), or `grefine weights fetch` with the same options"
    )
    try:
        check_device(pipeline.config.device)
        device_problem = ""
    except UsageError as e:
        device_problem = str(e)
    config = pipeline.config
    while True:  # as configured, then on the resolved device if that changes the configuration
        weights = collect_weights(pipeline, config, mode)
        if fetch and missing(weights):
            failures = fetch_missing(weights, say)
            weights = collect_weights(pipeline, config, mode)
            if failures and missing(weights):
                raise MissingWeightsError("; ".join(failures))
        absent = missing(weights)
        if absent or device_problem:
            text = missing_message(absent, config.preset, fetch_with) if absent else ""
            raise (MissingWeightsError if absent else UsageError)(
                "; and ".join(t for t in (device_problem, text) if t)
            )
        on_device = resolved(config)
        if on_device == config:
            break
        config = on_device
    go_offline()
    return weights
