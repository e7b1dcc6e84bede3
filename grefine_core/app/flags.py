"""Command-line flags that plugins declare for their most-used settings.

A settings field with ``json_schema_extra={"flag": "--steps"}`` becomes the option ``--steps`` of
``grefine refine`` and ``grefine assess``; ``"with": {...}`` adds other keys of the same section
that the flag implies (``--strength`` also sets ``strength_mode = "fixed"``). The flags come from
the settings models of the installed distributions (the ``grefine.settings`` entry points), read
without importing any plugin module beyond its settings.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import logging
from dataclasses import dataclass, field
from typing import Any

from grefine_core.errors import UsageError

log = logging.getLogger(__name__)


@dataclass
class SettingFlag:
    """One declared flag: it sets ``[plugins.<section>] <key>`` (and the keys of ``implies``)."""

    flag: str
    section: str
    key: str
    kind: type
    help: str
    implies: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return "setting_" + self.flag.lstrip("-").replace("-", "_")

    def override(self, value: Any) -> dict[str, Any]:
        return {"plugins": {self.section: {self.key: value, **self.implies}}}


def setting_flags() -> list[SettingFlag]:
    """The flags declared by every installed settings model, sorted; a flag declared twice is an
    error naming both sections."""
    from grefine_core.plugins import SETTINGS_GROUP

    found: dict[str, SettingFlag] = {}
    for ep in sorted(md.entry_points(group=SETTINGS_GROUP), key=lambda e: e.name):
        try:
            model = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the CLI
            log.debug("settings entry point %s not loadable: %s", ep.name, e)
            continue
        for key, info in getattr(model, "model_fields", {}).items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            flag = extra.get("flag")
            if not flag:
                continue
            if flag in found and found[flag].section != ep.name:
                raise UsageError(
                    f"settings sections [plugins.{found[flag].section}] and "
                    f"[plugins.{ep.name}] both declare the flag {flag}"
                )
            kind = info.annotation if info.annotation in (int, float, str) else str
            text = f"{info.description or key} (sets [plugins.{ep.name}] {key})"
            found[flag] = SettingFlag(flag, ep.name, key, kind, text, dict(extra.get("with", {})))
    return [found[f] for f in sorted(found)]


def add_setting_flags(p: argparse.ArgumentParser, flags: list[SettingFlag]) -> None:
    """Add each declared flag to ``p``.

    :raises PluginError: a flag that is not ``--name`` or that the command already has (one line
        naming the settings section, never a traceback of every command).
    """
    from grefine_core.errors import PluginError

    for f in flags:
        metavar = {int: "N", float: "X"}.get(f.kind, "TEXT")
        if not f.flag.startswith("--") or len(f.flag) < 3:
            raise PluginError(
                f"[plugins.{f.section}] {f.key}: the declared flag {f.flag!r} must look like --name"
            )
        try:
            p.add_argument(f.flag, dest=f.dest, type=f.kind, metavar=metavar, help=f.help)
        except argparse.ArgumentError:
            raise PluginError(
                f"[plugins.{f.section}] {f.key}: the declared flag {f.flag} is already an option "
                f"of grefine {p.prog.split()[-1]}; choose another name"
            ) from None


def flag_overrides(args: argparse.Namespace, flags: list[SettingFlag]) -> list[dict[str, Any]]:
    """The overrides of the declared flags given on the command line."""
    return [
        f.override(getattr(args, f.dest)) for f in flags if getattr(args, f.dest, None) is not None
    ]
