"""Stage 1 end to end on the tiny random-weight SDXL inpainting pipeline (CPU, offline)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from grefine_masks.ops import fuse_paper
from grefine_sdxl import plugin
from grefine_sdxl.settings import SDXLSettings
from PIL import Image

from grefine_core.config import load_config
from grefine_core.context import ModelCache, RunContext
from grefine_core.errors import InputError
from grefine_core.types import AlignmentResult, Emphasis, MaskResult, PerceptualResult

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def settings() -> SDXLSettings:
    """The tiny preset's section, with 2 steps to keep the tests quick."""
    raw = load_config(preset="tiny", environ={}).plugins["sdxl"]
    return SDXLSettings.model_validate({**raw, "steps": 2})


@pytest.fixture(scope="module")
def pipe(settings):
    """The tiny pipeline, loaded through the real loader. One torch thread: a 2 M-parameter model
    gains nothing from two, and on a shared 2-core machine oversubscription costs 5-30x."""
    from grefine_sdxl.loading import load_inpaint_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_inpaint_pipeline(settings)
    finally:
        torch.set_num_threads(threads)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def _mask(width: int, height: int, box: tuple[float, float, float, float]) -> MaskResult:
    """A paper mask from a P map that is bad inside ``box`` (fractions of the image)."""
    P = np.ones((height, width), np.float32)
    x0, y0, x1, y1 = box
    P[int(y0 * height) : int(y1 * height), int(x0 * width) : int(x1 * width)] = 0.0
    return fuse_paper(PerceptualResult(0.4, P), None, dilate_px=2, feather_sigma=1.5)


def _run(
    pipe,
    settings,
    image,
    mask,
    seed=0,
    alignment=None,
    p=0.4,
    progress=None,
    prompt="a red cat on a wooden table",
    **overrides,
):
    from grefine_sdxl.refine import refine_stage1

    s = settings.model_copy(update=overrides) if overrides else settings
    P = PerceptualResult(p, np.ones((image.height, image.width), np.float32))
    return refine_stage1(
        image,
        mask,
        P,
        alignment,
        prompt,
        s,
        get_pipeline=lambda: pipe,
        generator=torch.Generator("cpu").manual_seed(seed),
        seed=seed,
        progress=progress,
    )


SIZES = [(96, 96), (96, 160), (1536, 512), (333, 517)]  # square, portrait, panorama, odd


@pytest.mark.parametrize("size", SIZES, ids=["square", "portrait", "panorama", "odd"])
@pytest.mark.parametrize("path", ["crop", "full"])
def test_crop_and_full_paths_keep_size_and_untouched_pixels(pipe, settings, size, path):
    w, h = size
    image = _image(w, h)
    mask = _mask(w, h, (0.3, 0.35, 0.45, 0.55))
    assert mask.fraction < 0.5
    out = _run(pipe, settings, image, mask, crop_to_mask=(path == "crop"))
    assert out.image.size == (w, h) and out.image.mode == "RGB"
    info = out.info
    assert info["path"] == path and not info["skipped"]
    ww, wh = info["working_size"]
    assert ww % 8 == 0 and wh % 8 == 0 and max(ww, wh) <= 64  # tiny native size
    before, after = np.asarray(image), np.asarray(out.image)
    outside = ~mask.binary
    np.testing.assert_array_equal(after[outside], before[outside])
    assert (after[mask.binary] != before[mask.binary]).any()
    x0, y0, x1, y1 = info["crop_box"]
    if path == "crop":
        assert (x1 - x0) * (y1 - y0) < w * h
        assert mask.binary[y0:y1, x0:x1].sum() == mask.binary.sum()
    else:
        assert (x0, y0, x1, y1) == (0, 0, w, h)


