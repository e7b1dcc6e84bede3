"""The JSON report of one result: every score, phrase, defect, stage and the fingerprint; arrays
are summarised (they are saved as ``.npy`` by :mod:`grefine_core.app.saving`)."""

from __future__ import annotations

from typing import Any

from grefine_core.types import _jsonable


def result_report(result: Any) -> dict[str, Any]:
    """A complete, JSON-ready description of a :class:`~grefine_core.result.RefineResult`."""
    alignment = None
    if result.alignment is not None:
        al = result.alignment
        alignment = {
            "score": float(al.score),
            "prompt_score": float(al.prompt_score),
            "emphasised_prompt": al.emphasised_prompt,
            "phrases": [
                {
                    "text": ph.text,
                    "noun": ph.noun,
                    "span": list(ph.span),
                    "parent": ph.parent,
                    "score": float(ph.score),
                    "noun_score": float(ph.noun_score),
                    "defect": ph.defect,
                }
                for ph in al.phrases
            ],
            "defects": [{"text": ph.text, "noun": ph.noun, "kind": ph.defect} for ph in al.defects],
            "emphasis": [
                {"text": e.text, "span": list(e.span), "weight": e.weight} for e in al.emphasis
            ],
        }
    out: dict[str, Any] = {
        "item": result.item_name,
        "mode": result.mode,
        "prompt": result.prompt,
        "preset": result.preset,
        "select": dict(result.select),
        "disable": list(result.disable),
        "seed": result.seed,
        "plumbing_only": result.plumbing_only,
        "notice": " ".join(result.notices) or None,
        "high_quality": result.high_quality is not None,
        "high_quality_reason": result.high_quality,
        "input": result.input_info.to_dict() if result.input_info else None,
        "size": list(result.image.size),
        "refined": result.refined,
        "perceptual": {
            "score": result.p,
            "neutral": result.perceptual.neutral,
            "factor_scores": {k: float(v) for k, v in result.perceptual.factor_scores.items()},
        },
        "parsed": result.parsed.to_dict() if result.parsed is not None else None,
        "alignment": alignment,
        "mask": None
        if result.mask is None
        else {"fraction": float(result.mask.fraction), "empty": result.mask.empty},
        "trace": [r.to_dict() for r in result.trace],
        "fingerprint": result.fingerprint.to_dict() if result.fingerprint else None,
        "rerun_because": result.rerun_because,
    }
    return _jsonable(out)
