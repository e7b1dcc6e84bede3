"""``grefine calibrate``: the thresholds a preset uses, fitted on MOS data (docs/training.md).

* ``hq_skip.p_bound`` from the MOS distribution: an image is "high quality" when its MOS is in
  the top 20% (``--hq-mos``: a share such as ``20%``, or a MOS value); the bound is the ``p``
  threshold that best separates those images from the others.
* ``plugins.mask_paper.tau`` from region labels (``--masks``): the threshold on Eq. 9's
  ``Q = clip((1 - P) + A_defect, 0, 1)`` (region = ``Q > tau``) that best separates the labelled
  pixels from the others.
* ``plugins.aq.beta`` and ``hq_skip.a_bound``, only when the table has an alignment MOS column
  (and prompts): beta maximises the SRCC of Eq. 8's ``a`` with the alignment MOS; the a bound
  then separates the top-20% alignment images like the p bound.

"Best separates" is the largest balanced accuracy (Youden's J = TPR - FPR), which does not
favour the larger class; where several thresholds tie, the middle of the tied range is taken.
The scores come from the configured pipeline itself (``GRefine.assess``), so what is fitted is
what the preset then thresholds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grefine_core.errors import InputError, UsageError

log = logging.getLogger("grefine.training")

#: Default "high quality": the top 20% of the MOS.
HQ_DEFAULT = "20%"
#: Histogram bins of Q over [0, 1] for tau: the fitted tau's resolution is 1 / TAU_BINS.
TAU_BINS = 1000
#: The beta grid of Eq. 8.
BETA_GRID: tuple[float, ...] = tuple(round(0.02 * k, 2) for k in range(1, 51))
#: The first line of every preset file calibrate writes (an existing file without it is kept).
MARKER = "# grefine calibrate:"
#: Extensions tried for a mask, besides the image's own.
MASK_SUFFIXES = (".png",)


@dataclass(frozen=True)
class Fit:
    """One fitted threshold.

    :ivar value: the threshold.
    :ivar balanced_accuracy: ``(TPR + TNR) / 2`` at it (for beta: the SRCC instead).
    :ivar tpr: true-positive rate; :ivar fpr: false-positive rate.
    :ivar tied: the range ``(lo, hi)`` of thresholds with the same balanced accuracy.
    """

    value: float
    balanced_accuracy: float
    tpr: float
    fpr: float
    tied: tuple[float, float]


def _plateau_middle(candidates: np.ndarray, objective: np.ndarray) -> tuple[int, int]:
    """The first and last index of the run of best ``objective`` values that holds the first
    maximum (ties within 1e-12)."""
    best = int(np.argmax(objective))
    top = objective[best] - 1e-12
    lo = hi = best
    while hi + 1 < len(objective) and objective[hi + 1] >= top:
        hi += 1
    while lo - 1 >= 0 and objective[lo - 1] >= top:
        lo -= 1
    return lo, hi


def fit_score_bound(scores: Sequence[float], labels: Sequence[bool]) -> Fit:
    """The bound ``b`` of "``score >= b`` is positive" with the largest balanced accuracy.

    :param scores: one score per image (p or a).
    :param labels: True for the images that are positive (high quality).
    :raises UsageError: no positive or no negative image.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    if y.all() or not y.any():
        raise UsageError(
            f"cannot fit a bound: {int(y.sum())} of {len(y)} images are high quality; both "
            "classes are needed"
        )
    u = np.unique(s)
    if len(u) == 1:
        return Fit(float(u[0]), 0.5, 1.0, 1.0, (float(u[0]), float(u[0])))
    candidates = (u[:-1] + u[1:]) / 2.0
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tpr = 1.0 - np.searchsorted(pos, candidates, side="left") / len(pos)
    fpr = 1.0 - np.searchsorted(neg, candidates, side="left") / len(neg)
    j = tpr - fpr
    lo, hi = _plateau_middle(candidates, j)
    # Every bound in (u[lo], u[hi + 1]] classifies the images alike: take the middle.
    value = float((u[lo] + u[hi + 1]) / 2.0)
    k = lo + (hi - lo) // 2
    return Fit(
        value,
        float((1.0 + j[k]) / 2.0),
        float(tpr[k]),
        float(fpr[k]),
        (float(u[lo]), float(u[hi + 1])),
    )


