"""The planted-truth backbone (``[plugins.clip] model = "oracle"``): CLIP-shaped, computed from
image statistics and a fixed lexicon, so the real PQ, AQ, fuser and stage code can be checked on
scenes whose answer is known. It proves the logic, not the quality of CLIP.

It is a :class:`grefine_core.ClipBackbone` (``preprocess``, ``encode_image``, ``encode_texts``,
``encode_prompt_embeddings``, with the single template ``{}``), offered as the ``oracle`` backbone. Its token features are unit vectors
made of fixed-norm blocks (see docs/behaviour.md for the numbers):

- **quality** (2 dims, norm ``R_QUALITY``): ``(cos t, sin t)`` with ``cos t = 1 - 2 b`` and the
  badness ``b = clip(sigma / 25, 0, 1)`` of the patch's noise; the class token takes the badness
  of the worst 10 % of patches. The planted "good" / "bad" text pair lies along ``+/-`` the first
  dim, scaled so that the logit difference good - bad is ``6 (1 - 2 b)``.
- **neutral** (1 dim): the same for every token; the empty string's text feature is this
  direction, so the feature surgery of docs/indicators.md subtracts it evenly.
- **any** (1 dim): also the same for every token; words outside the lexicon point here, so they
  count as present and matched (exact neutrality would sit on the 0.5 bound).
- **one block per lexicon noun** (6 dims): ``present``, ``absent`` and ``void`` directions and a
  3-d colour plane holding the four colours as the vertices of a regular tetrahedron (pairwise
  cosine -1/3). A patch's block mixes ``void`` (no evidence) and ``(present + colour) / sqrt 2``
  by the shape's coverage of the patch; the class token's block is present (in the colour of the
  largest shape) or absent (evidence against it).

Text features: a colour adjective binds to the next lexicon noun; a bare noun points at
``(present - absent) / sqrt 2`` of its block, a coloured one mostly at its colour vertex with a
little of that presence (so the right colour scores above the bare noun, a wrong one far below,
and the phrase of a missing object low); other words at ``any``; the sum is normalised and mixed
with the neutral direction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from grefine_clip.oracle_scene import COLOURS, GRID, NOUNS, SceneReading, read_scene
from grefine_core.errors import InputError

log = logging.getLogger("grefine.clip")

#: What every output of the oracle says.
ORACLE_NOTICE = (
    "planted truth (oracle backbone): proves the logic of the method on lexicon scenes, not the "
    "quality of CLIP or of any refinement"
)
#: Above this off-lexicon fraction, the image is not an oracle scene (a photo, say).
OFF_LEXICON_LIMIT = 0.05

R_QUALITY = 0.1
#: With TEXT_NEUTRAL, the neutral component shifts every text's surgery score by
#: ``R_NEUTRAL * (TEXT_NEUTRAL - 1) = -0.045`` (evenly over tokens: maps are unaffected).
R_NEUTRAL = 0.05625
R_ANY = 0.2
#: Noise sigma (0-255) at which a patch is fully bad.
SIGMA_BAD = 25.0
#: Logit of "good" for a perfectly clean patch (-this for a fully bad one).
QUALITY_LOGIT = 6.0
#: The class token's quality is that of the worst this-fraction of patches.
WORST_FRACTION = 0.10
#: Neutral share of a non-empty text feature (the rest is content).
TEXT_NEUTRAL = 0.2
#: A coloured noun also asserts its noun's presence, with this weight against its colour, so the
#: phrase of a missing object scores low too (not just its noun).
COLOUR_PRESENCE = 0.3
#: Angle between a present shape's block and its ``present`` direction.
PRESENT_ANGLE = np.pi / 4

_BLOCK = 6  # present, absent (from the image), void (a patch without it), 3-d colour plane
_Q0, _Q1, _NEUTRAL, _ANY, _NOUN0 = 0, 1, 2, 3, 4
EMBED_DIM = _NOUN0 + _BLOCK * len(NOUNS)
_TETRA = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float64) / np.sqrt(3.0)
#: Block norm: what is left of the unit token after the shared components.
R_NOUN = float(np.sqrt((1.0 - R_QUALITY**2 - R_NEUTRAL**2 - R_ANY**2) / len(NOUNS)))
_WORD = re.compile(r"[a-z]+")


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _block(noun: int) -> slice:
    start = _NOUN0 + _BLOCK * noun
    return slice(start, start + _BLOCK)


def present_direction(colour: int) -> np.ndarray:
    """A present shape of colour index ``colour`` in its noun block (unit, 6 dims)."""
    v = np.zeros(_BLOCK)
    v[0] = np.cos(PRESENT_ANGLE)
    v[3:] = np.sin(PRESENT_ANGLE) * _TETRA[colour]
    return v


def _absent() -> np.ndarray:
    """The class token's "not in this image": the bare noun's text points away from it."""
    v = np.zeros(_BLOCK)
    v[1] = 1.0
    return v


def _void() -> np.ndarray:
    """A patch the shape does not cover: no evidence either way (orthogonal to every text), so a
    phrase map is dark where a shape has the wrong colour, not lit by the shape's presence."""
    v = np.zeros(_BLOCK)
    v[2] = 1.0
    return v


