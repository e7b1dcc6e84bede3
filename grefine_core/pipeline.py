"""The typed facade: ``GRefine(config).refine(image, prompt)`` and ``.assess(image, prompt)``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from pydantic import BaseModel, ValidationError

from grefine_core import validation
from grefine_core.config import GRefineConfig, format_validation_error, load_config
from grefine_core.context import ModelCache, RunContext
from grefine_core.errors import ConfigError, GRefineError, InputError, PluginError, UsageError
from grefine_core.imageio import load_image
from grefine_core.plugins import PluginHost, validate_names
from grefine_core.result import PLUMBING_NOTICE, RefineResult
from grefine_core.types import SLOTS, AlignmentResult, MaskResult, PerceptualResult, StageRecord

if TYPE_CHECKING:
    from grefine_core.app.fingerprint import Fingerprint

log = logging.getLogger(__name__)

ImageLike = str | os.PathLike[str] | Image.Image


class GRefine:
    """A configured G-Refine pipeline. It owns its plugin manager and its loaded models.

    :param config: the configuration (default: the ``paper`` preset plus ``GREFINE_*`` variables).
    :param extra_plugins: ``{name: plugin_object}`` to register besides the entry points.
    :param observers: objects with observer hookimpls (progress bars, loggers); not selectable.
    :param models: a model cache to share with other pipelines (e.g. the methods of one evaluation);
        its keys include every setting that shapes a model, so sharing never mixes models.
    """

    def __init__(
        self,
        config: GRefineConfig | None = None,
        *,
        extra_plugins: Mapping[str, Any] | None = None,
        observers: Iterable[Any] = (),
        models: ModelCache | None = None,
    ) -> None:
        self.config = config if config is not None else load_config()
        self.extra_plugins = dict(extra_plugins or {})  # an engine rebuilds the pipeline elsewhere
        self.host = PluginHost(
            disable=self.config.disable,
            strict=self.config.strict_plugins,
            extra_plugins=extra_plugins,
        )
        for i, observer in enumerate(observers):
            self.host.pm.register(observer, name=f"observer-{i}-{type(observer).__name__}")
        validate_names(
            [n for n in self.config.select.values() if n != "none"], "select", self.host.known
        )
        self.plugin_settings = self._validate_plugin_settings()
        self.backbones = self.host.backbones()
        self.models = models if models is not None else ModelCache()
        self._current: RunContext | None = None
        self._slots = {slot: self._resolve_slot(slot) for slot in SLOTS}
        self.host.hook.grefine_configure.call_historic(kwargs={"config": self.config})
        for notice in self.notices():
            log.info("preset %r: %s", self.config.preset, notice)  # the CLI prints it

    # ------------------------------------------------------------------ set-up
    def _validate_plugin_settings(self) -> dict[str, BaseModel]:
        models = self.host.settings_models()
        settings: dict[str, BaseModel] = {}
        for section, model in models.items():
            raw = self.config.plugins.get(section, {})
            try:
                settings[section] = model.model_validate(raw)
            except ValidationError as e:
                owner = self.host.settings_owners.get(section)
                read_by = f" (read by plugin {owner!r})" if owner else ""
                raise ConfigError(
                    f"invalid settings in [plugins.{section}]{read_by}:\n"
                    f"{format_validation_error(e, model)}"
                ) from None
        from grefine_core.plugins import installed_sections

        known = set(models) | installed_sections()
        unknown = sorted(set(self.config.plugins) - known)
        if unknown:  # a typo: sections of installed plugins, loaded or not, are all known
            raise ConfigError(
                f"unknown settings section [plugins.{unknown[0]}]: no installed plugin reads it; "
                f"known sections: {', '.join(sorted(known))}"
            )
        return settings

    def _resolve_slot(self, slot: str) -> tuple[str | None, Any]:
        """``(plugin, caller)`` for an active slot, ``(None, reason)`` for a skipped one."""
        name = self.config.select.get(slot)
        if not name or name == "none":
            return None, "no plugin selected for this slot"
        if name in self.config.disable:
            return None, f"plugin {name!r} is disabled"
        return name, self.host.slot_caller(slot, name)

    def notices(self) -> list[str]:
        """What this configuration's outputs prove and do not prove (printed and reported)."""
        found = (PLUMBING_NOTICE if self.config.plumbing_only else "", self.config.notice)
        return [notice for notice in found if notice]

    def slot_plugin(self, slot: str) -> str | None:
        """The plugin that fills ``slot``, or ``None`` when the slot is skipped."""
        return self._slots[slot][0]

    # ------------------------------------------------------------------ public API
    def refine(
        self,
        image: ImageLike,
        prompt: str,
        *,
        name: str | None = None,
        seed: int | None = None,
        fingerprint: Fingerprint | None = None,
    ) -> RefineResult:
        """Assess and refine one image. See :class:`~grefine_core.result.RefineResult`.

        :param fingerprint: the run's fingerprint when already computed (``refine_many`` does).
        """
        return self._run(image, prompt, "refine", name=name, seed=seed, fingerprint=fingerprint)

    def assess(
        self,
        image: ImageLike,
        prompt: str,
        *,
        name: str | None = None,
        seed: int | None = None,
        fingerprint: Fingerprint | None = None,
    ) -> RefineResult:
        """Quality maps and scores only: perceptual, parser, alignment and fuser; no refinement."""
        return self._run(image, prompt, "assess", name=name, seed=seed, fingerprint=fingerprint)

    def fingerprint(
        self, image: ImageLike, prompt: str, seed: int | None, mode: str
    ) -> Fingerprint:
        """Everything that shapes the output of this run, computed without loading any model.

        A delegate of the application (:func:`grefine_core.app.fingerprint.pipeline_fingerprint`).
        """
        from grefine_core.app.fingerprint import pipeline_fingerprint

        return pipeline_fingerprint(self, image, prompt, seed, mode)

    def refine_many(
        self, items: Iterable[Any], out_dir: str | os.PathLike[str] | None = None, **options: Any
    ) -> Any:
        """Run many items with the models loaded once; a failing item does not stop the batch.

        A delegate of the application: :func:`grefine_core.app.batch.run_batch` documents the
        arguments (``mode``, ``resume``, ``keep_results``, ``on_item``). Results are saved in
        ``out_dir`` (resumable) or kept in memory.

        :returns: a :class:`~grefine_core.app.batch.BatchReport`.
        """
        from grefine_core.app.batch import run_batch

        return run_batch(self, items, out_dir, **options)

    def parse(self, prompt: str) -> Any:
        """Run only the parser slot on ``prompt``.

        :raises UsageError: no parser is active (``select.parser`` is ``"none"`` or disabled).
        """
        if self.slot_plugin("parser") is None:
            parsers = ", ".join(self.host.implementers("parser")) or "(none loaded)"
            raise UsageError(
                f"no parser to run: {self._slots['parser'][1]}; select one of: {parsers}"
            )
        ctx = self.run_context(seed=self.config.seed, name="prompt", prompt=prompt)
        self._current = ctx
        return self._call_slot("parser", ctx, [], prompt=prompt, context=ctx)

    # ------------------------------------------------------------------ the run
    def run_context(self, seed: int, name: str, prompt: str) -> RunContext:
        """The :class:`RunContext` a run of item ``name`` with ``seed`` and ``prompt`` gets."""
        return RunContext(
            config=self.config,
            models=self.models,
            plugin_settings=self.plugin_settings,
            seed=seed,
            item_name=name,
            prompt=prompt,
            backbones=self.backbones,
            _progress=self._on_progress,
        )

    def _on_progress(self, slot: str, step: int, total: int) -> None:
        ctx = self._current
        self.host.hook.grefine_stage_progress(context=ctx, slot=slot, step=step, total=total)

    def _run(self, image: ImageLike, prompt: str, mode: str, **kw: Any) -> RefineResult:
        result = self.start(image, prompt, mode=mode, **kw)
        for slot in ("stage1", "stage2"):
            self.advance(result, slot)
        return result

    def start(
        self,
        image: ImageLike,
        prompt: str,
        *,
        mode: str = "refine",
        name: str | None = None,
        seed: int | None = None,
        fingerprint: Fingerprint | None = None,
    ) -> RefineResult:
        """The first part of a run: perceptual, parser, alignment and fuser slots and the HQ
        decision. The result's image is still the input; :meth:`advance` runs the two stages.

        ``refine`` is ``start`` then ``advance(result, "stage1")`` and ``advance(result, "stage2")``;
        an engine may run the parts in different processes (docs/scale-out.md): a part needs only
        the result and a pipeline of the same configuration.
        """
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        check_seed(self.config.seed if seed is None else seed)
        if fingerprint is None:
            fingerprint = self.fingerprint(image, prompt, seed, mode)
        img, info = load_image(image, self.config.image)
        if name is None:
            name = Path(str(image)).stem if not isinstance(image, Image.Image) else "image"
        run_seed = self.config.seed if seed is None else int(seed)
        ctx = self.run_context(run_seed, name, prompt)
        self._current = ctx
        trace: list[StageRecord] = []
        self.host.hook.grefine_run_start(context=ctx)

        perceptual = self._call_slot("perceptual", ctx, trace, image=img, context=ctx)
        if perceptual is None:
            perceptual = PerceptualResult.neutral_for(img.height, img.width)

        parsed = alignment = None
        if not prompt.strip():
            for slot in ("parser", "alignment"):
                self._skip(slot, ctx, trace, "empty prompt: no alignment term")
        elif self.slot_plugin("alignment") is None:
            self._skip("parser", ctx, trace, "alignment slot inactive: nothing to parse for")
            self._skip("alignment", ctx, trace, self._slots["alignment"][1])
        else:
            parsed = self._call_slot("parser", ctx, trace, prompt=prompt, context=ctx)
            if parsed is None:
                self._skip("alignment", ctx, trace, "parser slot inactive")
            else:
                alignment = self._call_slot(
                    "alignment", ctx, trace, image=img, parsed=parsed, context=ctx
                )

        mask = self._call_slot(
            "fuser", ctx, trace, perceptual=perceptual, alignment=alignment, context=ctx
        )
        return RefineResult(
            image=img,
            input_image=img,
            prompt=prompt,
            perceptual=perceptual,
            parsed=parsed,
            alignment=alignment,
            mask=mask,
            trace=trace,
            seed=run_seed,
            item_name=name,
            preset=self.config.preset,
            select={s: (self.slot_plugin(s) or "none") for s in SLOTS},
            disable=list(self.config.disable),
            plumbing_only=self.config.plumbing_only,
            input_info=info,
            mode=mode,
            high_quality=self._high_quality_reason(perceptual, alignment),
            notices=self.notices(),
            fingerprint=fingerprint,
        )

    def advance(self, result: RefineResult, slot: str) -> RefineResult:
        """Run ``slot`` (``stage1``, then ``stage2``) on a :meth:`start` ed result, in place.

        The slot is skipped (and recorded so) in ``assess`` mode, for a high-quality image, and
        stage 1 for an empty or absent mask. ``stage2`` ends the run (``grefine_run_end``).

        :raises UsageError: ``slot`` is not the result's next stage.
        """
        done = sum(r.slot in ("stage1", "stage2") for r in result.trace)
        if done > 1 or slot != ("stage1", "stage2")[done]:
            raise UsageError(
                f"advance({slot!r}): {result.item_name!r} has run {done} of its two stages, "
                "which run in the order stage1, stage2"
            )
        self._current = ctx = self.run_context(result.seed, result.item_name, result.prompt)
        reason = "assess only" if result.mode == "assess" else result.high_quality
        if not reason and slot == "stage1":
            reason = self._stage1_skip_reason(result.mask)
        if reason:  # an HQ image: Table 1's "HQ optimisation: zero", neither stage touches it
            self._skip(slot, ctx, result.trace, reason)
        else:
            kw = {"image": result.image, "prompt": result.prompt, "context": ctx}
            if slot == "stage1":
                kw.update(
                    mask=result.mask, perceptual=result.perceptual, alignment=result.alignment
                )
            out = self._call_slot(slot, ctx, result.trace, **kw)
            if out is not None:
                result.image = out.image
        if slot == "stage2":
            self.host.hook.grefine_run_end(context=ctx, result=result)
        return result

    def _high_quality_reason(
        self, perceptual: PerceptualResult, alignment: AlignmentResult | None
    ) -> str | None:
        """Why the image is left untouched (the HQ policy, docs/behaviour.md), or ``None`` to refine it.

        High quality: ``p >= hq_skip.p_bound`` and ``a >= hq_skip.a_bound`` and no alignment
        defect. A skipped slot counts as perfect (neutral PQ: p = 1; no AQ: a = 1, no defect).
        """
        bounds = self.config.hq_skip
        a = 1.0 if alignment is None else float(alignment.score)
        defects = [] if alignment is None else alignment.defects
        if perceptual.score >= bounds.p_bound and a >= bounds.a_bound and not defects:
            return (
                f"high-quality image: p={perceptual.score:.3f} >= {bounds.p_bound}, "
                f"a={a:.3f} >= {bounds.a_bound} and no alignment defect (hq_skip): "
                "returned unchanged"
            )
        return None

    @staticmethod
    def _stage1_skip_reason(mask: MaskResult | None) -> str | None:
        if mask is None:
            return "no mask: fuser slot inactive"
        if mask.empty:
            return "empty mask: nothing to refine"
        return None

    def _skip(self, slot: str, ctx: RunContext, trace: list[StageRecord], reason: str) -> None:
        record = StageRecord(slot, self.slot_plugin(slot), None, "skipped", reason=reason)
        if record.plugin:
            record.version = self.host.plugin_version(record.plugin)
        trace.append(record)
        self.host.hook.grefine_stage_end(context=ctx, record=record)

    def _call_slot(
        self, slot: str, ctx: RunContext, trace: list[StageRecord], **kwargs: Any
    ) -> Any:
        name, caller = self._slots[slot]
        if name is None:
            self._skip(slot, ctx, trace, caller)
            return None
        record = StageRecord(slot, name, self.host.plugin_version(name), "ran", seed=ctx.seed)
        ctx.slot = slot
        self.host.hook.grefine_stage_start(context=ctx, slot=slot, plugin=name)
        start = time.perf_counter()
        try:
            value = caller(**kwargs)
            if value is None:
                raise PluginError(
                    f"plugin {name!r} returned nothing for slot {slot!r} (its hook returned None)",
                    plugin=name,
                    slot=slot,
                )
            value = self._validate(slot, name, value, kwargs)
        except Exception as e:
            record.status, record.seconds = "failed", time.perf_counter() - start
            record.reason = f"{type(e).__name__}: {e}"
            trace.append(record)
            self.host.hook.grefine_stage_end(context=ctx, record=record)
            error = _attribute(e, name, slot)
            if error is e:
                raise
            raise error from e
        finally:
            ctx.slot = None
        record.seconds = time.perf_counter() - start
        record.info = dict(getattr(value, "info", {}) or {})
        trace.append(record)
        self.host.hook.grefine_stage_end(context=ctx, record=record)
        return value

    def _validate(self, slot: str, name: str, value: Any, kwargs: dict[str, Any]) -> Any:
        image = kwargs.get("image")
        if slot == "perceptual":
            return validation.check_perceptual(value, (image.height, image.width), name)
        if slot == "alignment":
            return validation.check_alignment(value, (image.height, image.width), name)
        if slot == "fuser":
            shape = kwargs["perceptual"].map.shape
            return validation.check_mask(value, tuple(shape), name)
        if slot in ("stage1", "stage2"):
            return validation.check_stage(value, image.size, name, slot)
        return value


#: Seeds go to ``torch.Generator.manual_seed`` (at most 2**64 - 1) after adding the item index.
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> int:
    """The seed as an int in ``[0, 2**63 - 1]``.

    :raises UsageError: anything else (one line naming the value and the range).
    """
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise UsageError(f"seed must be an integer, got {seed!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise UsageError(f"seed must be between 0 and {MAX_SEED} (2**63 - 1), got {value}")
    return value


def _attribute(error: Exception, plugin: str, slot: str) -> GRefineError:
    """Name the plugin and slot in an error raised inside a plugin."""
    if isinstance(error, PluginError) and error.plugin:
        return error
    if isinstance(error, GRefineError):
        error.args = (f"plugin {plugin!r} (slot {slot!r}): {error}",)
        error.plugin, error.slot = plugin, slot  # type: ignore[attr-defined]
        return error
    return PluginError(
        f"plugin {plugin!r} failed in slot {slot!r}: {type(error).__name__}: {error}",
        plugin=plugin,
        slot=slot,
    )
