"""PASDPipeline: fixture parity (latent start, teacher-forced step, end to end, colour fixes),
the ``strength`` extension and latent tiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from diffusers import AutoencoderKL, UniPCMultistepScheduler  # noqa: E402
from grefine_pasd import PASDPipeline, PASDUNet2DConditionModel, load_pasd_controlnet  # noqa: E402
from grefine_pasd.color_fix import (  # noqa: E402
    color_fix_pil,
    wavelet_decomposition,
    wavelet_reconstruction,
)
from grefine_pasd.tiling import (  # noqa: E402
    blend_weight_sum,
    gaussian_weights,
    needs_tiling,
    tile_boxes,
    tile_origins,
)
from PIL import Image  # noqa: E402

SEED = 20240428  # manifest.json: seed / call_kwargs.generator


@pytest.fixture(scope="module")
def pipe(pasd_fixture_dir: Path) -> PASDPipeline:
    models = pasd_fixture_dir / "models"
    p = PASDPipeline(
        vae=AutoencoderKL.from_pretrained(str(models / "vae")).eval(),
        text_encoder=None,
        tokenizer=None,
        unet=PASDUNet2DConditionModel.from_pretrained(str(models / "unet")).eval(),
        controlnet=load_pasd_controlnet(models / "controlnet"),
        scheduler=UniPCMultistepScheduler.from_pretrained(str(models / "scheduler")),
    )
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def inputs(pasd_fixture_dir: Path):
    return safetensors_torch.load_file(str(pasd_fixture_dir / "inputs.safetensors"))


@pytest.fixture(scope="module")
def ref(pasd_fixture_dir: Path):
    return safetensors_torch.load_file(str(pasd_fixture_dir / "pipe_full.safetensors"))


@pytest.fixture(scope="module")
def input_image(pasd_fixture_dir: Path) -> Image.Image:
    return Image.open(pasd_fixture_dir / "input_image.png").convert("RGB")


def _embeds(inputs):
    return {
        "prompt_embeds": inputs["prompt_embeds"],
        "negative_prompt_embeds": inputs["negative_prompt_embeds"],
    }


# ----------------------------------------------------------------------------- latent start


def test_init_latents_given_recorded_draws(pipe, inputs, ref):
    pipe.scheduler.set_timesteps(2)
    with torch.no_grad():
        posterior = pipe.vae.encode(inputs["image01"] * 2 - 1).latent_dist
    z0 = (posterior.mean + posterior.std * ref["rng0.vae_posterior"]) * 0.18215
    latents = pipe.start_latents(
        z0,
        pipe.scheduler.timesteps,
        full_schedule=True,
        noise=(ref["rng1.pipeline"], ref["rng2.pipeline"]),
        added_noise_level=900,
    )
    torch.testing.assert_close(latents, ref["init_latents"], atol=1e-5, rtol=0)


def test_init_latents_same_rng_order(pipe, inputs, ref):
    pipe.scheduler.set_timesteps(2)
    gen = torch.Generator("cpu").manual_seed(SEED)
    with torch.no_grad():
        z0 = pipe.encode_image(inputs["image01"], gen)
    latents = pipe.start_latents(z0, pipe.scheduler.timesteps, True, generator=gen)
    torch.testing.assert_close(latents, ref["init_latents"], atol=1e-5, rtol=0)


def test_added_noise_level_quirk(pipe, inputs, ref):
    """The reference's 900 acts as the last scheduled step; "absolute" uses the true t=900."""
    pipe.scheduler.set_timesteps(2)
    with torch.no_grad():
        posterior = pipe.vae.encode(inputs["image01"] * 2 - 1).latent_dist
    z0 = (posterior.mean + posterior.std * ref["rng0.vae_posterior"]) * 0.18215
    noise = (ref["rng1.pipeline"], ref["rng2.pipeline"])
    ts = pipe.scheduler.timesteps
    absolute = pipe.start_latents(z0, ts, True, noise=noise, added_noise_mode="absolute")
    assert (absolute - ref["init_latents"]).abs().max() > 0.5  # manifest: 1.29 for true t=900
    # "scheduler" mode == noising at the last scheduled step (t=500 at 2 steps).
    once = pipe.scheduler.add_noise(z0, noise[0], ts[:1])
    last = pipe.scheduler.add_noise(once, noise[1], ts[-1:])
    torch.testing.assert_close(
        pipe.start_latents(z0, ts, True, noise=noise), last, atol=1e-6, rtol=0
    )
    none = pipe.start_latents(z0, ts, True, noise=noise, added_noise_mode="none")
    torch.testing.assert_close(none, once, atol=0, rtol=0)


# ----------------------------------------------------------------------------- denoising


def test_step0_noise_prediction_teacher_forced(pipe, inputs, ref):
    embeds = torch.cat([inputs["negative_prompt_embeds"], inputs["prompt_embeds"]])
    pipe.scheduler.set_timesteps(2)
    with torch.no_grad():
        noise = pipe.predict_noise(
            ref["step0.latents_in"],
            pipe.scheduler.timesteps[0],
            embeds,
            inputs["image01"],
            9.0,
            1.0,
        )
    torch.testing.assert_close(noise, ref["step0.noise_pred_cfg"], atol=1e-3, rtol=0)