def test_info_records_strength_seed_and_steps(pipe, settings):
    image, mask = _image(96, 96), _mask(96, 96, (0.2, 0.2, 0.5, 0.5))
    aq = AlignmentResult(0.8, np.zeros((96, 96), np.float32))
    out = _run(pipe, settings, image, mask, seed=7, alignment=aq, p=0.4)
    info = out.info
    assert info["quality"] == pytest.approx(0.6)
    assert info["strength"] == pytest.approx(0.3 + 0.6 * 0.4)
    assert info["seed"] == 7 and info["steps"] == 2 and info["steps_run"] >= 1
    assert info["emphasised_prompt"] == "a red cat on a wooden table"
    assert info["device"] == "cpu" and info["dtype"] == "float32"  # where the UNet really ran


def test_same_seed_same_output_other_seed_differs(pipe, settings):
    image, mask = _image(96, 96), _mask(96, 96, (0.2, 0.2, 0.6, 0.6))
    a = np.asarray(_run(pipe, settings, image, mask, seed=3).image)
    b = np.asarray(_run(pipe, settings, image, mask, seed=3).image)
    c = np.asarray(_run(pipe, settings, image, mask, seed=4).image)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_saved_and_reloaded_tiny_pipeline_equals_the_in_memory_one(pipe, settings):
    from grefine_sdxl.loading import prepare_pipeline
    from grefine_sdxl.tiny import build_tiny_pipeline

    in_memory = prepare_pipeline(build_tiny_pipeline(), "cpu", False, False)
    image = _image(64, 64)
    mask_img = Image.fromarray(np.pad(np.full((24, 24), 255, np.uint8), 20), "L")
    outs = [
        p(
            prompt="a red cat",
            image=image,
            mask_image=mask_img,
            height=64,
            width=64,
            strength=0.8,
            num_inference_steps=3,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
        ).images[0]
        for p in (in_memory, pipe)
    ]
    np.testing.assert_array_equal(outs[0], outs[1])
    mask = _mask(96, 96, (0.2, 0.2, 0.5, 0.5))
    a = _run(in_memory, settings, _image(96, 96), mask).image
    b = _run(pipe, settings, _image(96, 96), mask).image
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_all_zero_mask_returns_the_input_and_says_why(pipe, settings):
    image = _image(40, 30)
    empty = MaskResult(np.zeros((30, 40), np.float32), np.zeros((30, 40), bool), 0.0)
    out = _run(pipe, settings, image, empty)
    assert out.info["skipped"] and "empty mask" in out.info["reason"]
    np.testing.assert_array_equal(np.asarray(out.image), np.asarray(image))


def test_all_one_mask_refines_the_whole_image(pipe, settings):
    image = _image(50, 37)  # sides not multiples of 8
    full = MaskResult(np.ones((37, 50), np.float32), np.ones((37, 50), bool), 1.0)
    out = _run(pipe, settings, image, full)
    assert out.info["path"] == "full" and out.image.size == (50, 37)
    assert (np.asarray(out.image) != np.asarray(image)).mean() > 0.5


def test_tiny_and_odd_inputs(pipe, settings):
    for w, h in [(9, 13), (333, 517)]:
        image = _image(w, h).convert("L")  # any mode: stage 1 works in RGB
        mask = MaskResult(np.ones((h, w), np.float32), np.ones((h, w), bool), 1.0)
        assert _run(pipe, settings, image, mask).image.size == (w, h)


def test_bad_masks_are_rejected(pipe, settings):
    image = _image(40, 30)
    wrong = MaskResult(np.ones((40, 30), np.float32), np.ones((40, 30), bool), 1.0)
    with pytest.raises(InputError, match=r"mask.soft has shape \(40, 30\).*\(30, 40\)"):
        _run(pipe, settings, image, wrong)
    nan = np.ones((30, 40), np.float32)
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        _run(pipe, settings, image, MaskResult(nan, np.ones((30, 40), bool), 1.0))


