"""Hook specifications: the contract between the core and every plugin.

Each docstring is the contract. Rules that apply to every hook:

* Implementations take any subset of the spec's parameters, by name, and never give a parameter a
  default value (pluggy would silently never pass it; a meta-test enforces this).
* Slot hooks are ``firstresult``. The core calls only the plugin that ``select`` names for the slot
  (never "whichever registered last"), so returning ``None`` means "I do not handle this" and makes
  the core raise a clear error naming the plugin and the slot.
* Maps are float32 numpy arrays of shape ``(H, W)`` of the input image; the core validates shape,
  dtype and finiteness of every map a plugin returns and names the plugin when one is wrong.
* ``context`` is the :class:`grefine_core.context.RunContext` of the current image: settings,
  device, seed, the shared model cache, a per-run cache and progress reporting.

See ``docs/hooks.md`` for the same list with exact signatures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grefine_core.markers import hookspec

if TYPE_CHECKING:
    from collections.abc import Callable

    from PIL.Image import Image
    from pydantic import BaseModel

    from grefine_core.backbone import ClipBackbone
    from grefine_core.config import GRefineConfig
    from grefine_core.context import RunContext
    from grefine_core.types import (
        AlignmentResult,
        MaskResult,
        ParsedPrompt,
        PerceptualResult,
        StageOutput,
        StageRecord,
    )


# --------------------------------------------------------------------------- set-up phase


@hookspec(historic=True)
def grefine_add_hookspecs(pluginmanager: Any) -> None:
    """Add hooks of a plugin's own (pytest's ``addhooks`` pattern): call
    ``pluginmanager.add_hookspecs(module)`` with a module of ``@hookspec`` functions. Called once
    per plugin, right after it is registered (historic), before the host checks that every
    implemented hook has a spec. The evaluation's ``grefine_metrics`` hook is added this way.

    :returns: nothing; the return value is ignored.
    """


@hookspec(historic=True)
def grefine_configure(config: GRefineConfig) -> None:
    """Receive the validated configuration once, before the first run.

    Historic: a plugin registered later still receives the call. Use it to read global settings
    (device, dtype); heavy models should still be loaded lazily, on the first run that needs them.

    :param config: the validated :class:`~grefine_core.config.GRefineConfig`.
    :returns: nothing.
    """


@hookspec
def grefine_settings_models() -> dict[str, type[BaseModel]]:
    """Declare the settings sections this plugin reads.

    :returns: ``{section_name: PydanticModel}``. The core validates ``[plugins.<section_name>]`` of
        the configuration against the model at start-up (``extra="forbid"`` is expected, so typos
        fail loudly) and hands the instance out through ``context.settings(section_name)``. Two
        plugins may declare the same section only with the same model class.
    """


@hookspec
def grefine_weights(context: RunContext) -> list[dict[str, Any]]:
    """Declare the model weights this plugin would load for ``context``'s configuration (for
    ``grefine weights`` and the check before a run's first item). Called on the plugins that fill
    an active slot. A backbone factory (``grefine_backbones``) may carry its own as an attribute
    ``factory.weights(context)``, which the indicators that use the backbone include. Must not
    import torch nor touch the network: it runs before anything loads, first with the device as
    configured (``context.config.device`` may be ``"auto"``: reading ``context.device`` then
    imports torch), then again with it resolved.

    :param context: a run context of the configuration (its settings and device).
    :returns: one dict per weight (docs/weights.md): ``name`` (what it is), ``present`` (bool;
        for an ``hf://`` source the core checks the cache itself), ``source`` (``hf://org/repo``
        for a Hugging Face repository, a base ``https://`` URL, ``pip:<module>`` for a Python
        package, ``""`` for a local file), ``files`` (``{file or glob: sha256 or ""}``),
        ``target`` (the local folder it is read from; ``""`` = the Hugging Face cache), and
        optionally ``size``, ``licence``, ``how`` (the command to get it by hand), ``optional``.
    """


# --------------------------------------------------------------------------- slot hooks


@hookspec(firstresult=True)
def grefine_perceptual_map(image: Image, context: RunContext) -> PerceptualResult | None:
    """Slot ``perceptual``: the perceptual quality map P and score p (PQ-Map, paper Sec. 3.1).

    :param image: the input image, RGB, at its (possibly downscaled) working size ``(W, H)``.
    :param context: the run context.
    :returns: a :class:`~grefine_core.types.PerceptualResult` with ``map`` of shape ``(H, W)`` in
        [0, 1] (high = good) and ``score`` in [0, 1]; ``None`` means "not handled" (an error).
        When the slot is disabled the core uses ``P = 1`` and ``p = 1``.
    """


@hookspec(firstresult=True)
def grefine_parse_prompt(prompt: str, context: RunContext) -> ParsedPrompt | None:
    """Slot ``parser``: split the prompt into phrases with head nouns and parents (paper Eq. 4, Alg. 1).

    Only called when the alignment slot is active.

    :param prompt: the prompt, as given (may be long, non-ASCII, or without any noun).
    :param context: the run context (``grefine parse`` and ``GRefine.parse`` pass one too).
    :returns: a :class:`~grefine_core.types.ParsedPrompt`; every span inside the prompt, parents
        forming a forest. ``None`` means "not handled" (an error).
    """


@hookspec(firstresult=True)
def grefine_alignment_map(
    image: Image, parsed: ParsedPrompt, context: RunContext
) -> AlignmentResult | None:
    """Slot ``alignment``: the alignment defect map A_defect and score a (AQ-Map, paper Sec. 3.2).

    :param image: the input image, RGB, working size.
    :param parsed: the parser slot's output for the run's prompt.
    :param context: the run context (image features cached by the perceptual slot are in
        ``context.cache``).
    :returns: an :class:`~grefine_core.types.AlignmentResult` with ``defect_map`` of shape
        ``(H, W)`` in [0, 1]; ``None`` means "not handled" (an error). When the slot is disabled
        there is no alignment term.
    """


@hookspec(firstresult=True)
def grefine_fuse_masks(
    perceptual: PerceptualResult,
    alignment: AlignmentResult | None,
    context: RunContext,
) -> MaskResult | None:
    """Slot ``fuser``: fuse P and A_defect into the refinement mask (paper Eq. 9).

    :param perceptual: the PQ result, or the neutral ``P = 1`` stand-in when that slot is disabled
        (``perceptual.neutral`` is then True).
    :param alignment: the AQ result, or ``None`` when the alignment slot is disabled.
    :param context: the run context.
    :returns: a :class:`~grefine_core.types.MaskResult` (soft ``(H, W)`` in [0, 1], binary,
        fraction); ``None`` means "not handled" (an error).
    """


@hookspec(firstresult=True)
def grefine_refine_stage1(
    image: Image,
    mask: MaskResult,
    perceptual: PerceptualResult,
    alignment: AlignmentResult | None,
    prompt: str,
    context: RunContext,
) -> StageOutput | None:
    """Slot ``stage1``: masked refinement (SDXL inpainting by default, paper Eq. 10 first term).

    Not called for a high-quality image (``p`` and ``a`` at or above ``hq_skip``'s bounds and no
    alignment defect), nor when the mask is empty; the core records why. Pixels outside
    ``mask.binary`` must stay identical to the input.

    :param image: the input image, RGB, working size.
    :param mask: the fused mask (never empty here).
    :param perceptual: the PQ result (neutral when disabled).
    :param alignment: the AQ result or ``None``; ``alignment.emphasis`` lists spans to weight.
    :param prompt: the prompt.
    :param context: the run context; report denoising steps with ``context.progress(i, n)``.
    :returns: a :class:`~grefine_core.types.StageOutput` whose image has the input's size; ``None``
        means "not handled" (an error).
    """


@hookspec(firstresult=True)
def grefine_refine_stage2(image: Image, prompt: str, context: RunContext) -> StageOutput | None:
    """Slot ``stage2``: mild global refinement (PASD by default, paper Eq. 10 second term).

    Not called for a high-quality image (see ``grefine_refine_stage1``): such an image comes back
    pixel-identical to the input. It is called after an empty mask skipped stage 1.

    :param image: the stage-1 output (or the input when stage 1 was skipped), RGB.
    :param prompt: the prompt.
    :param context: the run context.
    :returns: a :class:`~grefine_core.types.StageOutput` of the same size; ``None`` means "not
        handled" (an error). When the slot is disabled the stage-1 output is final.
    """


# --------------------------------------------------------------------------- observers


@hookspec
def grefine_run_start(context: RunContext) -> None:
    """Observer: a run (one image) starts. ``context.item_name`` and ``context.seed`` are set.

    :returns: nothing; the return value is ignored.
    """


@hookspec
def grefine_run_end(context: RunContext, result: Any) -> None:
    """Observer: a run ends. ``result`` is the :class:`~grefine_core.result.RefineResult`.

    :returns: nothing; the return value is ignored.
    """


@hookspec
def grefine_stage_start(context: RunContext, slot: str, plugin: str) -> None:
    """Observer: the plugin ``plugin`` starts filling ``slot``.

    :returns: nothing; the return value is ignored.
    """


@hookspec
def grefine_stage_progress(context: RunContext, slot: str, step: int, total: int) -> None:
    """Observer: ``step`` of ``total`` units (e.g. denoising steps) of ``slot`` are done.

    :returns: nothing; the return value is ignored.
    """


@hookspec
def grefine_stage_end(context: RunContext, record: StageRecord) -> None:
    """Observer: a slot finished (ran, skipped or failed); ``record`` is its trace line.

    :returns: nothing; the return value is ignored.
    """


@hookspec
def grefine_backbones() -> dict[str, Callable[[RunContext], ClipBackbone]]:
    """Offer CLIP-shaped backbones (:class:`grefine_core.backbone.ClipBackbone`) by name:
    ``{name: factory}``. ``factory(context)`` returns the backbone for the context's settings;
    it should keep it in ``context.models`` under a key of every setting that shapes it, so that
    every caller of one configuration shares one instance. Indicators get one with
    ``context.backbone(name)``. A name two plugins offer with different factories is an error.

    :returns: the backbones this plugin offers.
    """


# --------------------------------------------------------------------------- commands


@hookspec
def grefine_register_commands() -> dict[str, tuple[str, Any]]:
    """Add subcommands to ``grefine``: ``{name: (one-line help, main)}``.

    ``main(argv: list[str]) -> int`` receives every argument after the command's name and parses
    them itself (its own ``--help``); it should import its heavy modules inside, since every
    plugin module is imported to list the commands. A name that a built-in command or another
    plugin already uses is an error naming both.

    :returns: the commands this plugin adds.
    """