def test_two_step_pipeline_end_to_end(pipe, inputs, ref, input_image):
    seen = []

    def record(_pipe, step, t, tensors):
        seen.append((step, int(t), tensors["latents"].clone()))
        return {}

    out = pipe(
        image=input_image,
        num_inference_steps=2,
        guidance_scale=9.0,
        conditioning_scale=1.0,
        generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="np",
        **_embeds(inputs),
        callback_on_step_end=record,
    )
    assert out.timesteps == [999, 500] and out.steps_run == 2 and not out.tiled
    for step, _, latents in seen:
        expected = ref[f"step{step}.latents_out"]
        tol = 5e-3 * expected.abs().max().item()  # manifest: rtol 5e-3 of absmax for latents
        torch.testing.assert_close(latents, expected, atol=tol, rtol=0)
    assert out.images.shape == (1, 96, 128, 3)
    np.testing.assert_allclose(out.images, ref["image_np"].numpy(), atol=5e-3, rtol=0)


# ----------------------------------------------------------------------------- colour fixes


def test_color_fixes_match_reference(ref, input_image):
    output = Image.fromarray(ref["image_u8"].numpy())
    for method, key in (("wavelet", "wavelet_fix_u8"), ("adain", "adain_fix_u8")):
        ours = np.asarray(color_fix_pil(output, input_image, method)).astype(int)
        assert np.abs(ours - ref[key].numpy().astype(int)).max() <= 1, method
    content = ref["image_np"].permute(0, 3, 1, 2)
    source = torch.from_numpy(np.asarray(input_image, np.float32) / 255).permute(2, 0, 1)[None]
    torch.testing.assert_close(
        wavelet_reconstruction(content, source),
        ref["wavelet_reconstruction_float"],
        atol=1e-5,
        rtol=0,
    )


def test_wavelet_decomposition_properties():
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    high, low = wavelet_decomposition(x)
    torch.testing.assert_close(high + low, x, atol=1e-6, rtol=0)
    assert low.std() < x.std() / 3  # five dilated blurs remove most of the detail
    flat = torch.full_like(x, 0.25)
    # A flat source has no detail: its low band is itself, so the fix is high(x) + 0.25.
    torch.testing.assert_close(wavelet_reconstruction(x, flat), high + 0.25, atol=1e-6, rtol=0)


def test_pipeline_color_fix_uses_input(pipe, inputs, input_image):
    kwargs = dict(
        image=input_image,
        num_inference_steps=2,
        generator=torch.Generator("cpu").manual_seed(SEED),
        **_embeds(inputs),
    )
    plain = pipe(**kwargs).images[0]
    kwargs["generator"] = torch.Generator("cpu").manual_seed(SEED)
    fixed = pipe(**kwargs, color_fix="wavelet").images[0]
    expected = color_fix_pil(plain, input_image, "wavelet")
    assert np.array_equal(np.asarray(fixed), np.asarray(expected))
    # The colour fix pulls the (random-weight) output's colours back towards the input.
    src = np.asarray(input_image, np.float64)
    assert (
        np.abs(np.asarray(fixed, np.float64).mean((0, 1)) - src.mean((0, 1))).max()
        < np.abs(np.asarray(plain, np.float64).mean((0, 1)) - src.mean((0, 1))).max()
    )


# ----------------------------------------------------------------------------- strength


@pytest.mark.parametrize("strength", [0.25, 0.5, 0.7, 1.0])
def test_strength_runs_int_steps_times_strength(pipe, inputs, input_image, strength):
    steps = 4
    calls = []
    hook = pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = pipe(
            image=input_image,
            num_inference_steps=steps,
            strength=strength,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
            **_embeds(inputs),
        )
    finally:
        hook.remove()
    expected = int(steps * strength)
    assert out.steps_run == expected == len(calls)
    pipe.scheduler.set_timesteps(steps)
    assert out.timesteps == [int(t) for t in pipe.scheduler.timesteps[steps - expected :]]
    assert out.images.shape == (1, 96, 128, 3)
    assert np.isfinite(out.images).all() and out.images.min() >= 0 and out.images.max() <= 1


def test_strength_zero_returns_input_unchanged(pipe, inputs, input_image):
    calls = []
    hook = pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = pipe(image=input_image, num_inference_steps=10, strength=0.0, **_embeds(inputs))
        tiny = pipe(image=input_image, num_inference_steps=4, strength=0.2, **_embeds(inputs))
    finally:
        hook.remove()
    assert calls == [] and out.steps_run == 0 and tiny.steps_run == 0  # int(4 * 0.2) == 0
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(input_image))
    assert out.images[0] is not input_image