def lexicon_word(word: str) -> str | None:
    """The lexicon noun or colour ``word`` is (plurals of nouns included), or ``None``."""
    if word in NOUNS or word in COLOURS:
        return word
    for suffix in ("es", "s"):
        if word.endswith(suffix) and word[: -len(suffix)] in NOUNS:
            return word[: -len(suffix)]
    return None


def read_text(text: str) -> tuple[list[tuple[str, str | None]], bool]:
    """``([(noun, colour or None), ...], any other word?)``: a colour binds to the next noun."""
    items: list[tuple[str, str | None]] = []
    pending: list[str] = []
    other = False
    for word in _WORD.findall(text.lower()):
        lex = lexicon_word(word)
        if lex in COLOURS:
            pending.append(lex)
        elif lex in NOUNS:
            items.extend([(lex, c) for c in pending] or [(lex, None)])
            pending = []
        else:
            other = True
    return items, other or bool(pending)  # a colour bound to no noun reads as another word


def text_feature(text: str) -> np.ndarray:
    """The planted text feature of ``text`` (unit, ``EMBED_DIM``); ``""`` gives the neutral
    direction, which is the redundant feature of the feature surgery."""
    items, other = read_text(text)
    content = np.zeros(EMBED_DIM)
    for noun, colour in items:
        block = _block(NOUNS.index(noun))
        presence = (np.eye(_BLOCK)[0] - _absent()) / np.sqrt(2.0)
        if colour is None:
            content[block] += presence
        else:
            vertex = np.zeros(_BLOCK)
            vertex[3:] = _TETRA[list(COLOURS).index(colour)]
            content[block] += _unit(vertex + COLOUR_PRESENCE * presence)
    if other:
        content[_ANY] += 1.0
    out = np.zeros(EMBED_DIM)
    if not content.any():
        out[_NEUTRAL] = 1.0
        return out
    out[_NEUTRAL] = TEXT_NEUTRAL
    return out + np.sqrt(1.0 - TEXT_NEUTRAL**2) * _unit(content)


def badness(sigma: np.ndarray) -> np.ndarray:
    """``clip(sigma / 25, 0, 1)``: 0 for a clean patch, 1 from sigma 25 on."""
    return np.clip(np.asarray(sigma, np.float64) / SIGMA_BAD, 0.0, 1.0)


def tokens_from_reading(reading: SceneReading) -> np.ndarray:
    """Planted tokens ``[1 + GRID * GRID, EMBED_DIM]`` (unit rows; row 0 = class token)."""
    n = GRID * GRID
    bad = badness(reading.noise).reshape(n)
    bad_cls = float(np.quantile(bad, 1.0 - WORST_FRACTION))
    tokens = np.zeros((1 + n, EMBED_DIM))
    cos_t = 1.0 - 2.0 * np.concatenate([[bad_cls], bad])
    tokens[:, _Q0] = R_QUALITY * cos_t
    tokens[:, _Q1] = R_QUALITY * np.sqrt(np.clip(1.0 - cos_t**2, 0.0, 1.0))
    tokens[:, _NEUTRAL] = R_NEUTRAL
    tokens[:, _ANY] = R_ANY
    present = reading.present()
    colours = list(COLOURS)
    for ni, noun in enumerate(NOUNS):
        block = _block(ni)
        cov = reading.coverage[ni].reshape(n)
        col = reading.colour[ni].reshape(n)
        for t in range(n):
            mix = (1.0 - cov[t]) * _void()
            if col[t] >= 0:
                mix = mix + cov[t] * present_direction(int(col[t]))
            tokens[1 + t, block] = R_NOUN * _unit(mix)
        cls = present_direction(colours.index(present[noun])) if noun in present else _absent()
        tokens[0, block] = R_NOUN * cls
    return tokens


