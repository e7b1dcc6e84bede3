"""Per-region stage 1: the mask's blobs grouped into regions (far blobs apart, touching or near
ones together, merged when one box is cheaper), each inpainted at a bucketed working size with
its own seed and stitched back; pixels outside the dilated mask stay identical."""

from __future__ import annotations

import numpy as np
import pytest
from grefine_masks.ops import fuse_paper
from grefine_sdxl import geometry
from grefine_sdxl.refine import _covering, refine_stage1
from grefine_sdxl.settings import SDXLSettings
from PIL import Image

from grefine_core.config import load_config
from grefine_core.types import AlignmentResult, Emphasis, PerceptualResult, PhraseAlignment

GEOMETRY = dict(padding=0.25, min_padding_px=16, max_aspect=4.0, native=1024, min_side=512,
                multiple=8)  # fmt: skip
BUCKETS = geometry.bucket_sizes(1024, (0.5, 0.75, 1.0), 8)


def _regions(binary: np.ndarray, buckets=BUCKETS):
    labels, count = geometry.components(binary)
    return geometry.plan_regions(labels, count, buckets=buckets, **GEOMETRY)


def _blobs(*boxes, size=1024):
    m = np.zeros((size, size), bool)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def test_buckets_are_fractions_of_the_native_size():
    assert BUCKETS == [512, 768, 1024]
    assert geometry.bucket_sizes(64, (0.5, 0.75, 1.0), 8) == [32, 48, 64]
    assert geometry.snap(500, BUCKETS) == 512 and geometry.snap(513, BUCKETS) == 768
    assert geometry.snap(2000, BUCKETS) == 1024 and geometry.snap(300, []) == 300


def test_two_far_blobs_give_two_regions():
    regions = _regions(_blobs((20, 20, 300, 300), (724, 724, 1004, 1004)))
    assert len(regions) == 2
    (a, b) = regions
    assert not geometry._overlap(a.box, b.box)
    assert a.box[0] < 20 and a.box[2] > 300 and b.box[0] < 724 and b.box[2] > 1004
    for r in regions:
        assert r.working_size[0] in BUCKETS and r.working_size[1] in BUCKETS


def test_touching_and_near_blobs_give_one_region():
    touching = _blobs((100, 100, 300, 300), (300, 150, 420, 260))  # share an edge: one component
    near = _blobs((100, 100, 300, 300), (306, 150, 420, 260))  # 6 px apart: padded boxes overlap
    assert geometry.components(touching)[1] == 1 and geometry.components(near)[1] == 2
    for mask in (touching, near):
        [region] = _regions(mask)
        assert region.box[0] < 100 and region.box[2] > 420


def test_blobs_merge_when_one_box_is_cheaper_than_two():
    # Two 200 px blobs 140 px apart: padded boxes do not overlap, but one 768x512 box costs
    # less than two 512x512 ones.
    mask = _blobs((100, 100, 300, 300), (440, 100, 640, 300))
    [region] = _regions(mask)
    assert region.components == (1, 2)
    apart = [geometry.padded_box((100, 100, 300, 300), 1024, 1024, 0.25, 16, 4.0),
             geometry.padded_box((440, 100, 640, 300), 1024, 1024, 0.25, 16, 4.0)]  # fmt: skip
    assert not geometry._overlap(*apart)
    w, h = region.working_size
    assert w * h <= 2 * 512 * 512


def test_region_boxes_take_the_bucket_aspect_where_the_image_allows():
    [region] = _regions(_blobs((400, 500, 700, 560)))  # a flat blob
    x0, y0, x1, y1 = region.box
    w, h = region.working_size
    assert abs((x1 - x0) / (y1 - y0) - w / h) < 0.02


def test_region_order_and_seeds_do_not_depend_on_labelling():
    mask = _blobs((20, 20, 200, 200), (820, 420, 1000, 600), (400, 820, 600, 1000))
    labels, count = geometry.components(mask)
    reversed_labels = np.where(labels > 0, count + 1 - labels, 0)
    a = geometry.plan_regions(labels, count, buckets=BUCKETS, **GEOMETRY)
    b = geometry.plan_regions(reversed_labels, count, buckets=BUCKETS, **GEOMETRY)
    assert [r.box for r in a] == [r.box for r in b] and len(a) == 3
    seeds = [geometry.region_seed(7, r.box) for r in a]
    assert seeds == [geometry.region_seed(7, r.box) for r in b]
    assert len(set(seeds)) == 3 and geometry.region_seed(8, a[0].box) != seeds[0]
    assert all(0 <= s < 2**63 for s in seeds)


def test_speckle_is_one_box():
    mask = np.zeros((1024, 1024), bool)
    mask[::30, ::30] = True  # 35 x 35 isolated pixels
    assert len(_regions(mask)) == 1