def test_partial_strength_starts_from_noised_image(pipe, inputs):
    """strength < 1: one noise draw to the first timestep run, no added noise."""
    pipe.scheduler.set_timesteps(10)
    pipe.scheduler.set_begin_index(9)
    z0 = torch.randn(1, 4, 12, 16, generator=torch.Generator().manual_seed(1))
    n = torch.randn(1, 4, 12, 16, generator=torch.Generator().manual_seed(2))
    ts = pipe.scheduler.timesteps[9:]
    latents = pipe.start_latents(z0, ts, full_schedule=False, noise=(n, n * 0 + 100))
    ac = pipe.scheduler.alphas_cumprod[int(ts[0])]
    torch.testing.assert_close(latents, ac.sqrt() * z0 + (1 - ac).sqrt() * n, atol=1e-5, rtol=0)


def test_strength_validation(pipe, inputs, input_image):
    with pytest.raises(ValueError, match="strength"):
        pipe(image=input_image, strength=1.5, **_embeds(inputs))
    with pytest.raises(ValueError, match="multiple of 8"):
        pipe(image=input_image.crop((0, 0, 100, 90)), **_embeds(inputs))
    with pytest.raises(ValueError, match="prompt_embeds"):
        pipe(image=input_image, prompt="a cat")  # no text encoder in this pipeline


# ----------------------------------------------------------------------------- tiling


def test_tile_origins_cover_and_pin_last():
    assert tile_origins(16, 8, 2) == [0, 6, 8]
    assert tile_origins(8, 8, 2) == [0]
    for length, tile, ov in [(100, 32, 8), (33, 32, 8), (64, 10, 3), (320, 320, 8)]:
        o = tile_origins(length, tile, ov)
        assert o[0] == 0 and o[-1] == length - tile
        assert all(b - a <= tile - ov for a, b in zip(o, o[1:], strict=False))
        covered = np.zeros(length, bool)
        for start in o:
            covered[start : start + tile] = True
        assert covered.all()
    with pytest.raises(ValueError, match="overlap"):
        tile_origins(100, 8, 8)


def test_gaussian_weights_shape_and_midpoints():
    w = gaussian_weights(8, 8)
    assert w.dtype == np.float64 and w.shape == (8, 8)
    np.testing.assert_allclose(w[:, ::-1], w, rtol=1e-12)  # x midpoint (T-1)/2: symmetric
    assert w[0, 3] < w[-1, 3]  # y midpoint T/2: shifted down by half a pixel
    big = gaussian_weights(64, 64)  # peak (1/sqrt(2 pi 0.01))**2 at the centre
    assert abs(big.max() - 1 / (2 * np.pi * 0.01)) / big.max() < 0.01


def test_overlap_weights_sum_to_one():
    h, w, tile, ov = 21, 37, 8, 3
    total = blend_weight_sum(h, w, tile, ov)
    assert (total > 0).all()
    normalised = np.zeros((h, w))
    for y, x, side in tile_boxes(h, w, tile, ov):
        normalised[y : y + side, x : x + side] += (
            gaussian_weights(side, side) / total[y : y + side, x : x + side]
        )
    np.testing.assert_allclose(normalised, 1.0, atol=1e-12)
    assert needs_tiling(21, 37, 8) and not needs_tiling(8, 8, 8)


def test_tiled_blend_of_a_pointwise_model_is_exact(pipe, monkeypatch):
    """Any per-pixel model gives the same result tiled and untiled: crops and weights line up."""

    def pointwise(latents, t, embeds, control, scale):
        return latents * 2 + control[:, :1, ::8, ::8] * scale

    monkeypatch.setattr(pipe, "_controlled_unet", pointwise)
    lat = torch.randn(1, 4, 21, 37, generator=torch.Generator().manual_seed(0))
    control = torch.rand(1, 3, 21 * 8, 37 * 8, generator=torch.Generator().manual_seed(1))
    emb = torch.zeros(1, 9, 32)
    untiled = pipe.predict_noise(lat, 500, emb, control, 1.0, 0.5, latent_tiled_size=320)
    tiled = pipe.predict_noise(
        lat, 500, emb, control, 1.0, 0.5, latent_tiled_size=8, latent_tiled_overlap=3
    )
    torch.testing.assert_close(tiled, untiled, atol=1e-5, rtol=0)


def test_tiled_and_untiled_pipeline_agree_in_size_and_range(pipe, inputs, input_image):
    results = {}
    for tile in (320, 8):
        out = pipe(
            image=input_image,
            num_inference_steps=2,
            strength=0.5,  # one step: 6 tiles of 8x8 on the 12x16 latent
            generator=torch.Generator("cpu").manual_seed(SEED),
            output_type="np",
            latent_tiled_size=tile,
            latent_tiled_overlap=2,
            **_embeds(inputs),
        )
        results[tile] = out
    assert not results[320].tiled and results[8].tiled
    for out in results.values():
        assert out.images.shape == (1, 96, 128, 3)
        assert np.isfinite(out.images).all()
        assert out.images.min() >= 0 and out.images.max() <= 1
    assert not np.array_equal(results[320].images, results[8].images)
