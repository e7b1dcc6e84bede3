"""``grefine serve``: a web page (Gradio) to see where and why an image is bad, and fix it.

Upload an image (its prompt typed, or read from its A1111 / ComfyUI metadata), pick a preset and
the plugins to disable, and *Analyse*: P, A_defect and the mask as overlays with colour bars, p and
a, the prompt's phrases with the defective ones highlighted, the emphasised prompt. The tau and
dilation sliders re-fuse the mask from the kept maps (:func:`grefine_core.app.refuse.refuse`, no
map recomputed). *Refine* runs the two stages on the same assessment (one at a time: others wait
in Gradio's queue, their position shown), then a before/after slider and the refined PNG and JSON
report to download. docs/ui.md explains the choices.

Models load once per server (one model cache shared by every preset and toggle). Everything the
server writes (Gradio's upload cache included) stays in its own temporary folder, removed on exit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from grefine_core.errors import GRefineError, UsageError
from grefine_core.markers import hookimpl

#: What the page accepts (by decoded content, not by name) and how much.
MAX_UPLOAD_MB = 25
MIN_SIDE = 16
DEFAULT_PORT = 7860


@dataclass
class Analysis:
    """One page's assessment, kept in its session (``gr.State``): the maps are reused by every
    slider move and by *Refine*."""

    path: str
    prompt: str
    preset: str
    disabled: tuple[str, ...]
    seed: int
    result: Any
    fuser: dict[str, Any] = field(default_factory=dict)


class Server:
    """The state of one ``grefine serve``: pipelines by (preset, disabled, settings), one model
    cache, the temp folder; a lock so that one refinement runs at a time on the device."""

    def __init__(self, preset: str = "paper", temp_dir: str | None = None) -> None:
        from grefine_core.context import ModelCache

        self.default_preset = preset
        self.temp = Path(temp_dir or tempfile.mkdtemp(prefix="grefine-serve-"))
        self.models = ModelCache()
        self._pipelines: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self.refine_lock = threading.Lock()

    # ------------------------------------------------------------------ pipelines
    def pipeline(self, preset: str, disabled: tuple[str, ...] = (), settings: Any = None) -> Any:
        """The pipeline of ``preset`` with ``disabled`` plugins and ``settings`` overrides
        (``{"plugins": {...}}``), built once; all share the server's models."""
        from grefine_core.config import load_config
        from grefine_core.pipeline import GRefine

        overrides = {"disable": list(disabled), **(settings or {})}
        key = (preset, disabled, repr(sorted((settings or {}).items())))
        with self._lock:
            if key not in self._pipelines:
                config = load_config(preset=preset, overrides=overrides)
                self._pipelines[key] = GRefine(config, models=self.models)
            return self._pipelines[key]

    def plugins_of(self, preset: str) -> list[str]:
        """The plugins filling the preset's slots (what the page lets the user disable)."""
        from grefine_core.types import SLOTS

        pipe = self.pipeline(preset)
        return [name for name in dict.fromkeys(pipe.slot_plugin(s) for s in SLOTS) if name]

    # ------------------------------------------------------------------ the page's actions
    def read_upload(self, path: str | None) -> tuple[str, str]:
        """``(prompt from metadata or "", message)`` for an uploaded file, checked as grefine
        checks inputs (decoded, not judged by its name).

        :raises ValueError: a message for the page (not an image, too small, too large).
        """
        from grefine_core.app.inputs import metadata_prompt
        from grefine_core.imageio import load_image

        if not path:
            raise ValueError("upload an image first")
        size = os.path.getsize(path)
        if size > MAX_UPLOAD_MB * 1024 * 1024:
            raise ValueError(f"the file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_MB} MB")
        try:
            image, _ = load_image(path, self.pipeline(self.default_preset).config.image)
        except GRefineError as e:
            raise ValueError(_short(e, path)) from None
        if min(image.size) < MIN_SIDE:
            raise ValueError(
                f"the image is {image.width}x{image.height} px; grefine needs at least "
                f"{MIN_SIDE}x{MIN_SIDE}"
            )
        found = metadata_prompt(Path(path))
        name = Path(path).name
        if found:
            return found[0], f"{name}: prompt read from the image's {found[1]} metadata"
        return "", f"{name}: {image.width}x{image.height} image; no prompt in its metadata: type it"

    def analyse(
        self, path: str, prompt: str, preset: str, disabled: list[str], seed: int
    ) -> Analysis:
        """Assess the upload (the first part of a run, ``GRefine.start``; no stage runs)."""
        self.read_upload(path)
        pipe = self.pipeline(preset, tuple(sorted(disabled)))
        result = pipe.start(path, prompt, mode="refine", name=Path(path).stem, seed=int(seed))
        fuser = {}
        if pipe.slot_plugin("fuser") is not None:
            from grefine_core.app.refuse import fuser_settings

            fuser = fuser_settings(pipe)[1].model_dump()
        return Analysis(path, prompt, preset, tuple(sorted(disabled)), int(seed), result, fuser)

    def remask(self, analysis: Analysis, tau: float, dilate_px: int) -> Any:
        """The mask of ``analysis`` with the sliders' tau and dilation (maps reused)."""
        from grefine_core.app.refuse import refuse

        pipe = self.pipeline(analysis.preset, analysis.disabled)
        return refuse(pipe, analysis.result, **self._fuser_changes(analysis, tau, dilate_px))

    @staticmethod
    def _fuser_changes(analysis: Analysis, tau: float, dilate_px: int) -> dict[str, Any]:
        known = analysis.fuser
        changes = {"tau": float(tau), "dilate_px": int(dilate_px)}
        return {k: v for k, v in changes.items() if k in known}

    def refine(
        self,
        analysis: Analysis,
        tau: float,
        dilate_px: int,
        strength: float | None,
        progress: Any = None,
    ) -> tuple[Any, Path, Path]:
        """Run both stages on the analysed item with the sliders' settings; ``(result, png,
        json)`` written into a fresh folder of the server's temp folder."""
        from grefine_core.app.refuse import refuse, with_mask
        from grefine_core.app.saving import save_result

        base = self.pipeline(analysis.preset, analysis.disabled)
        plugins: dict[str, Any] = {}
        section = None
        if base.slot_plugin("fuser") is not None:
            from grefine_core.app.refuse import fuser_settings

            section = fuser_settings(base)[0]
            plugins[section] = self._fuser_changes(analysis, tau, dilate_px)
        if strength is not None and base.slot_plugin("stage1") == "sdxl":
            plugins["sdxl"] = {"strength": float(strength), "strength_mode": "fixed"}
        pipe = self.pipeline(analysis.preset, analysis.disabled, {"plugins": plugins})
        # A copy: the analysis stays as it was for the next slider move or Refine.
        mask = refuse(pipe, analysis.result) if section is not None else analysis.result.mask
        result = with_mask(analysis.result, mask)
        # The report must say how this output was made: the sliders' settings, not the analysis's.
        result.fingerprint = pipe.fingerprint(
            analysis.path, analysis.prompt, analysis.seed, "refine"
        )
        observer = _ProgressObserver(progress)
        pipe.host.pm.register(observer)
        try:
            with self.refine_lock:  # one refinement at a time on the device
                for slot in ("stage1", "stage2"):
                    pipe.advance(result, slot)
        finally:
            pipe.host.pm.unregister(observer)
        out = self.temp / "results" / uuid.uuid4().hex[:12]
        paths = save_result(result, out, Path(analysis.path).stem, maps="none")
        return result, paths["image"], paths["json"]

    def close(self) -> None:
        """Remove the server's temp folder (uploads, results)."""
        shutil.rmtree(self.temp, ignore_errors=True)


