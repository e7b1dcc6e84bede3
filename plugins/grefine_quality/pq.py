"""PQ-Map, the perceptual quality indicator (docs/indicators.md): learned prompts and ``PerceptualQuality``."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grefine_core.backbone import ClipBackbone
from grefine_core.errors import ConfigError, InputError, MissingWeightsError, reason_of
from grefine_core.types import PerceptualResult
from grefine_quality import ops
from grefine_quality.constants import (
    DEFAULT_PQ_CACHE,
    PAPER_CASK_BOUNDS,
    PQ_BASE_URL,
    PQ_ENV_VAR,
    PQ_EOT_INDEX,
    PQ_FACTORS,
    PQ_SHA256,
    REFERENCE_CASK_BOUNDS,
    pq_filename,
    pq_search_dirs,
)
from grefine_quality.trained import TRAINED_MANIFEST, trained_files

log = logging.getLogger("grefine.quality")

#: How the PQ map ``P`` is made (see :class:`PerceptualQuality`).
PQ_MAPS: tuple[str, ...] = ("absolute", "minmax_cask", "minmax")
_PARAM_SHAPES = {
    "prompt_learner.ctx": (2, 16),
    "prompt_learner.token_prefix": (2, 1),
    "prompt_learner.token_suffix": (2, 60),
}


@dataclass
class PQPrompts:
    """The four learned prompt pairs, assembled to token embeddings ``[2, 77, W]`` (row 0 "good",
    row 1 "bad").

    :ivar embeddings: ``{factor: float32 tensor [2, 77, W]}`` for overall, technical, rational,
        natural.
    :ivar files: where each factor came from.
    :ivar is_random: True for the seeded random stand-in (:meth:`random`), which measures nothing.
    """

    embeddings: dict[str, torch.Tensor]
    files: dict[str, str] = field(default_factory=dict)
    is_random: bool = False

    @property
    def width(self) -> int:
        return int(self.embeddings["overall"].shape[-1])

    @staticmethod
    def assemble(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``cat(prefix, ctx[:, :8], suffix[:, :3], ctx[:, 8:], suffix[:, 3:])`` -> ``[2, 77, W]``
        (the EOT lands on row 20)."""
        ctx = params["prompt_learner.ctx"]
        prefix = params["prompt_learner.token_prefix"]
        suffix = params["prompt_learner.token_suffix"]
        half = ctx.shape[1] // 2
        parts = [prefix, ctx[:, :half], suffix[:, :3], ctx[:, half:], suffix[:, 3:]]
        return torch.cat([p.float() for p in parts], dim=1)

    @classmethod
    def random(cls, width: int = 512, seed: int = 0) -> PQPrompts:
        """Seeded random prompt embeddings (tiny preset stand-in: plumbing only, not quality)."""
        gen = torch.Generator("cpu").manual_seed(int(seed))
        emb = {
            f: 0.02 * torch.randn((2, 77, width), generator=gen, dtype=torch.float32)
            for f in PQ_FACTORS
        }
        return cls(embeddings=emb, files={f: "<random>" for f in PQ_FACTORS}, is_random=True)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _has_all(folder: Path) -> bool:
    return all((folder / pq_filename(f)).is_file() for f in PQ_FACTORS)


def _missing_message(searched: Sequence[Path]) -> str:
    where = ", ".join(str(d) for d in searched)
    urls = " ".join(f"{PQ_BASE_URL}/{pq_filename(f)}" for f in PQ_FACTORS)
    return (
        f"the PQ-Map prompt files ({', '.join(pq_filename(f) for f in PQ_FACTORS)}) were not "
        f"found (searched: {where}). Download them from the authors' repository ({urls}) into "
        f"{DEFAULT_PQ_CACHE} or a folder named by ${PQ_ENV_VAR} / [plugins.pq] prompts, or set "
        "[plugins.pq] allow_download = true"
    )


def download_pq_prompts(base_url: str = PQ_BASE_URL, folder: str | Path | None = None) -> Path:
    """Download the four prompt files from ``base_url`` into ``folder`` (default
    ``~/.cache/grefine/pq_embeddings``), checking each sha256. Returns the folder."""
    dest = Path(folder or DEFAULT_PQ_CACHE).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    for factor in PQ_FACTORS:
        name = pq_filename(factor)
        target = dest / name
        if target.is_file() and sha256_of(target) == PQ_SHA256[factor]:
            continue
        url = f"{base_url.rstrip('/')}/{name}"
        part = target.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:  # noqa: S310
                out.write(resp.read())
        except OSError as e:
            part.unlink(missing_ok=True)
            raise MissingWeightsError(
                f"could not download {url} ({e}); download the four PQ-*.pth files by hand into "
                f"{dest}"
            ) from None
        digest = sha256_of(part)
        if digest != PQ_SHA256[factor]:
            part.unlink(missing_ok=True)
            raise InputError(f"downloaded {url} has sha256 {digest}, expected {PQ_SHA256[factor]}")
        part.replace(target)
    return dest


