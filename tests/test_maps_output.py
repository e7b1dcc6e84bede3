"""What a maps folder holds for each ``output.maps`` format, and what its ``overview.png`` says
(docs/outputs.md). Fake plugins: fast, no torch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from grefine_core.app.saving import maps_format, overview_panels, result_maps
from grefine_core.app.visual import (
    BAR_HEIGHT,
    MIN_BAR_WIDTH,
    MIN_HEIGHT,
    footer_height,
    overview,
    panel_boxes,
)
from grefine_core.config import GRefineConfig
from grefine_core.pipeline import GRefine
from grefine_core.testing import fake_config, fake_plugins, make_test_image

PROMPT = "a red cat and a missing"
MAP_NAMES = [
    "aq_defect_map",
    "aq_phrase00_map",
    "aq_phrase00_noun_map",
    "aq_phrase01_map",
    "aq_phrase01_noun_map",
    "mask_binary",
    "mask_soft",
    "pq_map",
]
PNG_FILES = [
    ".grefine-maps",
    "aq_defect_map_overlay.png",
    "aq_phrase00_map_overlay.png",
    "aq_phrase00_noun_map_overlay.png",
    "aq_phrase01_map_overlay.png",
    "aq_phrase01_noun_map_overlay.png",
    "maps.npz",
    "mask_binary.png",
    "mask_soft.png",
    "overview.png",
    "pq_map_overlay.png",
]


def pipe(**fields):
    return GRefine(fake_config(**fields), extra_plugins=fake_plugins())


@pytest.fixture(scope="module")
def refined():
    return pipe().refine(make_test_image(), PROMPT)


@pytest.fixture(scope="module")
def assessed():
    return pipe().assess(make_test_image(), PROMPT)


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---------------------------------------------------------------- the three formats


@pytest.mark.parametrize(
    "maps, expected",
    [
        ("png", PNG_FILES),
        ("all", sorted(PNG_FILES + [f"{n}.npy" for n in MAP_NAMES])),
        ("none", None),
    ],
)
def test_each_maps_format_writes_exactly_its_files(refined, tmp_path, maps, expected):
    assert sorted(result_maps(refined)) == MAP_NAMES
    paths = refined.save(tmp_path, "cat", maps)
    top = ["cat.json", "cat.png"] + ([] if expected is None else ["cat_maps"])
    assert sorted(p.name for p in tmp_path.iterdir()) == top
    if expected is None:
        assert "maps" not in paths
    else:
        assert paths["maps"] == tmp_path / "cat_maps"
        assert listing(tmp_path / "cat_maps") == expected


def test_the_default_is_png_in_the_api_and_the_config(refined, tmp_path):
    assert GRefineConfig().output.maps == "png"
    refined.save(tmp_path, "cat")
    assert listing(tmp_path / "cat_maps") == PNG_FILES


@pytest.mark.parametrize("maps", ["png", "all"])
def test_maps_npz_round_trips_to_the_maps_of_the_result(refined, tmp_path, maps):
    refined.save(tmp_path, "cat", maps)
    folder = tmp_path / "cat_maps"
    expected = result_maps(refined)
    with np.load(folder / "maps.npz") as npz:
        assert sorted(npz.files) == MAP_NAMES
        for name, values in expected.items():
            assert npz[name].dtype == np.float32, name
            np.testing.assert_array_equal(npz[name], values.astype(np.float32), err_msg=name)
            if maps == "all":  # the .npy files hold the same arrays
                np.testing.assert_array_equal(np.load(folder / f"{name}.npy"), npz[name])
    np.testing.assert_array_equal(np.load(folder / "maps.npz")["pq_map"], refined.P)


def test_bools_of_the_old_save_maps_and_bad_values(refined, tmp_path):
    assert maps_format(True) == "all" and maps_format(False) == "none"
    assert maps_format("png") == "png"
    with pytest.raises(ValueError, match="maps must be one of all, png, none, got 'npy'"):
        refined.save(tmp_path, "cat", "npy")
    assert not tmp_path.joinpath("cat.json").exists()
    with pytest.raises(ValueError, match="save_maps"):
        GRefineConfig.model_validate({"output": {"save_maps": False}})  # renamed, not kept
    with pytest.raises(ValueError, match="maps"):
        GRefineConfig.model_validate({"output": {"maps": "npy"}})


def run_batch(out, maps):
    cfg = fake_config()
    cfg.output.maps = maps
    p = GRefine(cfg, extra_plugins=fake_plugins())
    image = out.parent / "cat.png"
    if not image.exists():
        make_test_image().save(image)
    return p.refine_many([(image, PROMPT)], out).outcomes[0].status


def test_a_rerun_in_another_format_leaves_nothing_stale(tmp_path):
    out = tmp_path / "out"
    assert run_batch(out, "all") == "done"
    assert len(list((out / "cat_maps").glob("*.npy"))) == len(MAP_NAMES)
    assert run_batch(out, "all") == "resumed"
    assert run_batch(out, "png") == "done"  # the format shapes the output: rerun
    assert listing(out / "cat_maps") == PNG_FILES  # no .npy left behind
    assert run_batch(out, "all") == "done"
    assert len(list((out / "cat_maps").glob("*.npy"))) == len(MAP_NAMES)
    assert run_batch(out, "none") == "done"
    assert sorted(p.name for p in out.iterdir()) == ["cat.json", "cat.png"]  # no maps.npz left
    assert run_batch(out, "png") == "done"
    assert listing(out / "cat_maps") == PNG_FILES
    assert run_batch(out, "png") == "resumed"


def test_the_cli_no_maps_flag_means_maps_none():
    from grefine_core.app.cli import _overrides, build_parser

    args = build_parser().parse_args(
        ["refine", "x.png", "--prompt", "p", "--out", "o", "--no-maps"]
    )
    assert _overrides(args)["output"] == {"maps": "none"}


# ---------------------------------------------------------------- the overview


def texts(panels):
    return [p.texts() for p in panels]


def test_overview_of_a_refine_names_its_panels_and_legends(refined):
    panels = overview_panels(refined)
    titles = [p.title for p in panels]
    assert titles == [
        "input",
        f"P: perceptual quality (p={refined.p:.3f})",
        f"A_defect: alignment defects (a={refined.a:.3f})",
        f"mask: {refined.mask.fraction:.1%} of pixels",
        "output",
    ]
    p_bar, a_bar, mask_bar = (p.bar for p in panels[1:4])
    assert (p_bar.low, p_bar.high) == ("0: needs fixing", "1: good")
    assert (a_bar.low, a_bar.high) == ("0: fine", "1: needs fixing")
    assert "coloured by 1 - P" in p_bar.note and "yellow = needs fixing" in p_bar.note
    assert a_bar.note == "yellow = needs fixing"
    assert mask_bar.note == "white: repainted by stage 1"
    assert panels[0].bar is None and panels[-1].bar is None


def test_overview_of_an_assess_has_no_output_panel(assessed):
    panels = overview_panels(assessed)
    words = " ".join(w for t in texts(panels) for w in t)
    assert "output" not in words.lower()
    assert panels[0].title == "input (assess: not refined)"
    assert [p.title.split(":")[0] for p in panels[1:]] == ["P", "A_defect", "mask"]
    assert "needs fixing" in words and "good" in words and "fine" in words
    assert panels[-1].bar.note == "white: stage 1 would repaint"  # nothing was repainted


def test_overview_of_a_high_quality_skip_says_unchanged(refined, monkeypatch):
    monkeypatch.setattr(refined, "high_quality", "p and a above their bounds")
    assert overview_panels(refined)[-1].title == "unchanged (high quality)"
    monkeypatch.setattr(refined, "mode", "assess")
    panels = overview_panels(refined)
    assert panels[-1].title.startswith("mask")
    assert panels[0].notes == ["high quality: refine leaves it unchanged"]


def test_a_colour_bar_adds_its_height_to_the_picture(refined):
    panels = overview_panels(refined)
    plain = overview(panels[:1])
    with_bar = overview(panels[:2])
    assert footer_height(panels[1]) >= BAR_HEIGHT
    assert with_bar.height == plain.height + footer_height(panels[1])
    assert with_bar.width > plain.width


def test_small_images_are_upscaled_and_text_gets_room(refined):
    panels = overview_panels(refined)
    panels[1].image = Image.new("RGB", (2, 40))  # a sliver: its column widens for the words
    picture = overview(panels, height=32)
    boxes = panel_boxes(panels, height=32)
    assert all(b[3] - b[1] == MIN_HEIGHT for b in boxes)  # upscaled to the least height
    assert picture.height > MIN_HEIGHT + footer_height(panels[1])
    assert all(left >= 0 and right <= picture.width for left, _, right, _ in boxes)
    assert boxes[1][2] - boxes[1][0] == 10  # 2 x 40 at 192 px high
    assert boxes[2][0] - boxes[1][2] > MIN_BAR_WIDTH // 2  # room for the bar and its labels


def colour_in(picture, box):
    left, top, right, bottom = box
    return picture.getpixel(((left + right) // 2, (top + bottom) // 2))


def test_good_p_and_fine_a_defect_have_the_same_colour(refined, monkeypatch):
    shape = refined.P.shape
    monkeypatch.setattr(refined.perceptual, "map", np.ones(shape, np.float32))  # all good
    monkeypatch.setattr(refined.alignment, "defect_map", np.zeros(shape, np.float32))  # all fine
    panels = overview_panels(refined)
    picture = overview(panels)
    boxes = panel_boxes(panels)
    good, fine = colour_in(picture, boxes[1]), colour_in(picture, boxes[2])
    assert good == fine
    monkeypatch.setattr(refined.perceptual, "map", np.zeros(shape, np.float32))  # all bad
    monkeypatch.setattr(refined.alignment, "defect_map", np.ones(shape, np.float32))  # all defect
    panels = overview_panels(refined)
    picture = overview(panels)
    bad, defect = colour_in(picture, boxes[1]), colour_in(picture, boxes[2])
    assert bad == defect != good
    assert bad == (253, 231, 37)  # yellow = needs fixing
    # The bars agree: P's "needs fixing" end (left) has the colour of A_defect's (right).
    p_bar, a_bar = panels[1].bar, panels[2].bar
    ends = np.array([0.0, 1.0])
    assert (p_bar.colours(ends)[0] == a_bar.colours(ends)[1]).all()


def test_quality_overlays_are_coloured_like_the_overview(refined, tmp_path, monkeypatch):
    shape = refined.P.shape
    monkeypatch.setattr(refined.perceptual, "map", np.zeros(shape, np.float32))  # all bad
    monkeypatch.setattr(refined.alignment, "defect_map", np.ones(shape, np.float32))  # all defect
    refined.save(tmp_path, "cat", overlay_alpha=1.0)
    folder = tmp_path / "cat_maps"
    pq = Image.open(folder / "pq_map_overlay.png").getpixel((3, 3))
    aq = Image.open(folder / "aq_defect_map_overlay.png").getpixel((3, 3))
    assert pq == aq == (253, 231, 37)