def test_a_region_emphasises_only_the_defects_it_covers():
    shape = (64, 64)
    here = np.zeros(shape, np.float32)
    here[:32] = 0.9  # the "red hat" object is in the top half
    phrases = [
        PhraseAlignment("red hat", "hat", (2, 9), -1, 0.2, 0.8, here, here, "attribute"),
        PhraseAlignment("a dog", "dog", (14, 19), -1, 0.1, 0.1, here * 0, here * 0, "noun"),
    ]
    emphasis = [Emphasis("red hat", (2, 9), 1.1), Emphasis("a dog", (14, 19), 1.1)]
    aq = AlignmentResult(0.3, np.zeros(shape, np.float32), phrases, emphasis)
    top, bottom = np.zeros(shape, bool), np.zeros(shape, bool)
    top[5:10, 5:10], bottom[50:60, 5:10] = True, True
    assert [e.text for e in _covering(aq, top).emphasis] == ["red hat", "a dog"]
    assert [e.text for e in _covering(aq, bottom).emphasis] == ["a dog"]  # missing: everywhere


# --------------------------------------------------------------------------- on the tiny model

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def settings() -> SDXLSettings:
    raw = load_config(preset="tiny", environ={}).plugins["sdxl"]
    return SDXLSettings.model_validate({**raw, "steps": 2, "strength_mode": "fixed",
                                        "strength": 0.9})  # fmt: skip


@pytest.fixture(scope="module")
def pipe(settings):
    from grefine_sdxl.loading import load_inpaint_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_inpaint_pipeline(settings)
    finally:
        torch.set_num_threads(threads)


def _two_corner_mask(size=256):
    P = np.ones((size, size), np.float32)
    P[10:50, 10:50] = 0.0
    P[200:245, 190:240] = 0.0
    return fuse_paper(PerceptualResult(0.4, P), None, dilate_px=2, feather_sigma=1.5)


def _refine(pipe, settings, image, mask, seed=3, **overrides):
    s = settings.model_copy(update=overrides)
    P = PerceptualResult(0.4, np.ones((image.height, image.width), np.float32))
    return refine_stage1(image, mask, P, None, "a red ball", s, get_pipeline=lambda: pipe,
                         generator=torch.Generator("cpu").manual_seed(seed), seed=seed)  # fmt: skip


def _image(size=256):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def test_each_region_is_inpainted_and_stitched_back_exactly(pipe, settings):
    image, mask = _image(), _two_corner_mask()
    out = _refine(pipe, settings, image, mask)
    info = out.info
    assert info["path"] == "regions" and len(info["regions"]) == 2
    before, after = np.asarray(image), np.asarray(out.image)
    np.testing.assert_array_equal(after[~mask.binary], before[~mask.binary])
    labels, _ = geometry.components(mask.binary)
    for label in (1, 2):
        blob = labels == label
        assert (after[blob] != before[blob]).any(), f"blob {label} was not refined"
    for r in info["regions"]:
        assert r["working_size"][0] in (32, 48, 64) and r["steps_run"] == info["steps_run"]
    seeds = {r["seed"] for r in info["regions"]}
    assert len(seeds) == 2 and 3 not in seeds


def test_one_box_over_both_blobs_when_per_region_is_off(pipe, settings):
    image, mask = _image(), _two_corner_mask()
    out = _refine(pipe, settings, image, mask, per_region=False)
    assert out.info["path"] in ("crop", "full") and len(out.info["regions"]) == 1
    np.testing.assert_array_equal(
        np.asarray(out.image)[~mask.binary], np.asarray(image)[~mask.binary]
    )


def test_the_prompt_is_encoded_once_for_all_regions(pipe, settings, monkeypatch):
    calls = []
    original = type(pipe).encode_prompt

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("prompt"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "encode_prompt", counting)
    out = _refine(pipe, settings, _image(), _two_corner_mask())
    assert len(out.info["regions"]) == 2
    assert calls.count("a red ball") == 1  # ours; the pipeline calls with prompt=None after


def test_region_results_are_stable_across_runs(pipe, settings):
    a = _refine(pipe, settings, _image(), _two_corner_mask())
    b = _refine(pipe, settings, _image(), _two_corner_mask())
    np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))


def test_a_union_that_is_the_whole_image_costs_the_full_path():
    # A small image: each blob's box is upscaled to 512, but the union, the whole image, would
    # take the full path at the native 1024: two regions are cheaper than one.
    small = _blobs((10, 10, 60, 60), (190, 190, 246, 246), size=256)
    regions = _regions(small)
    assert len(regions) == 2 and all(r.working_size == (512, 512) for r in regions)
