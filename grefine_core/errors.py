"""Error types. Each carries the exit code the CLI uses and a message meant for a person."""

from __future__ import annotations


class GRefineError(Exception):
    """Base class. ``exit_code`` is what ``grefine`` returns (2 = bad usage/input, 1 = failed run)."""

    exit_code = 1


class UsageError(GRefineError):
    """A bad argument, option or name (unknown preset, unknown plugin, bad flag value)."""

    exit_code = 2


class ConfigError(UsageError):
    """An invalid configuration file, preset, environment variable or plugin setting."""


class InputError(UsageError):
    """An unusable input: unreadable image, empty prompt, a directory given as a file..."""


class PluginError(GRefineError):
    """A plugin failed to import, returned nothing, returned a malformed value, or raised."""

    def __init__(self, message: str, plugin: str | None = None, slot: str | None = None):
        super().__init__(message)
        self.plugin = plugin
        self.slot = slot


class MissingWeightsError(GRefineError):
    """Model weights are not on disk; the message says what to download and where to put it."""

    exit_code = 2


class OutputError(GRefineError):
    """The output could not be written (directory not writable, disk full)."""


class OutputInTheWayError(OutputError):
    """An output path holds something grefine did not write, or another run holds the folder:
    the user chooses (move it, wait, another ``--out``), so it counts as bad usage."""

    exit_code = 2


def reason_of(error: BaseException) -> str:
    """A one-line reason for a library's exception: its type and first line.

    torch's refusal to unpickle code (``weights_only``) becomes a plain statement: its advice to
    retry with ``weights_only=False`` would run code from the file, which grefine never does.
    """
    text = str(error).strip()
    if "Weights only load failed" in text or "weights_only" in text:
        return (
            "the file holds pickled Python objects that a safe load refuses (grefine never runs "
            "code from a weights file)"
        )
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