def test_nothing_changes_outside_binary_even_if_soft_spills(pipe, settings):
    image = _image(64, 48)
    soft = np.full((48, 64), 0.7, np.float32)  # a sloppy third-party fuser
    binary = np.zeros((48, 64), bool)
    binary[10:30, 10:40] = True
    out = _run(pipe, settings, image, MaskResult(soft, binary, float(binary.mean())))
    before, after = np.asarray(image), np.asarray(out.image)
    np.testing.assert_array_equal(after[~binary], before[~binary])
    assert (after[binary] != before[binary]).any()
    with pytest.raises(InputError, match="mask.binary has shape"):
        _run(pipe, settings, image, MaskResult(soft, binary[:10], 0.1))


def test_literal_zero_strength_skips(pipe, settings):
    image, mask = _image(48, 48), _mask(48, 48, (0.2, 0.2, 0.5, 0.5))
    out = _run(pipe, settings, image, mask, p=0.0, strength_mode="literal")
    assert out.info["skipped"] and "strength" in out.info["reason"]


def test_progress_is_reported_per_denoising_step(pipe, settings):
    calls: list[tuple[int, int]] = []
    image, mask = _image(64, 64), _mask(64, 64, (0.2, 0.2, 0.6, 0.6))
    out = _run(pipe, settings, image, mask, progress=lambda i, n: calls.append((i, n)), steps=5)
    n = out.info["steps_run"]
    assert n >= 2 and calls == [(i, n) for i in range(1, n + 1)]


def test_emphasis_modes_change_the_conditioning(pipe, settings):
    image, mask = _image(64, 64), _mask(64, 64, (0.2, 0.2, 0.6, 0.6))
    prompt = "a red cat on a wooden table"
    aq = AlignmentResult(
        0.3, np.zeros((64, 64), np.float32), emphasis=[Emphasis("wooden table", (15, 27), 1.5)]
    )
    plain = _run(pipe, settings, image, mask, alignment=aq, emphasis="none")
    weighted = _run(pipe, settings, image, mask, alignment=aq)
    suffix = _run(pipe, settings, image, mask, alignment=aq, emphasis="suffix")
    assert weighted.info["emphasised_prompt"] == "a red cat on a (wooden table)1.5"
    assert suffix.info["emphasised_prompt"] == prompt + ", high quality, hyper detail"
    assert plain.info["emphasised_prompt"] == prompt
    a, b, c = (np.asarray(o.image) for o in (plain, weighted, suffix))
    assert (a != b).any() and (a != c).any()
    # w = 0 through the whole stage: identical to no emphasis at all
    aq0 = AlignmentResult(0.3, aq.defect_map, emphasis=[Emphasis("wooden table", (15, 27), 1.0)])
    w0 = _run(pipe, settings, image, mask, alignment=aq0)
    np.testing.assert_array_equal(np.asarray(w0.image), a)
    neg = _run(pipe, settings, image, mask, alignment=aq, negative_prompt="blurry")
    assert (np.asarray(neg.image) != b).any()


LONG = ", ".join(["a red cat on a wooden table"] * 14)  # 111 CLIP tokens


def test_no_defect_or_w0_is_the_pipelines_own_conditioning_for_any_length(pipe, settings, caplog):
    image, mask = _image(64, 64), _mask(64, 64, (0.2, 0.2, 0.6, 0.6))
    none = AlignmentResult(0.3, np.zeros((64, 64), np.float32))
    w0 = AlignmentResult(0.3, none.defect_map, emphasis=[Emphasis("red cat", (2, 9), 1.0)])
    with caplog.at_level("WARNING", logger="grefine.sdxl"):
        runs = [
            _run(pipe, settings, image, mask, alignment=al, emphasis=mode, prompt=LONG)
            for al, mode in ((none, "weight"), (w0, "weight"), (none, "none"))
        ]
    assert all(r.info["conditioning"] == "pipeline" for r in runs)
    first = np.asarray(runs[0].image)
    assert all(np.array_equal(np.asarray(r.image), first) for r in runs[1:])
    info = runs[0].info
    assert info["prompt_tokens"] == 111 and info["prompt_truncated"] is True
    assert "the prompt has 111 CLIP tokens" in caplog.text and "every emphasis mode" in caplog.text


