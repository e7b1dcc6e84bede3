"""Plugin ``spacy``: fills the ``parser`` slot with the spaCy noun-chunk / dependency parser."""

from __future__ import annotations

from pydantic import Field

from grefine_core.config import StrictModel
from grefine_core.markers import hookimpl
from grefine_spacy.parser import DEFAULT_MODEL, load_nlp, parse_with

SECTION = "spacy"


class SpacySettings(StrictModel):
    """``[plugins.spacy]``: the spaCy pipeline to load (package name or folder)."""

    model: str = Field(DEFAULT_MODEL, min_length=1, description="installed spaCy pipeline")


def settings_from(context) -> SpacySettings:
    """The section's settings, or the defaults when there is no context / no declared section."""
    if context is None or SECTION not in getattr(context, "plugin_settings", {}):
        return SpacySettings()
    return context.settings(SECTION)


@hookimpl
def grefine_settings_models():
    return {SECTION: SpacySettings}


@hookimpl
def grefine_weights(context):
    """spaCy and its pipeline package (checked without importing them)."""
    from pathlib import Path

    from grefine_quality.extras import package_entry

    model = settings_from(context).model
    out = [package_entry("spaCy", "spacy", "spacy")]
    if not Path(model).expanduser().exists():  # a package name, not a folder
        hint = "spacy" if model == DEFAULT_MODEL else f"pip install {model}"
        out.append(package_entry(f"spaCy pipeline {model}", model, hint))
    return out


@hookimpl
def grefine_parse_prompt(prompt, context):
    model = settings_from(context).model
    if context is None:
        nlp = load_nlp(model)
    else:  # load_nlp is cached per process too; the context cache ties it to the GRefine
        nlp = context.models.get_or_create(("spacy", model), lambda: load_nlp(model))
    return parse_with(nlp, prompt)
