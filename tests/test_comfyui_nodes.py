"""The ComfyUI nodes (integrations/comfyui, docs/comfyui.md), called as ComfyUI calls them.

ComfyUI is not installed here: the package is imported the way ComfyUI imports a custom-node
folder, each node is instantiated and ``getattr(node, FUNCTION)(**inputs)`` called with inputs
checked against its ``INPUT_TYPES``, and the returned tuple checked against ``RETURN_TYPES``
(IMAGE ``[B, H, W, 3]`` and MASK ``[B, H, W]`` float32 in [0, 1]). The ``oracle`` preset's
planted scenes (examples/oracle/, docs/behaviour.md) prove the logic -- where the mask goes, what
is named, what is left untouched; the ``tiny`` preset proves the plumbing. Neither proves anything
about image quality. Images are 64-128 px.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "integrations" / "comfyui"
WORKFLOW = PACKAGE / "workflows" / "grefine_inpaint.json"
SCENES = ROOT / "examples" / "oracle"
SIZE = 128  # the 256 px planted scenes, halved (nearest: flat colours and the noise stay as drawn)
SCENE_PROMPT = "a red ball and a green box"  # the noisy and the clean scene's prompt
WRONG_PROMPT = "a red ball and a blue box"  # the wrong-colour scene's prompt
#: The noisy scene's noise (docs/behaviour.md: the empty lower-right quadrant), at SIZE.
QUADRANT = (SIZE // 2, SIZE // 2, SIZE, SIZE)
#: How far a mask may reach past its target at SIZE: dilation 4 + feather support ~10 + half a
#: patch of interpolation spread ~5 (scene_checks.REACH_PX is 28 at 256 px).
REACH = 20


def load_package(module_name: str = "grefine_comfyui"):
    """Import integrations/comfyui as ComfyUI imports a custom-node folder (nodes.py:
    ``spec_from_file_location(name, <folder>/__init__.py)``, registered in ``sys.modules``)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, PACKAGE / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pkg():
    return load_package()


@pytest.fixture(scope="module")
def nodes(pkg):
    return sys.modules[f"{pkg.__name__}.nodes"]


# ---------------------------------------------------------------------- calling as ComfyUI does

WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN")