def test_every_emphasis_mode_cuts_at_the_same_window(pipe, settings):
    image, mask = _image(64, 64), _mask(64, 64, (0.2, 0.2, 0.6, 0.6))
    aq = AlignmentResult(
        0.3, np.zeros((64, 64), np.float32), emphasis=[Emphasis("red cat", (2, 9), 1.1)]
    )
    kept = {
        mode: _run(pipe, settings, image, mask, alignment=aq, emphasis=mode, prompt=LONG).info
        for mode in ("weight", "suffix", "none")
    }
    assert kept["weight"]["conditioning"] == "compel" and kept["none"]["conditioning"] == "pipeline"
    assert len({k["prompt_kept"] for k in kept.values()}) == 1  # the suffix is what falls off
    assert {k["prompt_tokens"] for k in kept.values()} >= {111}


def test_user_weights_reach_the_conditioning_and_are_reported(pipe, settings):
    image, mask = _image(64, 64), _mask(64, 64, (0.2, 0.2, 0.6, 0.6))
    prompt = "a (red:1.3) cat on a wooden table"
    aq = AlignmentResult(
        0.3, np.zeros((64, 64), np.float32), emphasis=[Emphasis("red cat", (2, 15), 1.1)]
    )
    plain = _run(pipe, settings, image, mask, prompt="a red cat on a wooden table")
    user = _run(pipe, settings, image, mask, prompt=prompt)
    both = _run(pipe, settings, image, mask, alignment=aq, prompt=prompt)
    literal = _run(pipe, settings, image, mask, prompt=prompt, prompt_weights="none")
    assert user.info["emphasised_prompt"] == "a (red)1.3 cat on a wooden table"
    assert user.info["conditioning"] == "compel"
    assert both.info["emphasised_prompt"] == "a (red)1.43 (cat)1.1 on a wooden table"
    assert both.info["weights"][0] == {"text": "red", "weight": 1.43, "user": 1.3, "emphasis": 1.1}
    assert literal.info["conditioning"] == "pipeline" and literal.info["weights"] == []
    images = [np.asarray(r.image) for r in (plain, user, both)]
    assert (images[0] != images[1]).any() and (images[1] != images[2]).any()


def test_plugin_hook_uses_context_settings_seed_cache_and_progress(settings):
    cfg = load_config(preset="tiny", environ={})
    seen: list[tuple[str, int, int]] = []
    ctx = RunContext(
        config=cfg,
        models=ModelCache(),
        plugin_settings={"sdxl": settings},
        seed=11,
        _progress=lambda slot, i, n: seen.append((slot, i, n)),
    )
    ctx.slot = "stage1"
    image, mask = _image(80, 60), _mask(80, 60, (0.2, 0.2, 0.5, 0.5))
    P = PerceptualResult(0.5, np.ones((60, 80), np.float32))
    out = plugin.grefine_refine_stage1(
        image=image, mask=mask, perceptual=P, alignment=None, prompt="a cat", context=ctx
    )
    again = plugin.grefine_refine_stage1(
        image=image, mask=mask, perceptual=P, alignment=None, prompt="a cat", context=ctx
    )
    assert out.info["seed"] == 11 and "tiny random-weight" in out.info["note"]
    np.testing.assert_array_equal(np.asarray(out.image), np.asarray(again.image))
    assert len(ctx.models._items) == 1  # loaded once, reused
    assert seen and all(s == "stage1" for s, _, _ in seen)
    assert plugin.grefine_settings_models() == {"sdxl": SDXLSettings}


def test_importing_the_plugin_does_not_import_torch():
    code = (
        "import sys, grefine_sdxl, grefine_sdxl.plugin; "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