def _check_hash(path: Path, factor: str) -> None:
    """The released file's sha256, or else the one its own manifest records (trained files)."""
    digest = sha256_of(path)
    if digest == PQ_SHA256[factor]:
        return
    manifest = path.parent / TRAINED_MANIFEST
    if not manifest.is_file():
        raise InputError(
            f"PQ prompt file {str(path)!r} has sha256 {digest}, but {pq_filename(factor)} "
            f"must have {PQ_SHA256[factor]} (corrupted, truncated or a different file); "
            f"re-download it from {PQ_BASE_URL}/{pq_filename(factor)} (prompts trained with "
            f"grefine train-pq are checked against the {TRAINED_MANIFEST} beside them: none here)"
        )
    recorded = trained_files(manifest).get(path.name)
    if recorded != digest:
        said = f"records {recorded}" if recorded else "does not list it"
        raise InputError(
            f"PQ prompt file {str(path)!r} has sha256 {digest}, but its manifest "
            f"{str(manifest)!r} {said}: the file changed after training or belongs elsewhere; "
            "restore it or train again"
        )


def _read_prompt_file(path: Path, factor: str, verify_hash: bool) -> torch.Tensor:
    if not path.is_file():
        raise MissingWeightsError(f"PQ prompt file {str(path)!r} ({factor}) does not exist")
    if verify_hash:
        _check_hash(path, factor)
    try:
        obj: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(
            f"cannot read PQ prompt file {str(path)!r} ({reason_of(e)}); it must be the "
            f"torch file {pq_filename(factor)} from {PQ_BASE_URL}"
        ) from None
    params = obj.get("params") if isinstance(obj, Mapping) else None
    if not isinstance(params, Mapping):
        raise InputError(f"PQ prompt file {str(path)!r} has no 'params' dict")
    width = None
    for key, lead in _PARAM_SHAPES.items():
        t = params.get(key)
        if not isinstance(t, torch.Tensor) or t.ndim != 3 or tuple(t.shape[:2]) != lead:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else None
            raise InputError(
                f"PQ prompt file {str(path)!r}: {key!r} must be a tensor of shape "
                f"[{lead[0]}, {lead[1]}, width], got {got}"
            )
        if width is not None and t.shape[2] != width:
            raise InputError(f"PQ prompt file {str(path)!r}: inconsistent embedding widths")
        width = t.shape[2]
    return PQPrompts.assemble(params)


def _factor_of(path: Path) -> str | None:
    for f in PQ_FACTORS:
        if path.name == pq_filename(f):
            return f
    return None