def fit_region_tau(positive: np.ndarray, negative: np.ndarray) -> Fit:
    """``tau`` of "``Q > tau`` is a region" with the largest balanced accuracy, from histograms
    of ``Q`` over [0, 1] (``TAU_BINS`` bins) of the labelled and the other pixels.

    :raises InputError: no labelled or no unlabelled pixel.
    """
    pos = np.asarray(positive, np.float64)
    neg = np.asarray(negative, np.float64)
    if pos.sum() == 0 or neg.sum() == 0:
        raise InputError(
            f"cannot fit tau: the masks mark {int(pos.sum())} pixels to refine and leave "
            f"{int(neg.sum())}; both are needed"
        )
    bins = len(pos)
    k = np.arange(1, bins)
    tpr = pos[::-1].cumsum()[::-1][k] / pos.sum()  # share of labelled pixels with Q >= k / bins
    fpr = neg[::-1].cumsum()[::-1][k] / neg.sum()
    taus = k / bins
    j = tpr - fpr
    lo, hi = _plateau_middle(taus, j)
    mid = lo + (hi - lo) // 2
    return Fit(
        float((taus[lo] + taus[hi]) / 2.0),
        float((1.0 + j[mid]) / 2.0),
        float(tpr[mid]),
        float(fpr[mid]),
        (float(taus[lo]), float(taus[hi])),
    )


def alignment_scores(
    prompt_scores: Sequence[float], phrase_scores: Sequence[Sequence[float]], beta: float
) -> np.ndarray:
    """Eq. 8 for each image: ``clip(a_prompt * prod_j min(a_phs[j] / beta, 1), 0, 1)``."""
    out = []
    for ps, phs in zip(prompt_scores, phrase_scores, strict=True):
        a = float(ps) * float(np.prod(np.minimum(np.asarray(phs, np.float64) / beta, 1.0)))
        out.append(min(max(a, 0.0), 1.0))
    return np.asarray(out, np.float64)


def fit_beta(
    prompt_scores: Sequence[float],
    phrase_scores: Sequence[Sequence[float]],
    align_mos: Sequence[float],
    grid: Sequence[float] = BETA_GRID,
) -> Fit:
    """The beta of Eq. 8 whose ``a`` has the largest SRCC with the alignment MOS (the middle of
    the tied range). ``balanced_accuracy`` holds that SRCC; ``tpr``/``fpr`` are unused (0)."""
    from grefine_training.train import correlations

    grid_arr = np.asarray(grid, np.float64)
    srcc = np.asarray(
        [
            correlations(alignment_scores(prompt_scores, phrase_scores, b), np.asarray(align_mos))[
                "srcc"
            ]
            for b in grid_arr
        ]
    )
    lo, hi = _plateau_middle(grid_arr, srcc)
    value = float(grid_arr[lo + (hi - lo) // 2])
    return Fit(value, float(srcc[lo]), 0.0, 0.0, (float(grid_arr[lo]), float(grid_arr[hi])))


def hq_labels(mos: np.ndarray, spec: str, column: str, option: str) -> tuple[np.ndarray, str]:
    """``(labels, what "high quality" was)`` from ``spec``: ``"20%"`` (the top 20% of the MOS)
    or a MOS value (at or above it).

    :raises UsageError: a malformed spec, or one that makes every image (or none) high quality.
    """
    text = spec.strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1]) / 100.0
            if not 0.0 < share < 1.0:
                raise ValueError
            threshold = float(np.quantile(mos, 1.0 - share))
            what = f"{column} >= {threshold:.4g} (the top {text})"
        else:
            threshold = float(text)
            what = f"{column} >= {threshold:g}"
    except ValueError:
        raise UsageError(
            f"{option} {spec!r}: give a share of the images such as '20%' (the top 20% of the "
            "MOS) or a MOS value"
        ) from None
    labels = mos >= threshold
    if labels.all() or not labels.any():
        raise UsageError(
            f"{option} {spec!r}: {int(labels.sum())} of {len(mos)} images are high quality "
            f"({column} ranges {mos.min():g}..{mos.max():g}); choose a threshold inside the range"
        )
    return labels, what


def _mask_file(masks: Path, name: str) -> Path | None:
    rel = Path(name)
    for suffix in (*MASK_SUFFIXES, rel.suffix):
        candidate = masks / rel.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A bool ``(H, W)`` region mask (grey >= 128), resized (nearest) to ``shape`` when the image
    was downscaled on loading.

    :raises InputError: an unreadable mask or one of another aspect ratio than its image.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            grey = im.convert("L")
    except Exception as e:  # noqa: BLE001
        raise InputError(f"mask {str(path)!r} is unreadable ({e})") from None
    h, w = shape
    if grey.size != (w, h):
        if abs(grey.width / grey.height - w / h) > 0.01:
            raise InputError(
                f"mask {str(path)!r} is {grey.width}x{grey.height} but its image is {w}x{h} as "
                "assessed; a mask must have its image's size"
            )
        grey = grey.resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(grey) >= 128


