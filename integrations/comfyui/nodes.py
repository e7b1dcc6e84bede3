"""The G-Refine ComfyUI nodes: quality maps, mask, prompt emphasis, and the whole pipeline.

Each node runs grefine's own pipeline (``GRefine``) on every image of the batch and stacks the
outputs. Pipelines are built once per preset and settings and share one model cache for the
process, so the models load once (:func:`pipeline_for`). grefine and torch are imported inside the
functions: importing this module loads neither.

What the presets prove here (docs/behaviour.md): ``tiny`` (random weights) only the plumbing --
shapes, types, batches; ``oracle`` (planted truth on lexicon scenes) the logic -- which regions are
masked, which defects named, what is left untouched. Neither says anything about image quality;
that needs the ``paper`` preset and its weights.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .convert import images_to_pils, maps_to_masks, pils_to_images
from .weighting import defect_phrases, phrase_spans, weight_spans

log = logging.getLogger(__name__)

CATEGORY = "G-Refine"
#: The custom ComfyUI type that carries assessments from the Quality Maps node to the others.
RESULT_TYPE = "GREFINE_RESULT"
#: grefine's seed range (``grefine_core.pipeline.MAX_SEED``).
MAX_SEED = 2**63 - 1
DEFAULT_PRESET = "paper"

_LOCK = threading.Lock()
_PIPELINES: dict[tuple[str, str], Any] = {}
_MODELS: list[Any] = []  # the one ModelCache every pipeline of the process shares


# ---------------------------------------------------------------------- shared machinery


@dataclass(repr=False)
class GRefineMaps:
    """The ``GREFINE_RESULT`` value: the assessments of one batch and the pipeline that made
    them (the Mask node re-fuses with it, no map recomputed).

    :ivar results: one ``grefine_core.RefineResult`` per batch image, in batch order.
    :ivar sizes: each input's ``(H, W)``; maps are at the working size, which is smaller only when
        grefine downscaled a huge input (``image.max_side``).
    """

    pipeline: Any
    results: list[Any]
    sizes: list[tuple[int, int]]
    preset: str
    notices: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:  # ComfyUI prints outputs in error reports: keep it short
        return f"GRefineMaps(preset={self.preset!r}, images={len(self.results)})"


def preset_choices() -> list[str]:
    """The shipped grefine presets (``grefine_core.config.preset_names``), ``paper`` first."""
    from grefine_core.config import preset_names

    names = preset_names()
    return sorted(names, key=lambda n: (n != DEFAULT_PRESET, n))


def _models() -> Any:
    if not _MODELS:
        from grefine_core.context import ModelCache

        _MODELS.append(ModelCache())
    return _MODELS[0]


def pipeline_for(preset: str, overrides: dict[str, Any] | None = None) -> Any:
    """The ``GRefine`` of ``preset`` with ``overrides`` (a nested dict, as ``load_config`` takes),
    built once per process; every pipeline shares one model cache, so a model two presets or
    settings have in common loads once. ``GREFINE_*`` environment variables apply, as in the CLI.
    """
    key = (preset, json.dumps(overrides or {}, sort_keys=True))
    with _LOCK:
        if key not in _PIPELINES:
            from grefine_core import GRefine, load_config

            config = load_config(preset=preset, overrides=overrides)
            observers = [_progress_observer()] if _comfy_progress_bar() is not None else []
            _PIPELINES[key] = GRefine(config, observers=observers, models=_models())
            for notice in _PIPELINES[key].notices():
                log.warning("G-Refine preset %r: %s", preset, notice)
        return _PIPELINES[key]


def clear_pipelines() -> None:
    """Forget every cached pipeline and model (frees their memory once nothing else holds them)."""
    with _LOCK:
        _PIPELINES.clear()
        _MODELS.clear()


def _comfy_progress_bar() -> Any:
    """ComfyUI's ``comfy.utils.ProgressBar`` when running inside ComfyUI, else ``None``."""
    try:
        from comfy.utils import ProgressBar  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - outside ComfyUI (tests, scripts)
        return None
    return ProgressBar