def check_widget(node: str, name: str, spec: tuple, value) -> None:
    """What ComfyUI's prompt validation checks of a widget value: its type, min/max, choices."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 else {}
    if isinstance(kind, list):
        assert value in kind, f"{node}.{name}: {value!r} not among {kind}"
        return
    if kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), (node, name, value)
    elif kind == "FLOAT":
        assert isinstance(value, int | float) and not isinstance(value, bool), (node, name, value)
    elif kind == "STRING":
        assert isinstance(value, str), (node, name, value)
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), (node, name, value)
    if kind in ("INT", "FLOAT"):
        assert options.get("min", value) <= value <= options.get("max", value), (node, name)


def conforms(value, kind: str, pkg_nodes) -> bool:
    """Whether a returned value is what ComfyUI expects of type ``kind``."""
    if kind == "IMAGE":
        return (
            isinstance(value, torch.Tensor)
            and value.dim() == 4
            and value.shape[-1] == 3
            and value.dtype == torch.float32
            and bool(((value >= 0) & (value <= 1)).all())
        )
    if kind == "MASK":
        return (
            isinstance(value, torch.Tensor)
            and value.dim() == 3
            and value.dtype == torch.float32
            and bool(((value >= 0) & (value <= 1)).all())
        )
    if kind == "FLOAT":
        return isinstance(value, float)
    if kind == "STRING":
        return isinstance(value, str)
    if kind == "GREFINE_RESULT":
        return isinstance(value, pkg_nodes.GRefineMaps)
    raise AssertionError(f"unexpected return type {kind}")


def comfy_call(cls, **inputs):
    """Validate ``inputs`` against ``cls.INPUT_TYPES()``, instantiate, call ``FUNCTION`` under
    ``torch.inference_mode()``, check the returned tuple against ``RETURN_TYPES``; returns it."""
    spec = cls.INPUT_TYPES()
    required, optional = spec["required"], spec.get("optional", {})
    name = cls.__name__
    assert set(required) <= set(inputs), f"{name}: missing {set(required) - set(inputs)}"
    assert set(inputs) <= set(required) | set(optional), f"{name}: unknown inputs"
    for key, value in inputs.items():
        decl = {**required, **optional}[key]
        if isinstance(decl[0], list) or decl[0] in WIDGETS:
            check_widget(name, key, decl, value)
    with torch.inference_mode():  # as ComfyUI's PromptExecutor.execute runs every node
        out = getattr(cls(), cls.FUNCTION)(**inputs)
    assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES), name
    for value, kind in zip(out, cls.RETURN_TYPES, strict=True):
        assert conforms(value, kind, sys.modules[cls.__module__]), (
            f"{name}: output {kind} {value!r}"
        )
    return out


# ---------------------------------------------------------------------- inputs


def scene(name: str) -> torch.Tensor:
    """A planted scene of examples/oracle/ as one ComfyUI image [SIZE, SIZE, 3]."""
    im = Image.open(SCENES / f"{name}.png").convert("RGB")
    im = im.resize((SIZE, SIZE), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)


def region(box, size: int = SIZE) -> np.ndarray:
    out = np.zeros((size, size), bool)
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = True
    return out


def near(box, reach: int = REACH) -> np.ndarray:
    x0, y0, x1, y1 = box
    return region((max(x0 - reach, 0), max(y0 - reach, 0), x1 + reach, y1 + reach))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def covers(mask: np.ndarray, box) -> bool:
    """``mask`` covers all of ``box`` and nothing beyond :data:`REACH` of it."""
    return bool(mask[region(box)].all() and not (mask & ~near(box)).any())


def box_at_size():
    from grefine_clip.oracle_scenes import BOX, SCENE_SIZE

    return tuple(v * SIZE // SCENE_SIZE for v in BOX.box())


@pytest.fixture(scope="module")
def noisy_clean():
    """Batch of two: the noisy scene (noise in the lower-right quadrant) and the clean one."""
    return torch.stack([scene("noisy"), scene("clean")])


@pytest.fixture(scope="module")
def assessed(pkg, noisy_clean):
    node = pkg.NODE_CLASS_MAPPINGS["GRefineQualityMaps"]
    return comfy_call(node, image=noisy_clean, prompt=SCENE_PROMPT, preset="oracle", seed=0)


@pytest.fixture(scope="module")
def wrong_colour(pkg):
    """Batch of two copies of the wrong-colour scene (the box is green, the prompt says blue)."""
    node = pkg.NODE_CLASS_MAPPINGS["GRefineQualityMaps"]
    batch = torch.stack([scene("wrong_colour")] * 2)
    return comfy_call(node, image=batch, prompt=WRONG_PROMPT, preset="oracle", seed=3)


# ---------------------------------------------------------------------- declarations


def test_the_package_declares_four_nodes_as_comfyui_reads_them(pkg, nodes):
    from grefine_quality.settings import AQSettings

    from grefine_core.config import preset_names

    assert set(pkg.NODE_CLASS_MAPPINGS) == {
        "GRefineQualityMaps",
        "GRefineMask",
        "GRefineEmphasis",
        "GRefineRefine",
    }
    assert pkg.NODE_DISPLAY_NAME_MAPPINGS == {
        "GRefineQualityMaps": "G-Refine Quality Maps",
        "GRefineMask": "G-Refine Mask",
        "GRefineEmphasis": "G-Refine Emphasis",
        "GRefineRefine": "G-Refine Refine",
    }
    for cls in pkg.NODE_CLASS_MAPPINGS.values():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional"} and spec["required"]
        for decl in [*spec["required"].values(), *spec.get("optional", {}).values()]:
            assert isinstance(decl, tuple) and isinstance(decl[0], str | list)
            assert len(decl) == 1 or isinstance(decl[1], dict)
        assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_NAMES) == len(
            cls.RETURN_TYPES
        )
        assert callable(getattr(cls(), cls.FUNCTION)) and cls.CATEGORY == "G-Refine"
        doc = " ".join(cls.__doc__.split())
        assert "oracle" in doc and "tiny" in doc and "image quality" in doc
    maps = pkg.NODE_CLASS_MAPPINGS["GRefineQualityMaps"].INPUT_TYPES()["required"]
    assert sorted(maps["preset"][0]) == preset_names() and maps["preset"][1]["default"] == "paper"
    weight = pkg.NODE_CLASS_MAPPINGS["GRefineEmphasis"].INPUT_TYPES()["required"]["weight"]
    assert weight[1]["default"] == AQSettings().emphasis_weight == 0.1
    mask = pkg.NODE_CLASS_MAPPINGS["GRefineMask"].INPUT_TYPES()
    assert mask["required"]["tau"][1]["default"] == 0.5
    assert mask["required"]["dilate_px"][1] == {"default": 4, "min": 0, "max": 512, "step": 1}
    assert mask["optional"]["kind"][0] == ["binary", "soft"]


def test_importing_the_package_loads_neither_torch_nor_a_model():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('gc', {str(PACKAGE / '__init__.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['gc'] = m\n"
        "spec.loader.exec_module(m)\n"
        "print(sorted(k for k in ('torch', 'diffusers', 'grefine_core') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_conversion_round_trip_is_exact(pkg):
    convert = sys.modules[f"{pkg.__name__}.convert"]
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    pil = Image.fromarray(arr)
    t = convert.pil_to_tensor(pil)
    assert t.shape == (20, 24, 3) and t.dtype == torch.float32
    assert np.array_equal(np.asarray(convert.tensor_to_pil(t)), arr)
    grey = convert.tensor_to_pil(t[..., :1])
    assert grey.mode == "RGB" and np.array_equal(np.asarray(grey)[..., 2], arr[..., 0])
    rgba = convert.tensor_to_pil(torch.cat([t, torch.ones(20, 24, 1)], dim=-1))
    assert np.array_equal(np.asarray(rgba), arr)
    batch = convert.pils_to_images([pil, pil])
    assert batch.shape == (2, 20, 24, 3)
    fitted = convert.fit_map(np.eye(8, dtype=np.float32), (16, 16), binary=True)
    assert fitted.shape == (16, 16) and set(np.unique(fitted)) <= {0.0, 1.0}


# ---------------------------------------------------------------------- Quality Maps + Mask


def test_quality_maps_mark_the_noisy_quadrant_and_leave_the_clean_scene(assessed):
    perceptual, alignment, maps, p, a, text = assessed
    assert perceptual.shape == alignment.shape == (2, SIZE, SIZE)
    noisy, clean = perceptual[0].numpy(), perceptual[1].numpy()
    x0, y0, x1, y1 = QUADRANT
    assert noisy[y0:y1, x0:x1].mean() > 0.9  # 1 - P: repaint the noise
    assert noisy[: SIZE // 3].max() < 0.05  # the objects' half is good
    assert clean.max() < 0.05
    assert float(alignment.max()) < 0.05  # the prompt matches both scenes
    r_noisy, r_clean = maps.results
    assert r_clean.high_quality and not r_noisy.high_quality
    assert p == pytest.approx((r_noisy.p + r_clean.p) / 2) and r_clean.p >= 0.95
    assert a == pytest.approx((r_noisy.a + r_clean.a) / 2) and a >= 0.95
    lines = text.splitlines()
    assert lines[0] == f"p={r_noisy.p:.3f} a={r_noisy.a:.3f} defects: none"
    assert lines[1].startswith("p=0.998 ") and lines[1].endswith("defects: none")
    assert any("Planted truth" in line for line in lines[2:])  # the preset's notice


def test_quality_maps_name_the_wrong_colour(wrong_colour):
    _, alignment, maps, p, a, text = wrong_colour
    x0, y0, x1, y1 = box_at_size()
    defect = alignment[0].numpy()
    assert defect[y0:y1, x0:x1].mean() > 0.8  # A_defect on the box
    assert defect[~near(box_at_size(), 12)].max() < 0.05
    assert a < 0.95 and p >= 0.95
    assert text.splitlines()[:2] == [f"p={p:.3f} a={a:.3f} defects: blue box (attribute)"] * 2
    assert [(d.text, d.defect) for d in maps.results[1].alignment.defects] == [
        ("blue box", "attribute")
    ]


def test_mask_covers_the_known_defect_region_and_the_clean_scene_gets_none(pkg, assessed):
    node = pkg.NODE_CLASS_MAPPINGS["GRefineMask"]
    maps = assessed[2]
    mask, fraction = comfy_call(node, maps=maps, tau=0.5, dilate_px=4, feather_sigma=3.0)
    assert mask.shape == (2, SIZE, SIZE)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    noisy = mask[0].numpy() > 0.5
    assert iou(noisy, region(QUADRANT)) >= 0.6
    assert not (noisy & ~near(QUADRANT)).any()
    assert not mask[1].any()  # the clean scene: nothing to repaint
    fractions = [float(m.mean()) for m in mask]
    assert fraction == pytest.approx(sum(fractions) / 2)
    # the run's own mask, re-fused with the preset's settings (oracle: 0.5, 4, 3.0)
    assert np.array_equal(noisy, maps.results[0].mask.binary)
    soft, _ = comfy_call(node, maps=maps, tau=0.5, dilate_px=4, kind="soft")
    assert soft.shape == (2, SIZE, SIZE) and 0.0 < float(soft[0].mean()) < 1.0
    assert float(soft[0][torch.from_numpy(region(QUADRANT))].mean()) > 0.9


def test_a_higher_tau_masks_less(pkg, wrong_colour):
    node = pkg.NODE_CLASS_MAPPINGS["GRefineMask"]
    maps = wrong_colour[2]
    fractions = [comfy_call(node, maps=maps, tau=t, dilate_px=0)[1] for t in (0.2, 0.5, 0.9)]
    assert fractions[0] > fractions[1] > fractions[2] > 0
    box = comfy_call(node, maps=maps, tau=0.5, dilate_px=4)[0][0].numpy() > 0.5
    assert covers(box, box_at_size())  # the wrong-coloured box is masked, and little else
    wider = comfy_call(node, maps=maps, tau=0.5, dilate_px=12)[1]
    assert wider > comfy_call(node, maps=maps, tau=0.5, dilate_px=0)[1]


def test_maps_come_back_at_the_input_size_when_grefine_downscaled(pkg, nodes, monkeypatch):
    real = nodes.pipeline_for
    monkeypatch.setattr(
        nodes,
        "pipeline_for",
        lambda preset, overrides=None: real(preset, {"image": {"max_side": 64}}),
    )
    batch = torch.stack([scene("noisy"), scene("clean")])
    quality = pkg.NODE_CLASS_MAPPINGS["GRefineQualityMaps"]
    perceptual, alignment, maps, *_ = comfy_call(
        quality, image=batch, prompt=SCENE_PROMPT, preset="oracle", seed=0
    )
    assert maps.results[0].P.shape == (64, 64)  # grefine worked at 64 px
    assert perceptual.shape == alignment.shape == (2, SIZE, SIZE)
    x0, y0, x1, y1 = QUADRANT
    assert float(perceptual[0, y0:y1, x0:x1].mean()) > 0.8
    mask, _ = comfy_call(pkg.NODE_CLASS_MAPPINGS["GRefineMask"], maps=maps, tau=0.5, dilate_px=2)
    assert mask.shape == (2, SIZE, SIZE) and set(torch.unique(mask).tolist()) <= {0.0, 1.0}


# ---------------------------------------------------------------------- Emphasis


def comfy_weights(text: str) -> list[tuple[str, float]]:
    """ComfyUI's reading of ``(text:1.1)`` weighting (comfy/sd1_clip.py: ``(...)`` nests,
    ``:w`` at the end of a group sets its weight, ``\\(``/``\\)`` are literal brackets), in a
    few lines: the (chunk, weight) pairs of ``text``."""
    text = text.replace("\\(", "\0").replace("\\)", "\1")
    out, depth, buf, weights = [], 0, "", [1.0]
    for ch in text:
        if ch == "(":
            if buf:
                out.append((buf, weights[-1]))
            buf, depth = "", depth + 1
            weights.append(weights[-1] * 1.1)  # a bare group: x 1.1
        elif ch == ")" and depth:
            body = buf
            head, sep, tail = body.rpartition(":")
            weight = weights.pop()
            try:
                weight, body = float(tail), head if sep else body
            except ValueError:
                pass
            out.append((body, weight))
            buf, depth = "", depth - 1
        else:
            buf += ch
    if buf:
        out.append((buf, weights[-1]))
    return [(c.replace("\0", "(").replace("\1", ")"), w) for c, w in out if c]


def test_emphasis_weights_the_known_defect_in_comfyui_syntax(pkg, wrong_colour):
    node = pkg.NODE_CLASS_MAPPINGS["GRefineEmphasis"]
    maps, text = wrong_colour[2], wrong_colour[5]
    (from_maps,) = comfy_call(node, prompt=WRONG_PROMPT, weight=0.1, maps=maps)
    assert from_maps == "a red ball and a (blue box:1.1)"
    assert comfy_weights(from_maps) == [("a red ball and a ", 1.0), ("blue box", 1.1)]
    (from_text,) = comfy_call(node, prompt=WRONG_PROMPT, weight=0.1, defects=text)
    assert from_text == from_maps
    assert comfy_call(node, prompt=WRONG_PROMPT, weight=0.0, maps=maps) == (WRONG_PROMPT,)
    # another wording of the prompt: the defect's text is looked up in it
    (other,) = comfy_call(node, prompt="the BLUE  box, a red ball", weight=0.25, maps=maps)
    assert other == "the (BLUE  box:1.25), a red ball"
    assert comfy_call(node, prompt=WRONG_PROMPT, weight=0.1) == (WRONG_PROMPT,)  # nothing known


def test_emphasis_of_a_clean_scene_changes_nothing(pkg, assessed):
    node = pkg.NODE_CLASS_MAPPINGS["GRefineEmphasis"]
    assert comfy_call(node, prompt=SCENE_PROMPT, weight=0.1, maps=assessed[2]) == (SCENE_PROMPT,)
    assert comfy_call(node, prompt=SCENE_PROMPT, weight=0.1, defects=assessed[5]) == (SCENE_PROMPT,)


def test_weighting_merges_spans_and_escapes_brackets(pkg):
    w = sys.modules[f"{pkg.__name__}.weighting"]
    prompt = "a cat (tabby) on a mat"
    assert w.weight_spans(prompt, [(2, 13, 1.1)]) == "a (cat \\(tabby\\):1.1) on a mat"
    assert comfy_weights(w.weight_spans(prompt, [(2, 13, 1.1)]))[1] == ("cat (tabby)", 1.1)
    assert w.weight_spans("red hat blue sofa", [(0, 7, 1.1), (4, 12, 1.2)]) == (
        "(red hat blue:1.2) sofa"
    )
    assert w.weight_spans("red hat", [(0, 3, 1.1), (3, 7, 1.1)]) == "(red hat:1.1)"  # touching
    assert w.weight_spans("red hat", [(0, 3, 1.0)]) == "red hat"
    text = "p=0.4 a=0.6 defects: blue sofa (attribute); red hat (noun)\np=1 a=1 defects: none"
    assert w.defect_phrases(text) == ["blue sofa", "red hat"]
    report = "p=0.9 a=0.5 defects: blue box (attribute) | high_quality: no | masked: 15.0%\nnote: x"
    assert w.defect_phrases(report + "\nnote: no defects: here") == ["blue box"]
    assert w.find_phrase("a Red  Hat", "red hat") == (2, 10)
    assert w.find_phrase("a redhat", "red hat") is None


# ---------------------------------------------------------------------- Refine


def test_refine_on_tiny_gives_a_batch_with_the_strength_asked(pkg):
    node = pkg.NODE_CLASS_MAPPINGS["GRefineRefine"]
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.random((2, 64, 64, 3), dtype=np.float32))
    image, mask, report = comfy_call(
        node, image=batch, prompt="a red cat on a table", preset="tiny", seed=7, strength=0.5
    )
    assert image.shape == (2, 64, 64, 3) and mask.shape == (2, 64, 64)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    lines = report.splitlines()
    for line in lines[:2]:
        assert line.startswith("p=") and " defects: " in line and "high_quality: " in line
        # tiny's random maps mask the whole image (docs/refiners.md), so stage 1 runs, at the
        # strength asked instead of the quality rule's
        assert "high_quality: no" in line and "masked: 100.0%" in line
        assert "stage1: ran (strength 0.50)" in line and "stage2: ran" in line
    assert any("random-weight" in line for line in lines[2:])  # tiny's notice


def test_refine_on_oracle_keeps_pixels_outside_the_mask(pkg, noisy_clean):
    """docs/refiners.md: stage 1 changes only pixels inside the binary mask; stage 2 (global) is
    off here. The clean scene is high quality: returned pixel-identical, no stage runs."""
    node = pkg.NODE_CLASS_MAPPINGS["GRefineRefine"]
    image, mask, report = comfy_call(
        node, image=noisy_clean, prompt=SCENE_PROMPT, preset="oracle", seed=0, stage2=False
    )
    assert image.shape == noisy_clean.shape and mask.shape == (2, SIZE, SIZE)
    outside = (mask < 0.5).unsqueeze(-1).expand_as(image)
    assert torch.equal(image[outside], noisy_clean[outside])
    assert not torch.equal(image[0], noisy_clean[0])  # the noisy quadrant was repainted
    assert torch.equal(image[1], noisy_clean[1]) and not mask[1].any()
    noisy, clean = report.splitlines()[:2]
    assert "high_quality: no" in noisy and "stage1: ran" in noisy and "stage2: skipped" in noisy
    assert "high_quality: yes" in clean and "masked: 0.0%" in clean and "stage1: skipped" in clean


# ---------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(64, 64, 3),  # rank 3: no batch dimension
        torch.zeros(1, 1, 1, 3),  # 1x1
        torch.zeros(1, 3, 64, 64),  # channels first
        np.zeros((1, 64, 64, 3), np.float32),  # not a tensor
    ],
    ids=["rank3", "1x1", "channels-first", "numpy"],
)
@pytest.mark.parametrize("name", ["GRefineQualityMaps", "GRefineRefine"])
def test_a_bad_image_is_a_one_line_error_naming_node_and_input(pkg, name, bad):
    cls = pkg.NODE_CLASS_MAPPINGS[name]
    with pytest.raises(ValueError) as info:
        getattr(cls(), cls.FUNCTION)(image=bad, prompt="a cat", preset="oracle", seed=0)
    message = str(info.value)
    assert message.startswith(f"{cls.NODE_NAME}: input 'image'") and "\n" not in message


def test_other_bad_inputs_name_the_node_and_the_input(pkg, noisy_clean):
    n = pkg.NODE_CLASS_MAPPINGS
    cases = [
        (n["GRefineMask"], {"maps": "not maps", "tau": 0.5, "dilate_px": 4}, "'maps'"),
        (n["GRefineEmphasis"], {"prompt": "a", "weight": 0.1, "maps": object()}, "'maps'"),
        (n["GRefineQualityMaps"], {"image": noisy_clean, "prompt": "a", "preset": "x"}, "'preset'"),
        (
            n["GRefineQualityMaps"],
            {"image": noisy_clean, "prompt": 3, "preset": "oracle"},
            "'prompt'",
        ),
        (n["GRefineRefine"], {"image": noisy_clean, "prompt": "a", "seed": -1}, "'seed'"),
        (n["GRefineRefine"], {"image": noisy_clean, "prompt": "a", "strength": 2.0}, "'strength'"),
    ]
    for cls, kwargs, what in cases:
        with pytest.raises(ValueError) as info:
            getattr(cls(), cls.FUNCTION)(**kwargs)
        message = str(info.value)
        assert message.startswith(f"{cls.NODE_NAME}: input {what}") and "\n" not in message


def test_a_grefine_setting_out_of_range_is_a_value_error_naming_the_node(pkg, assessed):
    cls = pkg.NODE_CLASS_MAPPINGS["GRefineMask"]
    with pytest.raises(ValueError) as info:
        cls().mask(maps=assessed[2], tau=1.5, dilate_px=4)
    assert str(info.value).startswith("G-Refine Mask: ") and "tau" in str(info.value)
    assert "\n" not in str(info.value)


def test_progress_goes_to_comfyuis_bar_and_never_fails_a_run(nodes, monkeypatch):
    import types

    calls = []

    class Bar:
        def __init__(self, total):
            calls.append(("new", total))

        def update_absolute(self, value, total=None):
            calls.append((value, total))
            if value == 3:
                raise RuntimeError("broken display")

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = Bar
    comfy.utils = utils
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    observer = nodes._progress_observer()
    ctx = object()
    for step in (1, 2, 3):
        observer.grefine_stage_progress(context=ctx, slot="stage1", step=step, total=4)
    assert calls == [("new", 4), (1, 4), (2, 4), (3, 4)]


# ---------------------------------------------------------------------- the example workflow

#: ComfyUI's own nodes the workflow uses: declared inputs (name -> type; a list = a combo of
#: names whose values depend on the installation) and RETURN_TYPES, from ComfyUI's nodes.py.
COMFY_NODES = {
    "LoadImage": ({"image": "COMBO"}, ("IMAGE", "MASK")),
    "CheckpointLoaderSimple": ({"ckpt_name": "COMBO"}, ("MODEL", "CLIP", "VAE")),
    "CLIPTextEncode": ({"text": "STRING", "clip": "CLIP"}, ("CONDITIONING",)),
    "VAEEncodeForInpaint": (
        {"pixels": "IMAGE", "vae": "VAE", "mask": "MASK", "grow_mask_by": "INT"},
        ("LATENT",),
    ),
    "KSampler": (
        {
            "model": "MODEL",
            "seed": "INT",
            "steps": "INT",
            "cfg": "FLOAT",
            "sampler_name": "COMBO",
            "scheduler": "COMBO",
            "positive": "CONDITIONING",
            "negative": "CONDITIONING",
            "latent_image": "LATENT",
            "denoise": "FLOAT",
        },
        ("LATENT",),
    ),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, ("IMAGE",)),
    "SaveImage": ({"images": "IMAGE", "filename_prefix": "STRING"}, ()),
}
LITERAL = {"INT": int, "FLOAT": (int, float), "STRING": str, "COMBO": str, "BOOLEAN": bool}


def declared(pkg, class_type):
    """``(required, optional, outputs)`` of a node class: ours from NODE_CLASS_MAPPINGS, ComfyUI's
    from the table; input types as strings ("COMBO" for a list of choices)."""
    if class_type in pkg.NODE_CLASS_MAPPINGS:
        cls = pkg.NODE_CLASS_MAPPINGS[class_type]
        spec = cls.INPUT_TYPES()

        def kinds(table):
            return {k: "COMBO" if isinstance(v[0], list) else v[0] for k, v in table.items()}

        return kinds(spec["required"]), kinds(spec.get("optional", {})), cls.RETURN_TYPES
    inputs, outputs = COMFY_NODES[class_type]
    return inputs, {}, outputs


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def test_the_workflow_uses_existing_nodes_and_links_match_their_types(pkg):
    graph = json.loads(WORKFLOW.read_text())
    assert graph and all(set(n) <= {"class_type", "inputs", "_meta"} for n in graph.values())
    used = {n["class_type"] for n in graph.values()}
    assert used <= set(pkg.NODE_CLASS_MAPPINGS) | set(COMFY_NODES), used
    assert {"GRefineQualityMaps", "GRefineMask", "GRefineEmphasis"} <= used
    for node_id, node in graph.items():
        required, optional, _ = declared(pkg, node["class_type"])
        inputs = node["inputs"]
        assert set(required) <= set(inputs), (node_id, set(required) - set(inputs))
        assert set(inputs) <= set(required) | set(optional), (node_id, inputs)
        for name, value in inputs.items():
            want = {**required, **optional}[name]
            if is_link(value):
                source = graph[value[0]]
                outputs = declared(pkg, source["class_type"])[2]
                assert 0 <= value[1] < len(outputs), (node_id, name, value)
                assert outputs[value[1]] == want, (node_id, name, outputs[value[1]], want)
            else:
                assert isinstance(value, LITERAL[want]), (node_id, name, value)
    # our widgets hold valid values, and the graph runs from LoadImage to SaveImage without cycles
    for node in graph.values():
        cls = pkg.NODE_CLASS_MAPPINGS.get(node["class_type"])
        if cls is not None:
            spec = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
            for name, value in node["inputs"].items():
                if not is_link(value):
                    check_widget(node["class_type"], name, spec[name], value)
    order = topological(graph)
    kinds = [graph[i]["class_type"] for i in order]
    assert kinds[0] == "LoadImage" and kinds[-1] == "SaveImage"
    mask_feed = graph[next(i for i in graph if graph[i]["class_type"] == "VAEEncodeForInpaint")]
    assert graph[mask_feed["inputs"]["mask"][0]]["class_type"] == "GRefineMask"
    text_feed = [
        graph[i]["inputs"]["text"] for i in graph if graph[i]["class_type"] == "CLIPTextEncode"
    ]
    assert any(is_link(t) and graph[t[0]]["class_type"] == "GRefineEmphasis" for t in text_feed)


def topological(graph) -> list[str]:
    deps = {i: {v[0] for v in n["inputs"].values() if is_link(v)} for i, n in graph.items()}
    order: list[str] = []
    while len(order) < len(graph):
        ready = sorted((i for i in graph if i not in order and deps[i] <= set(order)), key=int)
        assert ready, "the workflow has a cycle"
        order += ready
    return order


def test_the_workflow_runs_up_to_comfyuis_own_nodes(pkg):
    """Execute the workflow in its links' order: our nodes for real (preset switched to oracle,
    LoadImage given the wrong-colour scene), ComfyUI's nodes as stubs that check what they get."""
    graph = json.loads(WORKFLOW.read_text())
    seen: dict[str, list[dict]] = {}
    outputs: dict[str, tuple] = {}
    for node_id in topological(graph):
        node = graph[node_id]
        kind = node["class_type"]
        inputs = {k: outputs[v[0]][v[1]] if is_link(v) else v for k, v in node["inputs"].items()}
        if kind in ("GRefineQualityMaps", "GRefineEmphasis"):
            inputs["prompt"] = WRONG_PROMPT
        if kind == "GRefineQualityMaps":
            inputs["preset"] = "oracle"
        if kind in pkg.NODE_CLASS_MAPPINGS:
            outputs[node_id] = comfy_call(pkg.NODE_CLASS_MAPPINGS[kind], **inputs)
        elif kind == "LoadImage":
            outputs[node_id] = (scene("wrong_colour")[None], torch.zeros(64, 64))
        else:
            seen.setdefault(kind, []).append(inputs)
            outputs[node_id] = tuple(f"<{t}>" for t in COMFY_NODES[kind][1])
    (encode,) = seen["VAEEncodeForInpaint"]
    assert encode["pixels"].shape == (1, SIZE, SIZE, 3) and encode["mask"].shape == (1, SIZE, SIZE)
    assert covers(encode["mask"][0].numpy() > 0.5, box_at_size())  # the box, not blue
    assert encode["vae"] == "<VAE>"
    assert "a red ball and a (blue box:1.1)" in [i["text"] for i in seen["CLIPTextEncode"]]
    (sampler,) = seen["KSampler"]
    assert sampler["positive"] == sampler["negative"] == "<CONDITIONING>"
    assert sampler["latent_image"] == "<LATENT>" and seen["SaveImage"][0]["images"] == "<IMAGE>"