def load_pq_prompts(
    source: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Any] | None = None,
    *,
    allow_download: bool = False,
    download_dir: str | os.PathLike[str] | None = None,
    verify_hash: bool = True,
) -> PQPrompts:
    """Load the four PQ-Map learned prompts (``PQ-{overall,technical,rational,natural}.pth``).

    :param source: a folder holding the four files; a URL of such a folder (downloaded into
        ``download_dir``); ``{factor: path}``; four paths (named ``PQ-<factor>.pth``, else taken in
        the order overall, technical, rational, natural); or ``None``/``""`` to search
        ``$GREFINE_PQ_DIR`` and ``~/.cache/grefine/pq_embeddings``.
    :param allow_download: when nothing is found, download from the authors' repository
        (:data:`grefine_quality.constants.PQ_BASE_URL`).
    :param download_dir: where downloads go (default ``~/.cache/grefine/pq_embeddings``).
    :param verify_hash: check each file's sha256 against the released files or, for prompts
        trained with ``grefine train-pq``, against the ``manifest.json`` written beside them.
    :returns: :class:`PQPrompts`.
    :raises MissingWeightsError: files not found (the message says where to put them).
    :raises InputError: corrupted / wrong-hash / mis-shaped files.
    """
    paths: dict[str, Path]
    if source is None or (isinstance(source, str) and not source.strip()):
        searched = pq_search_dirs()
        folder = next((d for d in searched if _has_all(d)), None)
        if folder is None:
            if not allow_download:
                raise MissingWeightsError(_missing_message(searched))
            folder = download_pq_prompts(PQ_BASE_URL, download_dir)
        paths = {f: folder / pq_filename(f) for f in PQ_FACTORS}
    elif isinstance(source, str) and source.startswith(("http://", "https://")):
        folder = download_pq_prompts(source, download_dir)
        paths = {f: folder / pq_filename(f) for f in PQ_FACTORS}
    elif isinstance(source, Mapping):
        unknown = sorted(set(source) - set(PQ_FACTORS))
        missing = [f for f in PQ_FACTORS if f not in source]
        if unknown or missing:
            raise InputError(
                f"PQ prompt mapping must have exactly the keys {', '.join(PQ_FACTORS)}; "
                f"missing {missing}, unknown {unknown}"
            )
        paths = {f: Path(source[f]).expanduser() for f in PQ_FACTORS}
    elif isinstance(source, Sequence) and not isinstance(source, str | bytes):
        items = [Path(p).expanduser() for p in source]
        if len(items) != len(PQ_FACTORS):
            raise InputError(f"expected {len(PQ_FACTORS)} PQ prompt files, got {len(items)}")
        named = {_factor_of(p): p for p in items}
        if set(named) == set(PQ_FACTORS):
            paths = {f: named[f] for f in PQ_FACTORS}
        else:
            paths = dict(zip(PQ_FACTORS, items, strict=True))
    else:
        folder = Path(source).expanduser()  # type: ignore[arg-type]
        if folder.is_file():
            raise InputError(
                f"{str(folder)!r} is one file; give the folder holding all four PQ-*.pth files "
                "or the four paths"
            )
        if not folder.is_dir():
            raise MissingWeightsError(
                f"PQ prompt folder {str(folder)!r} does not exist. " + _missing_message([folder])
            )
        if not _has_all(folder):
            raise MissingWeightsError(_missing_message([folder]))
        paths = {f: folder / pq_filename(f) for f in PQ_FACTORS}
    emb = {f: _read_prompt_file(paths[f], f, verify_hash) for f in PQ_FACTORS}
    return PQPrompts(embeddings=emb, files={f: str(p) for f, p in paths.items()})