@dataclass
class Calibration:
    """What :func:`calibrate` fitted.

    :ivar values: ``{dotted setting: value}`` (``hq_skip.p_bound``, ...).
    :ivar fits: ``{dotted setting: Fit}``.
    :ivar notes: one line per setting saying what it was fitted on.
    :ivar not_fitted: one line per setting that could not be fitted, and why.
    :ivar images: how many images were assessed.
    """

    values: dict[str, float] = field(default_factory=dict)
    fits: dict[str, Fit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    not_fitted: list[str] = field(default_factory=list)
    images: int = 0

    def table(self) -> dict[str, Any]:
        """The fitted values as a nested config table."""
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            node = out
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out


def calibrate(
    pipeline: Any,
    table: Any,
    *,
    masks: str | Path | None = None,
    hq_mos: str = HQ_DEFAULT,
    hq_align_mos: str = HQ_DEFAULT,
) -> Calibration:
    """Assess every image of ``table`` with ``pipeline`` (a :class:`grefine_core.GRefine`) and
    fit the thresholds (module docstring).

    :param table: a checked :class:`~grefine_training.data.MosTable`.
    :param masks: a folder of region masks (``<image stem>.png``, white = to refine).
    :param hq_mos: what "high quality" is for p (``"20%"`` or a MOS value).
    :param hq_align_mos: the same for a, on the alignment MOS column.
    :raises UsageError: an alignment column without prompts, masks with a fuser other than
        ``mask_paper``, or a perceptual slot that is off.
    :raises InputError: unreadable masks, no mask at all.
    """
    from tqdm import tqdm

    layout = table.layout
    align = layout.align_col is not None
    if align and table.prompts is None:
        raise UsageError(
            f"{str(table.path)!r}: the alignment column {layout.align_col!r} needs prompts to "
            "score; name the prompt column with --prompt-col"
        )
    mask_dir = Path(masks).expanduser() if masks else None
    if mask_dir is not None:
        if not mask_dir.is_dir():
            raise InputError(f"--masks {str(mask_dir)!r} is not a folder")
        fuser = pipeline.slot_plugin("fuser")
        if fuser != "mask_paper":
            raise UsageError(
                f"--masks fits [plugins.mask_paper] tau, but this configuration's fuser is "
                f"{fuser!r}; calibrate a configuration with fuser = 'mask_paper'"
            )
    n = len(table)
    p = np.zeros(n)
    prompt_scores: list[float] = []
    phrase_scores: list[list[float]] = []
    pos_hist = np.zeros(TAU_BINS, np.int64)
    neg_hist = np.zeros(TAU_BINS, np.int64)
    with_mask = 0
    for i in tqdm(range(n), desc="calibrate", unit="img", disable=None):
        prompt = table.prompts[i] if table.prompts is not None else ""
        result = pipeline.assess(table.files[i], prompt)
        if result.perceptual.neutral:
            raise UsageError(
                "the perceptual slot is off in this configuration: there is no p to calibrate"
            )
        p[i] = result.p
        if align:
            if result.alignment is None:
                raise UsageError(
                    f"{str(table.path)!r} line {table.lines[i]}: no alignment result for image "
                    f"{table.names[i]!r} (empty prompt, or the alignment slot is off)"
                )
            prompt_scores.append(float(result.alignment.prompt_score))
            phrase_scores.append([float(ph.score) for ph in result.alignment.phrases])
        if mask_dir is not None:
            mask_path = _mask_file(mask_dir, table.names[i])
            if mask_path is None:
                continue
            q = 1.0 - np.asarray(result.P, np.float64)
            if result.A_defect is not None:
                q = q + np.asarray(result.A_defect, np.float64)
            q = np.clip(q, 0.0, 1.0)
            region = _read_mask(mask_path, q.shape)
            idx = np.minimum((q * TAU_BINS).astype(np.int64), TAU_BINS - 1)
            pos_hist += np.bincount(idx[region], minlength=TAU_BINS)
            neg_hist += np.bincount(idx[~region], minlength=TAU_BINS)
            with_mask += 1
    out = Calibration(images=n)
    labels, what = hq_labels(table.mos["overall"], hq_mos, layout.mos_col, "--hq-mos")
    fit = fit_score_bound(p, labels)
    out.values["hq_skip.p_bound"] = round(fit.value, 4)
    out.fits["hq_skip.p_bound"] = fit
    out.notes.append(
        f"hq_skip.p_bound: high quality = {what}, {int(labels.sum())} of {n} images; balanced "
        f"accuracy {fit.balanced_accuracy:.3f} (TPR {fit.tpr:.3f}, FPR {fit.fpr:.3f}), tied "
        f"range {fit.tied[0]:.4f}..{fit.tied[1]:.4f}"
    )
    if mask_dir is None:
        out.not_fitted.append("plugins.mask_paper.tau: no --masks")
    elif with_mask == 0:
        raise InputError(
            f"--masks {str(mask_dir)!r}: no mask for any of the {n} images (looked for "
            f"<image name>.png, e.g. {Path(table.names[0]).with_suffix('.png')})"
        )
    else:
        tau = fit_region_tau(pos_hist, neg_hist)
        out.values["plugins.mask_paper.tau"] = round(tau.value, 4)
        out.fits["plugins.mask_paper.tau"] = tau
        share = pos_hist.sum() / (pos_hist.sum() + neg_hist.sum())
        term = "(1 - P) + A_defect" if table.prompts is not None else "1 - P (no prompts)"
        out.notes.append(
            f"plugins.mask_paper.tau: {with_mask} masks of {n} images, "
            f"{int(pos_hist.sum() + neg_hist.sum())} pixels ({share:.1%} to refine), Q = "
            f"{term}; balanced accuracy {tau.balanced_accuracy:.3f} (TPR {tau.tpr:.3f}, FPR "
            f"{tau.fpr:.3f}), tied range {tau.tied[0]:.4f}..{tau.tied[1]:.4f}"
        )
    if not align:
        out.not_fitted.append("plugins.aq.beta, hq_skip.a_bound: no alignment MOS column")
        return out
    mos_a = table.mos["align"]
    beta = fit_beta(prompt_scores, phrase_scores, mos_a)
    out.values["plugins.aq.beta"] = beta.value
    out.fits["plugins.aq.beta"] = beta
    out.notes.append(
        f"plugins.aq.beta: SRCC of a with {layout.align_col} {beta.balanced_accuracy:.3f} over "
        f"{n} images (tied range {beta.tied[0]:g}..{beta.tied[1]:g})"
    )
    a = alignment_scores(prompt_scores, phrase_scores, beta.value)
    labels_a, what_a = hq_labels(mos_a, hq_align_mos, layout.align_col, "--hq-align-mos")
    fit_a = fit_score_bound(a, labels_a)
    out.values["hq_skip.a_bound"] = round(fit_a.value, 4)
    out.fits["hq_skip.a_bound"] = fit_a
    out.notes.append(
        f"hq_skip.a_bound: high alignment = {what_a}, {int(labels_a.sum())} of {n} images, a "
        f"with beta {beta.value:g}; balanced accuracy {fit_a.balanced_accuracy:.3f} (TPR "
        f"{fit_a.tpr:.3f}, FPR {fit_a.fpr:.3f})"
    )
    return out


def write_calibration(
    path: Path,
    calibration: Calibration,
    *,
    base: Mapping[str, Any],
    header: Sequence[str],
    force: bool = False,
) -> None:
    """Write the preset file: ``preset = <base>``, the run's own settings, the fitted values, with
    a comment of what was fitted on; then load it back with the configuration loader.

    :raises UsageError: ``path`` exists and was not written by calibrate (unless ``force``).
    """
    from grefine_core.atomic import write_text
    from grefine_core.config import load_config
    from grefine_training.manifest import preset_data, toml_text

    if path.exists() and not force:
        try:
            first = path.read_text(encoding="utf-8").splitlines()[:1]
        except (OSError, UnicodeDecodeError):
            first = []
        if not (first and first[0].startswith(MARKER)):
            raise UsageError(
                f"--out {str(path)!r} exists and was not written by grefine calibrate; choose "
                "another --out or add --force"
            )
    data = preset_data(base, calibration.table())
    comments = [
        *header,
        *calibration.notes,
        *(f"not fitted: {line}" for line in calibration.not_fitted),
        f"Use: grefine refine IMAGE --prompt '...' --config {path}",
    ]
    write_text(path, toml_text(data, comments))
    loaded = load_config(config_file=path, environ={})
    dumped = loaded.model_dump()
    for key, value in calibration.values.items():
        node: Any = dumped
        for part in key.split("."):
            node = node[part]
        if node != value:  # pragma: no cover - the loader would have to disagree with the file
            raise InputError(f"{str(path)!r}: {key} reads back as {node!r}, not {value!r}")
