"""Data types passed between the core and the slot plugins.

Everything here is plain Python + numpy + PIL: no torch, so that ``import grefine_core`` stays light.
Maps are always ``float32`` arrays of shape ``(H, W)`` of the *input* image (row = y), never ``(W, H)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

#: The six slots of the pipeline, in the order they run.
SLOTS: tuple[str, ...] = ("perceptual", "parser", "alignment", "fuser", "stage1", "stage2")

Slot = Literal["perceptual", "parser", "alignment", "fuser", "stage1", "stage2"]
StageStatus = Literal["ran", "skipped", "failed"]
DefectKind = Literal["noun", "attribute"]


@dataclass
class PerceptualResult:
    """Output of the perceptual-map slot (PQ-Map).

    :ivar score: ``p`` in [0, 1], high = good.
    :ivar map: ``P``, float32 ``(H, W)`` in [0, 1], high = good.
    :ivar factor_scores: per-factor scores (``overall``, ``technical``, ``rational``, ``natural``).
    :ivar factor_maps: per-factor maps, each ``(H, W)``.
    :ivar neutral: True when the slot was skipped and the core substituted ``P = 1``, ``p = 1``.
    :ivar info: JSON-able notes for the report (e.g. how the map was made).
    """

    score: float
    map: np.ndarray
    factor_scores: dict[str, float] = field(default_factory=dict)
    factor_maps: dict[str, np.ndarray] = field(default_factory=dict)
    neutral: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def neutral_for(cls, height: int, width: int) -> PerceptualResult:
        """The ablation stand-in: every pixel perfect (``P = 1``) and ``p = 1``."""
        return cls(score=1.0, map=np.ones((height, width), np.float32), neutral=True)


@dataclass
class Phrase:
    """One phrase of a parsed prompt.

    :ivar text: the phrase with stopwords and lone punctuation removed.
    :ivar noun: its head noun, or ``None`` when the phrase has no noun (skipped by AQ).
    :ivar span: ``(start, end)`` character offsets of the phrase in the prompt (``prompt[start:end]``).
    :ivar parent: index of the parent (ancestor) phrase; its own index for a root.
    :ivar noun_span: character span of the head noun in the prompt, when there is one.
    """

    text: str
    noun: str | None
    span: tuple[int, int]
    parent: int
    noun_span: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # tuples become lists


@dataclass
class ParsedPrompt:
    """Output of the parser slot.

    :ivar prompt: the prompt as given.
    :ivar phrases: the phrases in prompt order.
    :ivar parser: name of the parser that produced it.
    :ivar tree: an ``nltk.Tree`` for display (or ``None``).
    :ivar info: JSON-able notes on how it was parsed (e.g. the tagger or model that ran).
    """

    prompt: str
    phrases: list[Phrase]
    parser: str
    tree: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parser": self.parser,
            "info": _jsonable(self.info),
            "phrases": [p.to_dict() for p in self.phrases],
        }


@dataclass
class PhraseAlignment:
    """Alignment of one phrase (Eq. 5) and its defect class (Eq. 6).

    :ivar score: ``a_phs[j]``; :ivar noun_score: ``a_pns[j]``;
    :ivar map: ``A_phs[j]`` ``(H, W)``; :ivar noun_map: ``A_pns[j]`` ``(H, W)``;
    :ivar defect: ``"noun"`` (object missing), ``"attribute"`` (attributes missing) or ``None``.
    """

    text: str
    noun: str | None
    span: tuple[int, int]
    parent: int
    score: float
    noun_score: float
    map: np.ndarray
    noun_map: np.ndarray
    defect: DefectKind | None = None


@dataclass
class Emphasis:
    """A span of the prompt to weight by ``weight`` (``1 + w``) in the stage-1 conditioning."""

    text: str
    span: tuple[int, int]
    weight: float


@dataclass
class AlignmentResult:
    """Output of the alignment-map slot (AQ-Map).

    :ivar score: ``a`` in [0, 1] (Eq. 8).
    :ivar defect_map: ``A_defect`` ``(H, W)`` in [0, 1], high = needs an alignment fix; all zeros when
        nothing is defective.
    :ivar phrases: per-phrase results (phrases without a noun are left out).
    :ivar emphasis: the defective phrases' spans and weights (Eq. 7).
    :ivar prompt_score: ``a_prompt``, the whole prompt scored like a phrase.
    :ivar emphasised_prompt: the prompt in compel weighting syntax, e.g. ``"a (red hat)1.1"``.
    :ivar info: JSON-able notes for the report (e.g. phrases dropped past the cap).
    """

    score: float
    defect_map: np.ndarray
    phrases: list[PhraseAlignment] = field(default_factory=list)
    emphasis: list[Emphasis] = field(default_factory=list)
    prompt_score: float = 1.0
    emphasised_prompt: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def defects(self) -> list[PhraseAlignment]:
        return [p for p in self.phrases if p.defect is not None]


@dataclass
class MaskResult:
    """Output of the mask-fuser slot.

    :ivar soft: float32 ``(H, W)`` in [0, 1] (1 = refine), feathered.
    :ivar binary: bool ``(H, W)``, the region that may change.
    :ivar fraction: fraction of pixels in ``binary``.
    """

    soft: np.ndarray
    binary: np.ndarray
    fraction: float

    @property
    def empty(self) -> bool:
        return not bool(self.binary.any())


@dataclass
class StageOutput:
    """Output of a refiner slot: the new image and what the refiner did (strength, steps, seed, ...)."""

    image: Any  # PIL.Image.Image, RGB, same size as the stage input
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageRecord:
    """One line of the trace: which plugin filled a slot and how it went."""

    slot: str
    plugin: str | None
    version: str | None
    status: StageStatus
    seconds: float = 0.0
    seed: int | None = None
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**_jsonable(asdict(self)), "seconds": round(self.seconds, 4)}


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays, tuples and nested dicts into JSON-friendly values (NaN/inf ->
    ``None``)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, np.ndarray):
        if value.size <= 64:
            return _jsonable(value.tolist())
        return f"<array {value.shape} {value.dtype}>"
    if isinstance(value, float):
        # JSON has no NaN/inf: a plugin's non-finite number becomes null, never a failed save.
        return value if math.isfinite(value) else None
    if isinstance(value, int | str | bool) or value is None:
        return value
    return str(value)