def _progress_observer() -> Any:
    """An observer that puts stage progress (denoising steps) into ComfyUI's progress bar and
    never fails a run (built when called: the hook marker is grefine's)."""
    from grefine_core.markers import hookimpl

    class ComfyProgress:
        def __init__(self) -> None:
            self._key: Any = None
            self._bar: Any = None

        @hookimpl
        def grefine_stage_progress(self, context: Any, slot: str, step: int, total: int) -> None:
            bar_type = _comfy_progress_bar()
            if bar_type is None or not total:
                return
            try:
                key = (id(context), slot, total)
                if key != self._key:
                    self._key, self._bar = key, bar_type(total)
                self._bar.update_absolute(step, total)
            except Exception:  # noqa: BLE001 - a progress display must not break the run
                log.debug("ComfyUI progress bar update failed", exc_info=True)

    return ComfyProgress()


def _named_errors(node: str, action: Any) -> Any:
    """Run ``action()``; grefine's usage, configuration and input errors become one-line
    ``ValueError``s naming the node, its other errors a ``RuntimeError`` naming it."""
    from grefine_core.errors import GRefineError, UsageError

    try:
        return action()
    except UsageError as e:
        raise ValueError(f"{node}: " + "; ".join(_lines(e))) from e
    except GRefineError as e:
        raise RuntimeError(f"{node}: {e}") from e


def _lines(error: BaseException) -> list[str]:
    return [line.strip() for line in str(error).splitlines() if line.strip()] or [
        type(error).__name__
    ]


def _check_preset(node: str, preset: Any) -> str:
    names = preset_choices()
    if preset not in names:
        raise ValueError(
            f"{node}: input 'preset' must be one of {', '.join(names)}, got {preset!r}"
        )
    return str(preset)


