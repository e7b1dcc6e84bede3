"""Plugin discovery and slot selection.

Every plugin, the defaults included, comes in through the ``grefine`` entry-point group, exactly as a
third-party one would. Entry points are loaded one at a time: a plugin that fails to import is
reported by name and skipped (``strict`` re-raises). Disabled plugins are blocked *before* import,
so a disabled plugin costs nothing. There is no module-level plugin manager: each
:class:`PluginHost` owns its own.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pluggy

from grefine_core import hookspecs
from grefine_core.errors import ConfigError, PluginError, UsageError
from grefine_core.markers import PROJECT_NAME
from grefine_core.types import SLOTS

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "grefine"
#: Entry points naming each settings section an installed distribution reads (``section =
#: "module:Model"``); only the names are read, so no plugin is imported to know its sections.
SETTINGS_GROUP = "grefine.settings"
CORE_DISTRIBUTION = "grefine"

#: The hook that fills each slot.
SLOT_HOOKS: dict[str, str] = {
    "perceptual": "grefine_perceptual_map",
    "parser": "grefine_parse_prompt",
    "alignment": "grefine_alignment_map",
    "fuser": "grefine_fuse_masks",
    "stage1": "grefine_refine_stage1",
    "stage2": "grefine_refine_stage2",
}
assert tuple(SLOT_HOOKS) == SLOTS


@dataclass
class PluginInfo:
    """What ``grefine plugins`` shows about one plugin."""

    name: str
    module: str
    source: str
    version: str | None
    status: str  # "loaded" | "disabled" | "failed"
    reason: str | None = None
    slots: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entry_points() -> list[md.EntryPoint]:
    eps = md.entry_points(group=ENTRY_POINT_GROUP)
    seen: dict[str, md.EntryPoint] = {}
    for ep in eps:
        seen.setdefault(ep.name, ep)  # an editable + a regular install can list a name twice
    return sorted(seen.values(), key=lambda e: e.name)


def installed_sections() -> set[str]:
    """Settings sections that installed distributions declare in :data:`SETTINGS_GROUP`."""
    return {ep.name for ep in md.entry_points(group=SETTINGS_GROUP)}


def _ep_source(ep: md.EntryPoint) -> tuple[str, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "entry point", None
    name = dist.metadata["Name"]
    if name == CORE_DISTRIBUTION:
        return "builtin", dist.version
    return f"entry point ({name})", dist.version


def validate_names(names: Iterable[str], what: str, known: Iterable[str]) -> None:
    """Raise :class:`UsageError` when a name in ``names`` is not a known plugin."""
    known_set = set(known)
    for name in names:
        if name not in known_set:
            raise UsageError(
                f"unknown plugin {name!r} in {what}; known plugins: {', '.join(sorted(known_set))}"
            )


class PluginHost:
    """Owns one pluggy ``PluginManager``: discovers, blocks, loads and validates plugins.

    :param disable: plugin names to block before import.
    :param strict: re-raise a plugin's import error instead of reporting and skipping it.
    :param extra_plugins: ``{name: plugin_object}`` registered besides the entry points.
    """

    def __init__(
        self,
        disable: Iterable[str] = (),
        strict: bool = False,
        extra_plugins: Mapping[str, Any] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        # Plugins add hooks of their own as they register (historic: later ones too).
        self.pm.hook.grefine_add_hookspecs.call_historic(kwargs={"pluginmanager": self.pm})
        self.infos: dict[str, PluginInfo] = {}
        #: ``{section: plugin}``, filled by :meth:`settings_models`.
        self.settings_owners: dict[str, str] = {}
        #: ``{plugin: sections it declares}`` (filled by :meth:`settings_models`).
        self.sections_by_plugin: dict[str, set[str]] = {}
        extras = dict(extra_plugins or {})
        eps = _entry_points()
        self.known = sorted({ep.name for ep in eps} | set(extras))
        disabled = list(dict.fromkeys(disable))
        validate_names(disabled, "disable", self.known)
        for name in disabled:
            self.pm.set_blocked(name)

        # An in-process registration overrides an entry point of the same name.
        candidates = [
            (ep.name, ep.value, *_ep_source(ep), ep.load) for ep in eps if ep.name not in extras
        ]
        for name, plugin in extras.items():
            module = str(getattr(plugin, "__name__", type(plugin).__name__))
            version = getattr(plugin, "__version__", None)
            candidates.append((name, module, "registered", version, lambda p=plugin: p))
        for name, where, source, version, load in candidates:
            info = self.infos[name] = PluginInfo(name, where, source, version, "loaded")
            if name in disabled:
                info.status, info.reason = "disabled", "disabled by configuration"
                continue
            try:
                plugin = load()
            except Exception as e:  # noqa: BLE001 - any import error of a third-party plugin
                if strict:
                    raise PluginError(
                        f"plugin {name!r} ({where}) failed to import: {e}", plugin=name
                    ) from e
                info.status, info.reason = "failed", f"{type(e).__name__}: {e}"
                log.warning("plugin %r (%s) failed to import and was skipped: %s", name, where, e)
                log.debug("%s", traceback.format_exc())
                continue
            self._register(name, plugin, info)

        self._check_pending()

    def _register(self, name: str, plugin: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as e:
            raise PluginError(f"plugin {name!r} is invalid: {e}", plugin=name) from None
        callers = self.pm.get_hookcallers(plugin) or []
        for caller in callers:
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                with_default = [
                    f"{p.name}={p.default!r}"
                    for p in inspect.signature(impl.function).parameters.values()
                    if p.default is not inspect.Parameter.empty
                ]
                if with_default:
                    self.pm.unregister(plugin)
                    raise PluginError(
                        f"plugin {name!r}: hook {caller.name} has parameters with default values "
                        f"({', '.join(with_default)}); pluggy never passes such arguments, so the "
                        "hook would silently miss them: remove the defaults",
                        plugin=name,
                    )
        hooks = sorted(c.name for c in callers)
        info.hooks = hooks
        info.slots = [slot for slot, hook in SLOT_HOOKS.items() if hook in hooks]

    def _check_pending(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            name = self.pm.get_name(e.plugin) if e.plugin is not None else None
            raise PluginError(
                f"plugin {name!r} implements a hook that does not exist: {e}", plugin=name
            ) from None

    # ------------------------------------------------------------------ queries

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (for observer hooks, called on every plugin)."""
        return self.pm.hook

    def implementers(self, slot: str) -> list[str]:
        """Loaded plugins that implement ``slot``."""
        return sorted(n for n, i in self.infos.items() if i.status == "loaded" and slot in i.slots)

    def plugin_version(self, name: str) -> str | None:
        info = self.infos.get(name)
        return info.version if info else None

    def slot_caller(self, slot: str, name: str) -> Any:
        """A hook caller for ``slot`` that calls only plugin ``name`` (never "the last registered")."""
        if slot not in SLOT_HOOKS:
            raise UsageError(f"unknown slot {slot!r}; valid slots: {', '.join(SLOTS)}")
        validate_names([name], f"select {slot}=", self.known)
        info = self.infos[name]
        if info.status == "failed":
            raise PluginError(
                f"plugin {name!r} selected for slot {slot!r} failed to load: {info.reason}",
                plugin=name,
                slot=slot,
            )
        if slot not in info.slots:
            raise UsageError(
                f"plugin {name!r} does not implement slot {slot!r}; plugins that do: "
                f"{', '.join(self.implementers(slot)) or '(none loaded)'}"
            )
        keep = self.pm.get_plugin(name)
        others = [p for _, p in self.pm.list_name_plugin() if p is not keep]
        return self.pm.subset_hook_caller(SLOT_HOOKS[slot], remove_plugins=others)

    def _declared(
        self, hook: str, key_kind: str, expected: str, check: Callable[[Any], bool], shown: str
    ) -> dict[str, tuple[Any, list[str]]]:
        """``{key: (value, plugins declaring it)}`` from every implementation of a ``{key: value}``
        hook, each value checked; a key that two plugins declare with different values is an
        error."""
        out: dict[str, tuple[Any, list[str]]] = {}
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            plugin = impl.plugin_name
            try:
                declared = impl.function() or {}
            except Exception as e:  # noqa: BLE001 - a third-party plugin's bug, named
                raise PluginError(
                    f"plugin {plugin!r} failed in {hook}(): {type(e).__name__}: {e}", plugin=plugin
                ) from e
            if not isinstance(declared, Mapping):
                raise PluginError(
                    f"plugin {plugin!r}: {hook}() must return {{{key_kind}: {expected}}}, got "
                    f"{type(declared).__name__}",
                    plugin=plugin,
                )
            for key, value in declared.items():
                if not check(value):
                    raise PluginError(
                        f"plugin {plugin!r}: {key_kind} {key!r} must map to {expected}, got "
                        f"{value!r}",
                        plugin=plugin,
                    )
                if key in out and out[key][0] is not value:
                    raise ConfigError(
                        f"plugins {out[key][1][0]!r} and {plugin!r} both declare {key_kind} "
                        f"{shown.format(key)} with different values"
                    )
                out.setdefault(key, (value, []))[1].append(plugin)
        return out

    def settings_models(self) -> dict[str, type]:
        """``{section: model}`` declared by the loaded plugins; a clash between two plugins is an
        error. Also fills :attr:`settings_owners` and :attr:`sections_by_plugin`."""
        from pydantic import BaseModel

        declared = self._declared(
            "grefine_settings_models",
            "settings section",
            "a pydantic model class (subclass grefine_core.StrictModel)",
            lambda m: isinstance(m, type) and issubclass(m, BaseModel),
            "[plugins.{}]",
        )
        self.settings_owners = {section: owners[0] for section, (_, owners) in declared.items()}
        self.sections_by_plugin = {}
        for section, (_, owners) in declared.items():
            for owner in owners:  # every plugin that reads the section
                self.sections_by_plugin.setdefault(owner, set()).add(section)
        return {section: model for section, (model, _) in declared.items()}

    def backbones(self) -> dict[str, Callable[..., Any]]:
        """``{name: factory}`` of the backbones the loaded plugins offer (``grefine_backbones``)."""
        declared = self._declared("grefine_backbones", "backbone", "a factory", callable, "{!r}")
        return {name: factory for name, (factory, _) in declared.items()}

    def report(self) -> list[PluginInfo]:
        """Every known plugin with its status, for ``grefine plugins``."""
        return [self.infos[n] for n in sorted(self.infos)]
