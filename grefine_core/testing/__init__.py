"""Helpers for plugin authors' tests: temporary registration and fake slot plugins.

The fakes work on small numpy arrays, need no model weights and no torch, and fill every slot, so
a test can run the whole pipeline (or the CLI) in milliseconds and swap in the one plugin it tests::

    from grefine_core.testing import fake_config, fake_plugins
    from grefine_core.pipeline import GRefine

    cfg = fake_config(select={"stage1": "my_refiner"})
    result = GRefine(cfg, extra_plugins={**fake_plugins(), "my_refiner": MyRefiner()}).refine(img, "a cat")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from grefine_core.config import GRefineConfig, load_config
from grefine_core.context import ModelCache as _ModelCache
from grefine_core.context import RunContext as _RunContext
from grefine_core.markers import hookimpl
from grefine_core.plugins import SLOT_HOOKS
from grefine_core.types import (
    AlignmentResult,
    Emphasis,
    MaskResult,
    ParsedPrompt,
    PerceptualResult,
    Phrase,
    PhraseAlignment,
    StageOutput,
)

FAKE_SELECT = {
    "perceptual": "fake_pq",
    "parser": "fake_parser",
    "alignment": "fake_aq",
    "fuser": "fake_fuser",
    "stage1": "fake_stage1",
    "stage2": "fake_stage2",
}


def fake_select_args(**overrides: str) -> list[str]:
    """CLI arguments (``--select SLOT=PLUGIN`` ...) pointing every slot at the fakes;
    ``overrides`` replace single slots, e.g. ``fake_select_args(stage1="my_refiner")``."""
    args: list[str] = []
    for slot, plugin in {**FAKE_SELECT, **overrides}.items():
        args += ["--select", f"{slot}={plugin}"]
    return args


@contextmanager
def registered_plugin(name: str, plugin: Any) -> Iterator[Any]:
    """Register ``plugin`` under ``name`` for every :class:`PluginHost` created inside the block
    (the CLI included), as a real entry point (see :func:`registered_plugins`)."""
    with registered_plugins({name: plugin}):
        yield plugin


@contextmanager
def registered_fakes(**overrides: Any) -> Iterator[dict[str, Any]]:
    """Register every fake plugin (``fake_plugins()`` plus ``overrides``) for the block."""
    fakes = {**fake_plugins(), **overrides}
    with registered_plugins(fakes):
        yield fakes


@contextmanager
def registered_plugins(plugins: Mapping[str, Any]) -> Iterator[None]:
    """Install ``{name: plugin}`` for the block as the ``grefine`` entry points of a temporary
    distribution (``grefine-registered-<id>``) at the front of ``sys.path``.

    The plugins then come in exactly as an installed plugin does (discovery, blocking when
    disabled, loading, ``grefine plugins``), and the kernel keeps no registry of its own. A name
    that an installed plugin also has is overridden for the block.
    """
    import importlib
    import sys
    import tempfile
    import types
    import uuid
    from pathlib import Path

    token = uuid.uuid4().hex[:12]
    module_name = f"_grefine_registered_{token}"
    module = types.ModuleType(module_name)
    lines = ["[grefine]"]
    for i, (name, plugin) in enumerate(plugins.items()):
        setattr(module, f"plugin_{i}", plugin)
        lines.append(f"{name} = {module_name}:plugin_{i}")
    with tempfile.TemporaryDirectory(prefix="grefine-registered-") as tmp:
        info = Path(tmp) / f"grefine_registered_{token}-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: grefine-registered-{token}\nVersion: 0\n"
        )
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        sys.modules[module_name] = module
        sys.path.insert(0, tmp)
        importlib.invalidate_caches()
        try:
            yield
        finally:
            sys.path.remove(tmp)
            sys.modules.pop(module_name, None)
            importlib.invalidate_caches()


def fake_config(
    select: Mapping[str, str] | None = None, disable: list[str] | None = None, **fields: Any
) -> GRefineConfig:
    """The ``tiny`` preset re-pointed at the fake plugins (plus ``select``/``disable`` changes)."""
    cfg = load_config(preset="tiny", environ={})
    cfg.select = {**FAKE_SELECT, **(select or {})}
    cfg.disable = list(disable or [])
    for key, value in fields.items():
        setattr(cfg, key, value)
    return cfg


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


class FakePerceptual:
    """P = brightness (dark pixels look "bad"), p = mean brightness."""

    @hookimpl
    def grefine_perceptual_map(self, image: Image.Image, context: Any) -> PerceptualResult:
        P = _gray(image)
        return PerceptualResult(
            score=float(P.mean()), map=P, factor_scores={"overall": float(P.mean())}
        )


class FakeParser:
    """Phrases split at commas and the words "and"/"with"; head noun = last word; parent = 0."""

    @hookimpl
    def grefine_parse_prompt(self, prompt: str, context: Any) -> ParsedPrompt:
        import re

        phrases: list[Phrase] = []
        cuts = [0]
        for sep in re.finditer(r",|\band\b|\bwith\b", prompt):
            cuts += [sep.start(), sep.end()]
        cuts.append(len(prompt))
        for begin, end in zip(cuts[::2], cuts[1::2]):
            text = prompt[begin:end].strip()
            if not text:
                continue
            start = prompt.index(text, begin)
            words = text.split()
            noun = words[-1]
            noun_start = start + text.rindex(noun)
            phrases.append(
                Phrase(
                    text, noun, (start, start + len(text)), 0, (noun_start, noun_start + len(noun))
                )
            )
        return ParsedPrompt(prompt=prompt, phrases=phrases, parser="fake_parser")


class FakeAlignment:
    """Phrase j scores 0.9 unless its noun is "missing"/"wrong"; defect maps are a centre square."""

    @hookimpl
    def grefine_alignment_map(
        self, image: Image.Image, parsed: ParsedPrompt, context: Any
    ) -> AlignmentResult:
        h, w = image.height, image.width
        square = np.zeros((h, w), np.float32)
        square[h // 4 : h - h // 4, w // 4 : w - w // 4] = 1.0
        results, emphasis = [], []
        for ph in parsed.phrases:
            bad = (ph.noun or "") in ("missing", "wrong")
            results.append(
                PhraseAlignment(
                    ph.text,
                    ph.noun,
                    ph.span,
                    ph.parent,
                    0.2 if bad else 0.9,
                    0.2 if bad else 0.9,
                    square,
                    square,
                    "noun" if bad else None,
                )
            )
            if bad:
                emphasis.append(Emphasis(ph.text, ph.span, 1.1))
        defect = square if emphasis else np.zeros((h, w), np.float32)
        score = 0.2 if emphasis else 0.9
        return AlignmentResult(
            score=score,
            defect_map=defect,
            phrases=results,
            emphasis=emphasis,
            prompt_score=score,
            emphasised_prompt=parsed.prompt,
        )


class FakeFuser:
    """Q = clip(1 - P + A_defect) binarised at 0.5 (the paper's Eq. 9 without feathering)."""

    @hookimpl
    def grefine_fuse_masks(
        self, perceptual: PerceptualResult, alignment: AlignmentResult | None, context: Any
    ) -> MaskResult:
        q = 1.0 - perceptual.map
        if alignment is not None:
            q = q + alignment.defect_map
        binary = np.clip(q, 0, 1) >= 0.5
        return MaskResult(
            soft=binary.astype(np.float32), binary=binary, fraction=float(binary.mean())
        )


class FakeStage1:
    """Brightens masked pixels by 64; unmasked pixels stay identical."""

    @hookimpl
    def grefine_refine_stage1(
        self, image: Image.Image, mask: MaskResult, context: Any
    ) -> StageOutput:
        arr = np.asarray(image).astype(np.int16)
        arr[mask.binary] = np.clip(arr[mask.binary] + 64, 0, 255)
        context.progress(1, 1)
        return StageOutput(Image.fromarray(arr.astype(np.uint8), "RGB"), {"strength": 1.0})


class FakeStage2:
    """Adds 1 to every pixel value (clipped)."""

    @hookimpl
    def grefine_refine_stage2(self, image: Image.Image, context: Any) -> StageOutput:
        arr = np.clip(np.asarray(image).astype(np.int16) + 1, 0, 255).astype(np.uint8)
        return StageOutput(Image.fromarray(arr, "RGB"), {"strength": 0.1})


class RaisingPlugin:
    """Fills ``slot`` by raising ``RuntimeError(message)`` (to test error reporting)."""

    def __init__(self, slot: str, message: str = "boom") -> None:
        import types

        self.slot, self.message = slot, message
        hook = SLOT_HOOKS[slot]
        setattr(self, hook, types.MethodType(_RAISERS[hook], self))


def _fail(plugin: RaisingPlugin) -> Any:
    raise RuntimeError(plugin.message)


@hookimpl
def _raise_perceptual(self: RaisingPlugin, image: Any, context: Any) -> Any:
    return _fail(self)


@hookimpl
def _raise_parser(self: RaisingPlugin, prompt: Any, context: Any) -> Any:
    return _fail(self)


@hookimpl
def _raise_alignment(self: RaisingPlugin, image: Any, parsed: Any, context: Any) -> Any:
    return _fail(self)


@hookimpl
def _raise_fuser(self: RaisingPlugin, perceptual: Any, alignment: Any, context: Any) -> Any:
    return _fail(self)


@hookimpl
def _raise_stage1(self: RaisingPlugin, image: Any, mask: Any, context: Any) -> Any:
    return _fail(self)


@hookimpl
def _raise_stage2(self: RaisingPlugin, image: Any, context: Any) -> Any:
    return _fail(self)


_RAISERS = {
    "grefine_perceptual_map": _raise_perceptual,
    "grefine_parse_prompt": _raise_parser,
    "grefine_alignment_map": _raise_alignment,
    "grefine_fuse_masks": _raise_fuser,
    "grefine_refine_stage1": _raise_stage1,
    "grefine_refine_stage2": _raise_stage2,
}


def fake_plugins() -> dict[str, Any]:
    """Fresh instances of every fake plugin, by name (see :data:`FAKE_SELECT`)."""
    return {
        "fake_pq": FakePerceptual(),
        "fake_parser": FakeParser(),
        "fake_aq": FakeAlignment(),
        "fake_fuser": FakeFuser(),
        "fake_stage1": FakeStage1(),
        "fake_stage2": FakeStage2(),
    }


def fake_pipeline(**fields: Any) -> Any:
    """A :class:`~grefine_core.pipeline.GRefine` on the fake plugins (``fields``: config fields)."""
    from grefine_core.pipeline import GRefine

    return GRefine(fake_config(**fields), extra_plugins=fake_plugins())


def make_test_image(
    width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0
) -> Image.Image:
    """A deterministic image: a dark left half and a bright, noisy right half."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, width // 2 :] = 200 + rng.integers(0, 40, size=(height, width - width // 2, 3))
    arr[:, : width // 2] = 30
    return Image.fromarray(arr, "RGB").convert(mode)


def standalone_context(config: GRefineConfig | None = None, seed: int = 0) -> _RunContext:
    """A context for calling a plugin directly (tests), with default settings."""
    cfg = config if config is not None else GRefineConfig()
    return _RunContext(config=cfg, models=_ModelCache(), plugin_settings={}, seed=seed)


def pipeline_context(config: GRefineConfig | None = None, seed: int = 0) -> _RunContext:
    """The context a pipeline of ``config`` (default: the ``tiny`` preset) hands its plugins:
    every installed plugin's settings validated, the backbones offered. For calling one
    plugin's hooks directly in a test."""
    from grefine_core.pipeline import GRefine

    pipeline = GRefine(config if config is not None else load_config(preset="tiny", environ={}))
    return pipeline.run_context(seed, "image", "")