def _check_seed(node: str, seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{node}: input 'seed' must be an integer in [0, 2**63 - 1], got {seed!r}")
    return seed


def _check_text(node: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{node}: input '{name}' must be a STRING, got {type(value).__name__}")
    return value


def _check_maps(node: str, maps: Any, name: str = "maps") -> GRefineMaps:
    if not isinstance(maps, GRefineMaps) or not maps.results:
        raise ValueError(
            f"{node}: input '{name}' must be the GREFINE_RESULT output of G-Refine Quality Maps, "
            f"got {type(maps).__name__}"
        )
    return maps


def _item_seed(seed: int, index: int) -> int:
    """Batch image ``index``'s seed: ``seed + index`` (as grefine's batches add the item index)."""
    return (seed + index) % (MAX_SEED + 1)


def _a_of(result: Any) -> float:
    """``a``, or 1 without an alignment term (a skipped indicator counts as perfect)."""
    return 1.0 if result.a is None else float(result.a)


def defects_line(result: Any) -> str:
    """``p=0.412 a=0.633 defects: blue sofa (attribute); red hat (noun)`` (or ``defects: none``;
    ``a=n/a`` when the alignment slot did not run)."""
    a = "n/a" if result.a is None else f"{result.a:.3f}"
    found = [] if result.alignment is None else result.alignment.defects
    listed = "; ".join(f"{d.text} ({d.defect})" for d in found) or "none"
    return f"p={result.p:.3f} a={a} defects: {listed}"


def _notes(notices: list[str]) -> list[str]:
    return [f"note: {n}" for n in notices]


# ---------------------------------------------------------------------- the nodes


def image_prompt_inputs() -> dict[str, Any]:
    """The inputs the assessing and refining nodes share: image, prompt, preset, seed."""
    return {
        "image": ("IMAGE",),
        "prompt": ("STRING", {"multiline": True, "default": ""}),
        "preset": (preset_choices(), {"default": DEFAULT_PRESET}),
        "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED}),
    }


class GRefineQualityMaps:
    """G-Refine's quality maps of each image of the batch: where it is perceptually bad
    (``repaint_perceptual`` = 1 - P) and where it misses its prompt (``repaint_alignment`` =
    A_defect), the scores p and a, and the defects named.

    With the ``oracle`` preset on its planted scenes this proves the logic (a noisy quadrant is
    marked, a wrong colour named, a clean scene left with empty maps); with ``tiny`` only that
    shapes, types and batches are right. Neither proves anything about image quality.
    """

    NODE_NAME = "G-Refine Quality Maps"
    RETURN_TYPES = ("MASK", "MASK", RESULT_TYPE, "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("repaint_perceptual", "repaint_alignment", "maps", "p", "a", "defects")
    FUNCTION = "assess"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Quality maps of each image: 1 - P (perceptual) and A_defect (alignment with the prompt) "
        "as masks (1 = repaint), p and a (batch means), one defects line per image."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {"required": image_prompt_inputs()}

    def assess(
        self, image: Any, prompt: str, preset: str = DEFAULT_PRESET, seed: int = 0
    ) -> tuple[Any, ...]:
        node = self.NODE_NAME
        prompt = _check_text(node, "prompt", prompt)
        preset = _check_preset(node, preset)
        seed = _check_seed(node, seed)
        pils = images_to_pils(image, node, "image")
        pipe = _named_errors(node, lambda: pipeline_for(preset))
        results = run_each(node, pipe.assess, pils, prompt, seed)
        sizes = [(im.height, im.width) for im in pils]
        perceptual = maps_to_masks([1.0 - r.P for r in results], sizes)
        alignment = maps_to_masks(
            [r.A_defect if r.A_defect is not None else np.zeros_like(r.P) for r in results], sizes
        )
        p = sum(r.p for r in results) / len(results)
        a = sum(_a_of(r) for r in results) / len(results)
        notices = pipe.notices()
        text = "\n".join([defects_line(r) for r in results] + _notes(notices))
        maps = GRefineMaps(pipe, results, sizes, preset, notices)
        return (perceptual, alignment, maps, float(p), float(a), text)


class GRefineMask:
    """The repaint mask of each assessed image, re-fused from its maps with this node's tau,
    dilation and feathering (``grefine_core.app.refuse``: no map is recomputed, so the sliders
    are cheap).

    With the ``oracle`` preset this proves the fuser's logic on planted scenes (the mask covers a
    known defect region, a clean scene's mask is empty, a higher tau masks less); with ``tiny``
    only the plumbing (shapes, batches). Neither says anything about image quality.
    """

    NODE_NAME = "G-Refine Mask"
    RETURN_TYPES = ("MASK", "FLOAT")
    RETURN_NAMES = ("mask", "fraction")
    FUNCTION = "mask"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "The repaint mask (1 = repaint) from G-Refine's maps at this tau, dilation and feather; "
        "fraction = the batch's mean masked fraction of the binary mask."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "maps": (RESULT_TYPE,),
                "tau": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                "dilate_px": ("INT", {"default": 4, "min": 0, "max": 512, "step": 1}),
            },
            "optional": {
                "feather_sigma": (
                    "FLOAT",
                    {"default": 3.0, "min": 0.0, "max": 64.0, "step": 0.1},
                ),
                "kind": (["binary", "soft"], {"default": "binary"}),
            },
        }

    def mask(
        self,
        maps: Any,
        tau: float = 0.5,
        dilate_px: int = 4,
        feather_sigma: float | None = None,
        kind: str = "binary",
    ) -> tuple[Any, float]:
        node = self.NODE_NAME
        maps = _check_maps(node, maps)
        if kind not in ("binary", "soft"):
            raise ValueError(f"{node}: input 'kind' must be 'binary' or 'soft', got {kind!r}")
        from grefine_core.app.refuse import fuser_settings, refuse

        pipe = maps.pipeline
        _, current = _named_errors(node, lambda: fuser_settings(pipe))
        fields = type(current).model_fields
        wanted = {"tau": tau, "dilate_px": dilate_px, "feather_sigma": feather_sigma}
        changes = {k: v for k, v in wanted.items() if v is not None and k in fields}
        ignored = sorted(k for k, v in wanted.items() if v is not None and k not in fields)
        if ignored:
            log.warning("%s: the active fuser has no %s; ignored", node, ", ".join(ignored))
        masks = [_named_errors(node, lambda r=r: refuse(pipe, r, **changes)) for r in maps.results]
        if kind == "binary":
            out = maps_to_masks([m.binary.astype("float32") for m in masks], maps.sizes, True)
        else:
            out = maps_to_masks([m.soft for m in masks], maps.sizes)
        fraction = sum(float(m.fraction) for m in masks) / len(masks)
        return (out, float(fraction))


class GRefineEmphasis:
    """The prompt with its defective phrases weighted in ComfyUI's syntax, ``(blue box:1.1)``,
    for ``CLIPTextEncode``: G-Refine's emphasis (Eq. 7) for an inpainting pass.

    The phrases come from ``maps`` (the assessments' emphasis spans) or else from the ``defects``
    text of the Quality Maps node. With the ``oracle`` preset this proves that the planted
    defect is the phrase weighted; with ``tiny`` only the plumbing (its maps are noise, so are
    its defects). Neither says anything about image quality.
    """

    NODE_NAME = "G-Refine Emphasis"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt",)
    FUNCTION = "emphasise"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "The prompt with G-Refine's defective phrases weighted 1 + weight in ComfyUI's "
        "(text:1.1) syntax, for CLIP Text Encode."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": ""}),
                "weight": (
                    "FLOAT",
                    {"default": default_emphasis_weight(), "min": 0.0, "max": 2.0, "step": 0.01},
                ),
            },
            "optional": {
                "maps": (RESULT_TYPE,),
                "defects": ("STRING", {"multiline": True, "default": "", "forceInput": True}),
            },
        }

    def emphasise(
        self, prompt: str, weight: float | None = None, maps: Any = None, defects: str = ""
    ) -> tuple[str]:
        node = self.NODE_NAME
        prompt = _check_text(node, "prompt", prompt)
        defects = _check_text(node, "defects", defects or "")
        w = default_emphasis_weight() if weight is None else float(weight)
        if not 0.0 <= w <= 100.0:
            raise ValueError(f"{node}: input 'weight' must be in [0, 100], got {weight!r}")
        factor = 1.0 + w
        if maps is not None:
            spans = result_spans(prompt, _check_maps(node, maps).results, factor)
        else:
            spans = phrase_spans(prompt, defect_phrases(defects), factor)
        return (weight_spans(prompt, spans),)