class PerceptualQuality:
    """PQ-Map (docs/indicators.md): perceptual quality score ``p`` and map ``P`` (high = good).

    :param clip: the backbone (:class:`grefine_core.ClipBackbone`).
    :param prompts: the learned prompts (:func:`load_pq_prompts`).
    :param compat: ``"paper"`` (per-token normalisation, the paper's cask bounds) or
        ``"reference"`` (the released PQ-Map.py: token-axis normalisation, 0.935 for all three
        factors). Maps are (H, W) in both.
    :param pq_map: how ``P`` is made (default: ``"absolute"`` for paper, ``"minmax"`` for
        reference). ``"absolute"``: the cask per token on the probabilities of "good", then bicubic
        to (H, W), clipped: ``P`` shares ``p``'s scale (an image of good tokens gives ``P`` near 1).
        ``"minmax_cask"``: the cask per pixel over four min-max maps (an ablation; it makes ``P``
        small almost everywhere). ``"minmax"``: the min-max map of the overall factor (released).
    :param cask_bounds: override the bounds (technical, rational, natural).
    :param batch_size: images per forward in :meth:`batch`.
    """

    def __init__(
        self,
        clip: ClipBackbone,
        prompts: PQPrompts,
        compat: str = "paper",
        *,
        pq_map: str | None = None,
        cask_bounds: Sequence[float] | None = None,
        batch_size: int = 8,
    ):
        if compat not in ("paper", "reference"):
            raise ConfigError(f"PQ compat must be 'paper' or 'reference', got {compat!r}")
        if prompts.width != clip.text_width:
            raise InputError(
                f"PQ prompt embeddings have width {prompts.width} but this CLIP's text tower has "
                f"width {clip.text_width}; the released prompts need a width-512 text tower "
                "(ViT-B/16)"
            )
        self.clip = clip
        self.prompts = prompts
        self.compat = compat
        pq_map = pq_map or ("absolute" if compat == "paper" else "minmax")
        if pq_map not in PQ_MAPS:
            raise ConfigError(f"[plugins.pq] pq_map = {pq_map!r} is not valid; valid: {PQ_MAPS}")
        self.pq_map = pq_map
        default = PAPER_CASK_BOUNDS if compat == "paper" else REFERENCE_CASK_BOUNDS
        self.cask_bounds = tuple(float(b) for b in (cask_bounds or default))
        self.batch_size = max(1, int(batch_size))
        # [4 factors x (good, bad), D], encoded once.
        feats = [
            clip.encode_prompt_embeddings(prompts.embeddings[f], PQ_EOT_INDEX) for f in PQ_FACTORS
        ]
        self.text_features = torch.cat(feats, 0)

    def factor_text_features(self) -> dict[str, torch.Tensor]:
        """``{factor: [2, D]}`` text features (not normalised), row 0 = good."""
        return {f: self.text_features[2 * i : 2 * i + 2] for i, f in enumerate(PQ_FACTORS)}

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """``L = normalise(F) @ T^T`` -> ``[B, N, 8]`` (columns: good/bad per factor)."""
        fn = ops.normalise_tokens(tokens.float(), self.compat)  # type: ignore[arg-type]
        return fn @ self.text_features.to(fn.device).t()

    def from_tokens(
        self, tokens: torch.Tensor, sizes: Sequence[tuple[int, int]]
    ) -> list[PerceptualResult]:
        """Results for already encoded images.

        :param tokens: raw surgery tokens ``[B, N, D]`` (the backbone's ``encode_image``).
        :param sizes: ``(H, W)`` of each image's map.
        """
        if tokens.shape[0] != len(sizes):
            raise ValueError(f"{tokens.shape[0]} token sets for {len(sizes)} sizes")
        logits = self.logits(tokens)
        n_f = len(PQ_FACTORS)
        # Per token, the probability of "good" of each factor: [B, N, 4].
        good_prob = logits.reshape(logits.shape[0], logits.shape[1], n_f, 2).softmax(-1)[..., 0]
        probs = good_prob[:, 0].cpu().numpy()
        results = []
        for b, (h, w) in enumerate(sizes):
            factor_maps, pmap = self._maps(logits[b : b + 1], good_prob[b : b + 1], (h, w))
            scores = {f: float(probs[b, i]) for i, f in enumerate(PQ_FACTORS)}
            results.append(
                PerceptualResult(
                    score=float(np.clip(ops.cask_score(scores, self.cask_bounds), 0.0, 1.0)),
                    map=np.ascontiguousarray(pmap.cpu().numpy(), dtype=np.float32),
                    factor_scores=scores,
                    factor_maps={
                        f: np.ascontiguousarray(m.cpu().numpy(), dtype=np.float32)
                        for f, m in factor_maps.items()
                    },
                    info={"pq_map": self.pq_map},
                )
            )
        return results

    def _maps(
        self, logits: torch.Tensor, good_prob: torch.Tensor, size: tuple[int, int]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``({factor: (H, W)}, P (H, W))`` of one image from its ``[1, N, 8]`` logits and
        ``[1, N, 4]`` per-token probabilities of "good"."""
        if self.pq_map == "absolute":
            per_token = {f: good_prob[0, 1:, i] for i, f in enumerate(PQ_FACTORS)}
            casked = ops.cask_map(per_token, self.cask_bounds)  # [N-1]: p's scale, per token
            stack = torch.stack([*per_token.values(), casked], -1).unsqueeze(0)  # [1, N-1, 5]
            maps = ops.grid_to_map(stack, size, "bicubic")[0].clamp_(0.0, 1.0)
            factor_maps = {f: maps[..., i] for i, f in enumerate(PQ_FACTORS)}
            return factor_maps, maps[..., len(PQ_FACTORS)]
        maps = ops.similarity_map(logits[:, 1:, 0::2], size)[0]  # [H, W, 4], min-max each
        factor_maps = {f: maps[..., i] for i, f in enumerate(PQ_FACTORS)}
        if self.pq_map == "minmax_cask":
            return factor_maps, ops.cask_map(factor_maps, self.cask_bounds)
        return factor_maps, factor_maps["overall"]

    def __call__(self, image: Any, tokens: torch.Tensor | None = None) -> PerceptualResult:
        """Score one image (PIL, any mode).

        :param tokens: its surgery tokens ``[1, N, D]`` when already encoded (shared with AQ).
        :returns: a :class:`~grefine_core.types.PerceptualResult` with ``map`` of shape (H, W).
        """
        from grefine_quality.pixels import as_pil

        pil = as_pil(image)
        if tokens is None:
            tokens = self.clip.encode_image(self.clip.preprocess(pil))
        return self.from_tokens(tokens, [(pil.height, pil.width)])[0]

    def batch(self, images: Sequence[Any], batch_size: int | None = None) -> list[PerceptualResult]:
        """Score several images, encoding ``batch_size`` at a time; same results as one by one."""
        from grefine_quality.pixels import as_pil

        pils = [as_pil(im) for im in images]
        step = max(1, int(batch_size or self.batch_size))
        out: list[PerceptualResult] = []
        for i in range(0, len(pils), step):
            chunk = pils[i : i + step]
            x = torch.cat([self.clip.preprocess(p) for p in chunk], 0)
            tokens = self.clip.encode_image(x)
            out.extend(self.from_tokens(tokens, [(p.height, p.width) for p in chunk]))
        return out
