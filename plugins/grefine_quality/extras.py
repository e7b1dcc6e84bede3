"""Optional dependencies ("extras"): one error, one line, naming the pip command to run.

``pip install grefine`` runs the paper path (CLIP, the NLTK parser, SDXL, PASD). The spaCy parser,
the ONNX backend and the evaluation plots/metrics need an extra (``docs/install.md``). Where a
plugin imports such a package, it calls :func:`require`; a missing package becomes::

    plugin 'spacy' needs spaCy, which is not installed: pip install "grefine[spacy]"

a :class:`MissingExtraError` (exit status 2). Every plugin with an optional dependency uses this
module (plugins may import only the kernel and the shared packages, of which this is one); it
imports nothing heavy.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from grefine_core.errors import PluginError


class MissingExtraError(PluginError):
    """A package of an optional extra is not installed (or does not import); the message names
    the ``pip install "grefine[...]"`` that fixes it. Bad setup, not a failed run: exit 2."""

    exit_code = 2


def pip_hint(extra: str) -> str:
    """``pip install "grefine[EXTRA]"`` (quoted for shells that expand brackets)."""
    return f'pip install "grefine[{extra}]"'


def message(plugin: str, what: str, extra: str, reason: str = "") -> str:
    """The one-line message; ``reason`` (an import error) when the package is there but broken.

    ``extra`` is the extra's name or an already written hint (anything with a space in it).
    """
    hint = extra if " " in extra else pip_hint(extra)
    state = f"which does not import ({reason})" if reason else "which is not installed"
    return f"plugin {plugin!r} needs {what}, {state}: {hint}"


def _top(name: str | None) -> str:
    return (name or "").split(".")[0]


def require(module: str, *, plugin: str, what: str, extra: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtraError` for an ImportError.

    :param module: the module to import (``"spacy"``, ``"onnxruntime"``, ``"matplotlib.figure"``).
    :param plugin: the plugin that needs it, for the message.
    :param what: the package as people know it (``"spaCy"``, ``"ONNX Runtime"``).
    :param extra: the grefine extra that installs it (``"spacy"``), or a full hint.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # The package itself missing (or blocked), or a broken install of it (a dependency of
        # its own missing): reinstalling the extra fixes both; the reason tells them apart.
        reason = "" if _top(e.name) == _top(module) else f"{type(e).__name__}: {e}"
        raise MissingExtraError(message(plugin, what, extra, reason), plugin=plugin) from None


def missing(module: str, *, plugin: str, what: str, extra: str) -> str | None:
    """The message when ``module`` cannot be found, else ``None``; nothing is imported."""
    try:
        found = importlib.util.find_spec(_top(module)) is not None
    except (ImportError, ValueError):  # a blocked module, or a parent package that is absent
        found = False
    return None if found else message(plugin, what, extra)


def package_entry(what: str, module: str, extra: str) -> dict[str, object]:
    """A ``grefine_weights`` entry for a Python package that a plugin loads at run time (a spaCy
    model, ONNX Runtime): the check before a run then names it with the missing weights, at once,
    instead of the first item failing. ``grefine weights fetch`` never installs packages; it names
    the pip command (``source = "pip:<extra>"``)."""
    absent = missing(module, plugin="", what=what, extra=extra) is not None
    hint = extra if " " in extra else pip_hint(extra)
    return {
        "name": f"{what} (Python package)",
        "present": not absent,
        "source": f"pip:{module}",
        "files": {},
        "target": "",
        "how": hint,
    }