class GRefineRefine:
    """The whole G-Refine pipeline on each image of the batch: maps, mask, stage 1 (SDXL
    inpainting inside the mask) and stage 2 (a mild global PASD pass); a high-quality image comes
    back unchanged.

    With ``tiny`` this proves the plumbing (shapes, batches, the strength override reaching stage
    1); with ``oracle`` the logic (a clean scene is returned pixel-identical; with stage 2 off, no
    pixel outside the mask changes). Neither proves anything about image quality.
    """

    NODE_NAME = "G-Refine Refine"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("image", "mask", "report")
    FUNCTION = "refine"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "G-Refine end to end: the refined batch, the binary mask each image was refined in, and "
        "one report line per image (p, a, defects, high quality, masked fraction, stages)."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": image_prompt_inputs(),
            "optional": {
                "strength": (
                    "FLOAT",
                    {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.01},
                ),
                "stage2": ("BOOLEAN", {"default": True}),
            },
        }

    def refine(
        self,
        image: Any,
        prompt: str,
        preset: str = DEFAULT_PRESET,
        seed: int = 0,
        strength: float = -1.0,
        stage2: bool = True,
    ) -> tuple[Any, Any, str]:
        node = self.NODE_NAME
        prompt = _check_text(node, "prompt", prompt)
        preset = _check_preset(node, preset)
        seed = _check_seed(node, seed)
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise ValueError(
                f"{node}: input 'strength' must be a FLOAT, got {strength!r}"
            ) from None
        if not -1.0 <= strength <= 1.0:
            raise ValueError(
                f"{node}: input 'strength' must be in [0, 1], or -1 for the preset's, got {strength}"
            )
        pils = images_to_pils(image, node, "image")
        overrides = _named_errors(node, lambda: refine_overrides(preset, strength, bool(stage2)))
        pipe = _named_errors(node, lambda: pipeline_for(preset, overrides))
        results = run_each(node, pipe.refine, pils, prompt, seed)
        sizes = [(im.height, im.width) for im in pils]
        images = pils_to_images([r.image for r in results], sizes[0])
        masks = maps_to_masks(
            [
                r.mask.binary.astype("float32") if r.mask is not None else np.zeros_like(r.P)
                for r in results
            ],
            sizes,
            binary=True,
        )
        text = "\n".join([report_line(r) for r in results] + _notes(pipe.notices()))
        return (images, masks, text)


