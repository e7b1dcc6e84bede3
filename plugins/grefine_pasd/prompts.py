"""Prompt assembly for PASD (PASD.md section 1, "High-level information / prompts"). No torch.

The reference builds ``caption + prompt + added_prompt`` by plain string concatenation (so a
caption runs straight into the next part). Here the non-empty parts are joined with ``", "``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

#: The reference script's ``--added_prompt`` default.
DEFAULT_ADDED_PROMPT = "clean, high-resolution, 8k"
#: The reference script's ``--negative_prompt`` default.
DEFAULT_NEGATIVE_PROMPT = "blurry, dotted, noise, raster lines, unclear, lowres, over-smoothed"
#: Caption clean-ups the reference applies to generated captions.
CAPTION_REPLACEMENTS = (("blurry", "clear"), ("noisy", "clean"))

Captioner = Callable[[Any], str]


def clean_caption(caption: str) -> str:
    """Apply the reference's caption rewrites ("blurry" -> "clear", "noisy" -> "clean")."""
    for old, new in CAPTION_REPLACEMENTS:
        caption = caption.replace(old, new)
    return caption.strip()


def assemble_prompt(
    prompt: str | None,
    added_prompt: str | None = None,
    caption: str | None = None,
) -> str:
    """``caption, prompt, added_prompt`` with empty parts left out.

    :param prompt: the user's prompt (may be empty).
    :param added_prompt: the quality suffix (``DEFAULT_ADDED_PROMPT`` in the presets).
    :param caption: an optional image caption (from a captioner), cleaned with
        :func:`clean_caption`.
    :returns: the assembled prompt (possibly empty).
    """
    parts = [clean_caption(caption) if caption else "", prompt or "", added_prompt or ""]
    return ", ".join(p.strip().strip(",").strip() for p in parts if p and p.strip())


def load_captioner(spec: str | None) -> Captioner | None:
    """Import a captioner given as ``"package.module:function"`` (a callable PIL image -> str).

    :param spec: the import path, or ``None`` / ``""`` / ``"none"`` for no captioner.
    :raises ConfigError: when the spec is malformed or the object cannot be imported / called
        (the message names ``plugins.pasd.captioner`` and the value).
    """
    from grefine_core.errors import ConfigError

    if not spec or spec.lower() == "none":
        return None
    where = f"plugins.pasd.captioner = {spec!r}"
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{where} must be 'package.module:function' (a callable taking a PIL image and "
            "returning a caption), or 'none'"
        )
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where} could not be imported: {e}") from None
    if not callable(obj):
        raise ConfigError(f"{where} is not callable (got a {type(obj).__name__})")
    return obj
