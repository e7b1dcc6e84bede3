"""The run context handed to every hook, and the model cache shared across runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from grefine_core.placement import auto_dtype, resolve_device

if TYPE_CHECKING:
    from pydantic import BaseModel

    from grefine_core.backbone import ClipBackbone
    from grefine_core.config import GRefineConfig

T = TypeVar("T")


class ModelCache:
    """Loaded models keyed by a hashable description, owned by one :class:`GRefine`.

    ``refine_many`` reuses whatever the first item loaded; two plugins asking for the same key
    (e.g. the PQ and AQ indicators asking for the same CLIP) share one instance.
    """

    def __init__(self) -> None:
        self._items: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def get_or_create(self, key: Any, factory: Callable[[], T]) -> T:
        """Return the cached object for ``key``, building it with ``factory()`` on first use."""
        with self._lock:
            if key not in self._items:
                self._items[key] = factory()
            return self._items[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._items


@dataclass
class RunContext:
    """Everything a hook may need about the current run.

    :ivar config: the validated configuration.
    :ivar models: the model cache of the owning :class:`GRefine` (lives across runs).
    :ivar cache: a per-run scratch dict (e.g. CLIP image tokens shared between PQ and AQ).
    :ivar seed: the seed of this run (base seed + item index).
    :ivar item_name: a name for the item (file stem), used in messages.
    :ivar prompt: the prompt of this run.
    :ivar backbones: ``{name: factory}`` offered by the plugins (see :meth:`backbone`).
    """

    config: GRefineConfig
    models: ModelCache
    plugin_settings: dict[str, BaseModel]
    seed: int = 0
    item_name: str = "image"
    prompt: str = ""
    cache: dict[str, Any] = field(default_factory=dict)
    slot: str | None = None
    backbones: dict[str, Callable[[RunContext], Any]] = field(default_factory=dict)
    _progress: Callable[[str, int, int], None] | None = None

    @property
    def device(self) -> str:
        """The torch device string (``cpu``, ``mps``, ``cuda``, ``cuda:1``): the configuration's,
        with ``auto`` resolved (:func:`grefine_core.placement.resolve_device`)."""
        return resolve_device(self.config.device)

    @property
    def dtype(self) -> str:
        """The dtype name (``float32``, ``float16``, ``bfloat16``), ``auto`` resolved for the
        device (float16 on CUDA, float32 elsewhere)."""
        return auto_dtype(self.device, self.config.dtype)

    @property
    def preset(self) -> str:
        return self.config.preset

    def settings(self, section: str) -> BaseModel:
        """The validated settings of ``[plugins.<section>]`` (defaults when absent)."""
        try:
            return self.plugin_settings[section]
        except KeyError:
            from grefine_core.errors import ConfigError

            known = ", ".join(sorted(self.plugin_settings)) or "(none)"
            raise ConfigError(
                f"no settings section [plugins.{section}] is declared by a loaded plugin; "
                f"declared sections: {known}"
            ) from None

    def backbone(self, name: str) -> ClipBackbone:
        """The backbone ``name`` for this context's settings (a plugin's ``grefine_backbones``).

        :raises ConfigError: no loaded plugin offers ``name``.
        :raises PluginError: the factory returned something that is not a ``ClipBackbone``.
        """
        from grefine_core.backbone import ClipBackbone
        from grefine_core.errors import ConfigError, PluginError

        factory = self.backbones.get(name)
        if factory is None:
            known = ", ".join(sorted(self.backbones)) or "(none)"
            raise ConfigError(f"no loaded plugin offers the backbone {name!r}; offered: {known}")
        backbone = factory(self)
        if not isinstance(backbone, ClipBackbone):
            raise PluginError(
                f"backbone {name!r}: the factory returned {type(backbone).__name__}, which lacks "
                "members of grefine_core.ClipBackbone"
            )
        return backbone

    def progress(self, step: int, total: int) -> None:
        """Report that ``step`` of ``total`` units of the current slot are done."""
        if self._progress is not None and self.slot is not None:
            self._progress(self.slot, step, total)

    def torch_generator(self) -> Any:
        """A CPU ``torch.Generator`` seeded with this run's seed (torch imported lazily)."""
        import torch

        return torch.Generator("cpu").manual_seed(int(self.seed))