# ---------------------------------------------------------------------- helpers of the nodes


def run_each(node: str, run: Any, pils: list[Any], prompt: str, seed: int) -> list[Any]:
    """``run`` (a pipeline's ``assess`` or ``refine``) on each image of the batch, image ``i``
    with seed ``seed + i``; an error names the node."""
    return [
        _named_errors(
            node, lambda i=i, im=im: run(im, prompt, seed=_item_seed(seed, i), name=f"batch-{i}")
        )
        for i, im in enumerate(pils)
    ]


def default_emphasis_weight() -> float:
    """The alignment indicator's default emphasis weight ``w`` (defective phrases get ``1 + w``):
    ``[plugins.aq] emphasis_weight``, 0.1 unless grefine changes it."""
    try:
        from grefine_quality.settings import AQSettings

        return float(AQSettings().emphasis_weight)
    except Exception:  # noqa: BLE001 - an older or partial grefine: the paper's value
        return 0.1


def result_spans(prompt: str, results: list[Any], factor: float) -> list[tuple[int, int, float]]:
    """``(start, end, factor)`` spans of ``prompt`` to weight, from the assessments' emphasis.

    A result assessed on this very prompt gives its emphasis spans (``alignment.emphasis``, or its
    defects' spans when the preset's emphasis weight is 0); on another prompt, each span's text is
    looked up in ``prompt``. The batch's spans are pooled: one prompt conditions the batch.
    """
    spans: list[tuple[int, int, float]] = []
    for r in results:
        if r.alignment is None:
            continue
        found = [e.span for e in r.alignment.emphasis] or [d.span for d in r.alignment.defects]
        if r.prompt == prompt:
            spans += [(int(s), int(e), factor) for s, e in found]
        else:
            spans += phrase_spans(prompt, [r.prompt[s:e] for s, e in found], factor)
    return spans


def _strength_flag() -> Any:
    """The settings flag ``--strength`` (``grefine_core.app.flags``), as the CLI builds it."""
    from grefine_core.app.flags import setting_flags

    return next((f for f in setting_flags() if f.flag == "--strength"), None)


def refine_overrides(preset: str, strength: float, stage2: bool) -> dict[str, Any]:
    """The ``load_config`` overrides of the Refine node: a fixed stage-1 strength (what the CLI's
    ``--strength`` sets) when ``strength >= 0``; stage 2's plugin disabled when ``stage2`` is off.
    """
    from grefine_core.config import deep_merge, load_config
    from grefine_core.errors import UsageError

    overrides: dict[str, Any] = {}
    if strength >= 0.0:
        flag = _strength_flag()
        if flag is None:
            raise UsageError(
                "input 'strength': no installed stage-1 refiner declares a --strength setting"
            )
        overrides = deep_merge(overrides, flag.override(float(strength)))
    if not stage2:
        name = load_config(preset=preset).select.get("stage2")
        if name and name != "none":
            overrides["disable"] = [name]
    return overrides


def report_line(result: Any) -> str:
    """One image's summary: p, a, defects, high quality, masked fraction and what each stage did."""
    fraction = 0.0 if result.mask is None else float(result.mask.fraction)
    parts = [
        defects_line(result),
        f"high_quality: {'yes' if result.high_quality else 'no'}",
        f"masked: {fraction:.1%}",
    ]
    for slot in ("stage1", "stage2"):
        rec = result.stage(slot)
        if rec is None:
            continue
        info = f"{slot}: {rec.status}"
        strength = rec.info.get("strength") if isinstance(rec.info, dict) else None
        if rec.status == "ran" and isinstance(strength, int | float):
            info += f" (strength {strength:.2f})"
        parts.append(info)
    return " | ".join(parts)


NODE_CLASS_MAPPINGS = {
    "GRefineQualityMaps": GRefineQualityMaps,
    "GRefineMask": GRefineMask,
    "GRefineEmphasis": GRefineEmphasis,
    "GRefineRefine": GRefineRefine,
}

NODE_DISPLAY_NAME_MAPPINGS = {name: cls.NODE_NAME for name, cls in NODE_CLASS_MAPPINGS.items()}
