"""An alignment plugin: every phrase with a noun counts as present, except a noun in ``missing``."""

import numpy as np

from grefine_core import AlignmentResult, Emphasis, PhraseAlignment, StrictModel, hookimpl


class MissingSettings(StrictModel):  # [plugins.toy_alignment]
    missing: list[str] = ["unicorn"]


@hookimpl
def grefine_settings_models():
    return {"toy_alignment": MissingSettings}


@hookimpl
def grefine_alignment_map(image, parsed, context):
    missing = set(context.settings("toy_alignment").missing)
    h, w = image.height, image.width
    phrases, emphasis = [], []
    for phrase in parsed.phrases:
        if phrase.noun is None:
            continue  # phrases without a noun are not scored
        absent = phrase.noun in missing
        score = 0.1 if absent else 0.9
        phrases.append(
            PhraseAlignment(
                text=phrase.text,
                noun=phrase.noun,
                span=phrase.span,
                parent=phrase.parent,
                score=score,
                noun_score=score,
                map=np.full((h, w), score, np.float32),
                noun_map=np.full((h, w), score, np.float32),
                defect="noun" if absent else None,
            )
        )
        if absent:
            emphasis.append(Emphasis(phrase.text, phrase.span, 1.1))
    defect = np.full((h, w), 1.0 if emphasis else 0.0, np.float32)
    score = min((p.score for p in phrases), default=1.0)
    return AlignmentResult(score=score, defect_map=defect, phrases=phrases, emphasis=emphasis)