class _ProgressObserver:
    """Stage progress into Gradio's progress bar."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress

    @hookimpl
    def grefine_stage_progress(self, context: Any, slot: str, step: int, total: int) -> None:
        if self.progress is not None and total:
            self.progress(step / total, desc=f"{slot}: step {step}/{total}")


def _short(error: Exception, path: str) -> str:
    """A page message: the error with the temp path replaced by "the upload"."""
    return str(error).replace(repr(str(path)), "the upload").replace(str(path), "the upload")


# --------------------------------------------------------------------------- pictures


def map_pictures(result: Any, mask: Any) -> dict[str, Image.Image | None]:
    """The three overlays with their colour bars in words (as in ``overview.png``)."""
    from grefine_core.app.saving import NEEDS_FIXING
    from grefine_core.app.visual import (
        ColourBar,
        Panel,
        defect_colours,
        grey_colours,
        overlay,
        overview,
        quality_colours,
    )

    image = result.input_image
    out: dict[str, Image.Image | None] = {"P": None, "A": None, "mask": None}
    if not result.perceptual.neutral:
        bar = ColourBar("0: needs fixing", "1: good", quality_colours, f"1 - P: {NEEDS_FIXING}")
        panel = Panel(f"P (p={result.p:.3f})", overlay(image, result.P, 0.5, quality_colours), bar)
        out["P"] = overview([panel], height=320)
    if result.alignment is not None:
        bar = ColourBar("0: fine", "1: needs fixing", defect_colours, NEEDS_FIXING)
        title = f"A_defect (a={result.alignment.score:.3f})"
        panel = Panel(title, overlay(image, result.A_defect, 0.5, defect_colours), bar)
        out["A"] = overview([panel], height=320)
    if mask is not None:
        bar = ColourBar("0: kept", "1: repainted", grey_colours, "white: stage 1 repaints")
        picture = overlay(image, mask.soft, 0.6, grey_colours)
        out["mask"] = overview([Panel(f"mask: {mask.fraction:.1%}", picture, bar)], height=320)
    return out


def phrase_highlights(result: Any) -> list[tuple[str, str | None]]:
    """The prompt as ``(text, label)`` pieces: each phrase labelled ``ok`` or its defect kind."""
    prompt = result.prompt
    if result.alignment is None or result.parsed is None:
        return [(prompt, None)]
    spans = []
    for ph in result.alignment.phrases:
        start, end = ph.span
        spans.append((int(start), int(end), f"defect: {ph.defect}" if ph.defect else "ok"))
    pieces, pos = [], 0
    for start, end, label in sorted(spans):
        if start < pos:  # a nested phrase: its parent's label stands
            continue
        if start > pos:
            pieces.append((prompt[pos:start], None))
        pieces.append((prompt[start:end], label))
        pos = end
    if pos < len(prompt):
        pieces.append((prompt[pos:], None))
    return pieces


def scores_text(result: Any, mask: Any) -> str:
    """p, a, the HQ decision, the defects and the emphasised prompt, as Markdown."""
    lines = [f"**p** = {result.p:.3f}"]
    if result.alignment is not None:
        lines.append(f"**a** = {result.alignment.score:.3f}")
        defects = [f"{d.text} ({d.defect})" for d in result.alignment.defects]
        lines.append("**defects:** " + (", ".join(defects) if defects else "none"))
        lines.append(f"**emphasised prompt:** `{result.alignment.emphasised_prompt}`")
    if mask is not None:
        lines.append(f"**mask:** {mask.fraction:.1%} of pixels")
    if result.high_quality:
        lines.append(f"**high quality:** {result.high_quality}")
    lines.extend(f"_{notice}_" for notice in result.notices)
    return "  \n".join(lines)


# --------------------------------------------------------------------------- the page


def build_app(server: Server) -> Any:
    """The Gradio Blocks of the page (not launched)."""
    import gradio as gr

    from grefine_core.config import preset_names

    presets = preset_names()

    stale = (None, gr.update(interactive=False))  # a new input: the old analysis is gone

    def on_upload(path):
        try:
            prompt, message = server.read_upload(path)
        except ValueError as e:
            return gr.update(), f"⚠️ {e}", gr.update(value=None), *stale
        return (gr.update(value=prompt) if prompt else gr.update()), message, path, *stale

    def on_preset(preset):
        return gr.update(choices=server.plugins_of(preset), value=[]), *stale

    def on_analyse(path, prompt, preset, disabled, seed):
        keep = gr.update()
        try:
            analysis = server.analyse(path, prompt or "", preset, disabled or [], seed)
        except (ValueError, GRefineError) as e:
            message = _short(e, path) if path else str(e)
            off = gr.update(interactive=False)
            return None, f"⚠️ {message}", None, None, None, [], off, keep, keep
        mask = analysis.result.mask  # the preset's own settings; the sliders start from them
        pics = map_pictures(analysis.result, mask)
        text = scores_text(analysis.result, mask)
        highlights = phrase_highlights(analysis.result)
        refine = gr.update(interactive=True)
        tau = gr.update(value=analysis.fuser["tau"]) if "tau" in analysis.fuser else keep
        dilate = (
            gr.update(value=analysis.fuser["dilate_px"]) if "dilate_px" in analysis.fuser else keep
        )
        return analysis, text, pics["P"], pics["A"], pics["mask"], highlights, refine, tau, dilate

    def on_slider(analysis, tau, dilate):
        if analysis is None or not analysis.fuser:
            return gr.update(), gr.update()
        try:
            mask = server.remask(analysis, tau, dilate)
        except GRefineError as e:
            return gr.update(), f"⚠️ {e}"
        return map_pictures(analysis.result, mask)["mask"], scores_text(analysis.result, mask)

    def on_refine(analysis, tau, dilate, fixed, strength, progress=gr.Progress()):
        if analysis is None:
            return None, "⚠️ analyse an image first", None, None
        try:
            result, png, report = server.refine(
                analysis, tau, dilate, float(strength) if fixed else None, progress
            )
        except GRefineError as e:
            return None, f"⚠️ {e}", None, None
        status = "refined" if result.refined else "unchanged"
        if result.high_quality:
            status = "unchanged: high quality"
        before_after = (result.input_image, result.image)
        return (
            before_after,
            f"**{status}**  \n" + scores_text(result, result.mask),
            str(png),
            str(report),
        )

    # Gradio's own cache (uploads, outputs) is swept hourly of files older than an hour.
    with gr.Blocks(title="grefine", delete_cache=(3600, 3600)) as app:
        gr.Markdown("# G-Refine: where is the image bad, and why?")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="image", file_types=["image"], elem_id="upload")
                preview = gr.Image(label="input", type="filepath", interactive=False, height=240)
                message = gr.Markdown(elem_id="message")
                prompt = gr.Textbox(label="prompt", lines=2, elem_id="prompt")
                preset = gr.Dropdown(
                    presets, value=server.default_preset, label="preset", elem_id="preset"
                )
                disabled = gr.CheckboxGroup(
                    server.plugins_of(server.default_preset), label="disable plugins"
                )
                seed = gr.Number(0, label="seed", precision=0)
                analyse = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=2):
                scores = gr.Markdown(elem_id="scores")
                phrases = gr.HighlightedText(label="prompt phrases", elem_id="phrases")
                with gr.Row():
                    p_map = gr.Image(label="P", format="png", interactive=False, elem_id="p-map")
                    a_map = gr.Image(label="A_defect", format="png", interactive=False)
                    mask = gr.Image(label="mask", format="png", interactive=False, elem_id="mask")
                with gr.Row():
                    tau = gr.Slider(0, 1, 0.5, step=0.01, label="tau", elem_id="tau")
                    dilate = gr.Slider(0, 64, 4, step=1, label="mask dilation (px)")
                with gr.Row():
                    fixed = gr.Checkbox(False, label="fixed strength (else from the scores)")
                    strength = gr.Slider(0, 1, 0.6, step=0.05, label="strength")
                refine = gr.Button("Refine", interactive=False, elem_id="refine")
                compare = gr.ImageSlider(label="before / after", format="png", elem_id="compare")
                result_text = gr.Markdown(elem_id="result")
                with gr.Row():
                    png = gr.File(label="refined PNG", elem_id="png")
                    report = gr.File(label="JSON report", elem_id="report")
        upload.change(on_upload, upload, [prompt, message, preview, state, refine])
        preset.change(on_preset, preset, [disabled, state, refine])
        prompt.input(lambda: stale, None, [state, refine])  # typed: analyse again first
        analyse.click(
            on_analyse,
            [upload, prompt, preset, disabled, seed],
            [state, scores, p_map, a_map, mask, phrases, refine, tau, dilate],
            concurrency_limit=1,
        )
        for slider in (tau, dilate):
            slider.change(on_slider, [state, tau, dilate], [mask, scores], show_progress="hidden")
        refine.click(
            on_refine,
            [state, tau, dilate, fixed, strength],
            [compare, result_text, png, report],
            concurrency_limit=1,  # one refinement at a time per GPU; the queue shows positions
        )
    return app


def require_gradio() -> None:
    """:raises UsageError: (exit 2) Gradio is not installed."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError(
            "grefine serve needs Gradio, which is not installed: pip install 'grefine[ui]'"
        ) from None


def serve(
    preset: str = "paper",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    block: bool = True,
) -> tuple[Any, Server]:
    """Start the page; with ``block=False`` return ``(app, server)`` running in a thread.

    Gradio's upload cache is pointed at the server's own temp folder (``GRADIO_TEMP_DIR``), never
    shared with other Gradio apps; it is removed when the server stops.
    """
    server = Server(preset)
    os.environ["GRADIO_TEMP_DIR"] = str(server.temp / "gradio")  # before gradio's import
    require_gradio()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        app = build_app(server)
        app.queue(default_concurrency_limit=1)
        app.launch(
            server_name=host,
            server_port=port,
            max_file_size=f"{MAX_UPLOAD_MB}mb",
            prevent_thread_lock=not block,
            show_error=False,
            allowed_paths=[str(server.temp)],
        )
    except BaseException:
        server.close()
        raise
    if block:
        server.close()
    return app, server