class OracleCLIP:
    """The planted-truth backbone, a :class:`grefine_core.ClipBackbone`.

    ``preprocess`` reads the image (:func:`~grefine_clip.oracle_scene.read_scene`) and returns its
    planted tokens ``[1, N, D]``; ``encode_image`` hands them on. Nothing is learned or loaded.
    """

    description = "oracle: planted-truth backbone (image statistics + fixed lexicon)"
    image_size = 224
    embed_dim = EMBED_DIM
    text_width = 8  # width of the planted PQ prompt "embeddings"
    #: Text features come from the lexicon directly: no prompt ensemble.
    templates = ("{}",)
    planted_truth = True

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._last: tuple[Any, SceneReading] | None = None

    def to(self, device: str | torch.device = "cpu", dtype: Any = "float32") -> OracleCLIP:
        """Move outputs to ``device``; the oracle always computes in float32."""
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            from grefine_core.errors import ConfigError

            raise ConfigError("device 'cuda' was requested but torch.cuda.is_available() is False")
        self.device = dev
        return self

    # ------------------------------------------------------------------ image side
    def read(self, image: Any) -> SceneReading:
        """The scene reading of ``image`` (kept for the last image, so notes cost nothing)."""
        from grefine_quality.pixels import as_pil

        if self._last is not None and self._last[0] is image:
            return self._last[1]
        reading = read_scene(as_pil(image))
        self._last = (image, reading)
        return reading

    def notes(self, image: Any) -> dict[str, Any]:
        """What the oracle says about ``image`` for the report: the notice, what it found, and a
        warning when the image is not a lexicon scene."""
        reading = self.read(image)
        out: dict[str, Any] = {
            "backbone": "oracle",
            "notice": ORACLE_NOTICE,
            "objects": [f"{o.colour} {o.noun}" for o in reading.objects],
            "off_lexicon": round(reading.off_lexicon, 4),
        }
        if reading.off_lexicon > OFF_LEXICON_LIMIT:
            out["warning"] = off_lexicon_warning(reading.off_lexicon)
        return out

    def preprocess(self, image: Any, size: int | None = None) -> torch.Tensor:
        """Planted tokens ``[1, 1 + 14 * 14, D]`` (float32, CPU) of ``image`` (PIL or array)."""
        reading = self.read(image)
        if reading.off_lexicon > OFF_LEXICON_LIMIT:
            log.warning("%s", off_lexicon_warning(reading.off_lexicon))
        return torch.from_numpy(tokens_from_reading(reading)).float().unsqueeze(0)

    def encode_image(self, pixel_values: torch.Tensor, surgery: bool = True) -> torch.Tensor:
        """The planted tokens, as given by :meth:`preprocess` (``[B, N, D]`` float32)."""
        if pixel_values.ndim != 3 or pixel_values.shape[2] != EMBED_DIM:
            raise InputError(
                f"the oracle backbone encodes its own preprocess() output [B, N, {EMBED_DIM}], "
                f"got shape {tuple(pixel_values.shape)}"
            )
        return pixel_values.to(device=self.device, dtype=torch.float32)

    # ------------------------------------------------------------------ text side
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Planted text features ``[n, D]`` (unit rows) of ``texts`` as given."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        feats = np.stack([text_feature(str(t)) for t in texts]) if texts else np.zeros((0, 1))
        return torch.from_numpy(feats.reshape(len(texts), EMBED_DIM)).float().to(self.device)

    def encode_prompt_embeddings(
        self, embeddings: torch.Tensor, eot_index: int = 20
    ) -> torch.Tensor:
        """The planted "good" / "bad" pair ``[2, D]`` (not normalised) for any PQ prompt pair
        (the end-of-text row plays no part)."""
        if embeddings.ndim != 3 or embeddings.shape[0] != 2:
            raise InputError(
                f"the oracle's PQ prompts are one (good, bad) pair [2, L, W], got "
                f"{tuple(embeddings.shape)}"
            )
        scale = QUALITY_LOGIT / (2.0 * R_QUALITY)
        pair = torch.zeros((2, EMBED_DIM), dtype=torch.float32, device=self.device)
        pair[0, _Q0], pair[1, _Q0] = scale, -scale
        return pair

    def planted_pq_prompts(self) -> dict[str, torch.Tensor]:
        """Stand-in PQ prompt embeddings ``{factor: [2, 77, W]}`` (zeros): one planted good/bad
        pair (:meth:`encode_prompt_embeddings`) serves all four factors; no files."""
        from grefine_quality.constants import PQ_FACTORS

        return {f: torch.zeros((2, 77, self.text_width)) for f in PQ_FACTORS}

    def __repr__(self) -> str:
        return f"OracleCLIP(grid={GRID}, embed_dim={EMBED_DIM}, device={self.device})"


def off_lexicon_warning(fraction: float) -> str:
    return (
        f"oracle backbone: {fraction:.0%} of this image is outside its lexicon (flat red/green/"
        "blue/yellow balls, boxes and trees on grey): it is not a planted-truth scene, and "
        "nothing the oracle preset reports means anything for it"
    )