def test_pipelines_are_built_once_and_share_one_model_cache(nodes, assessed):
    oracle = nodes.pipeline_for("oracle")
    assert assessed[2].pipeline is oracle and nodes.pipeline_for("oracle") is oracle
    other = nodes.pipeline_for("oracle", {"image": {"max_side": 64}})
    assert other is not oracle and other.models is oracle.models


def test_the_refine_overrides_are_what_the_cli_flags_set(nodes):
    from grefine_core.app.flags import setting_flags

    assert nodes.refine_overrides("tiny", -1.0, True) == {}
    strength = next(f for f in setting_flags() if f.flag == "--strength")
    assert nodes.refine_overrides("tiny", 0.5, True) == strength.override(0.5)
    off = nodes.refine_overrides("oracle", 0.3, False)
    assert off["plugins"]["sdxl"] == {"strength": 0.3, "strength_mode": "fixed"}
    assert off["disable"] == ["pasd"]  # the preset's stage-2 plugin


def test_mask_with_a_fuser_without_tau_applies_the_rest(pkg, nodes, caplog):
    """The reference fuser (mask_reference) has fixed thresholds and no tau: the node applies the
    dilation and feather, ignores tau and says so in the log."""
    pipe = nodes.pipeline_for("oracle", {"select": {"fuser": "mask_reference"}})
    im = nodes.images_to_pils(scene("wrong_colour")[None], "test")[0]
    result = pipe.assess(im, WRONG_PROMPT)
    maps = nodes.GRefineMaps(pipe, [result], [(SIZE, SIZE)], "oracle")
    assert repr(maps) == "GRefineMaps(preset='oracle', images=1)"
    node = pkg.NODE_CLASS_MAPPINGS["GRefineMask"]
    with caplog.at_level("WARNING"):
        low = comfy_call(node, maps=maps, tau=0.1, dilate_px=0)[1]
    assert "has no tau; ignored" in caplog.text
    assert comfy_call(node, maps=maps, tau=0.9, dilate_px=0)[1] == low > 0
    assert comfy_call(node, maps=maps, tau=0.9, dilate_px=8)[1] > low


def test_an_empty_prompt_gives_no_alignment_term(pkg):
    node = pkg.NODE_CLASS_MAPPINGS["GRefineQualityMaps"]
    batch = torch.stack([scene("wrong_colour"), scene("clean")])
    _, alignment, maps, _, a, text = comfy_call(
        node, image=batch, prompt="", preset="oracle", seed=0
    )
    assert all(r.alignment is None for r in maps.results)
    assert not alignment.any() and a == 1.0
    assert text.splitlines()[:2] == ["p=0.998 a=n/a defects: none"] * 2
