"""The pipeline facade with fake plugins: flow, ablations, validation, results on disk."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from PIL import Image

from grefine_core.errors import InputError, OutputError, PluginError, UsageError
from grefine_core.markers import hookimpl
from grefine_core.pipeline import GRefine
from grefine_core.testing import (
    RaisingPlugin,
    fake_config,
    fake_plugins,
    make_test_image,
)
from grefine_core.types import MaskResult, PerceptualResult

PROMPT = "a red cat and a missing"  # the fake AQ flags the noun "missing" as absent


def run(select=None, disable=None, extra=None, prompt=PROMPT, image=None, mode="refine", **fields):
    cfg = fake_config(select=select, disable=disable, **fields)
    pipe = GRefine(cfg, extra_plugins={**fake_plugins(), **(extra or {})})
    img = image if image is not None else make_test_image()
    return getattr(pipe, mode)(img, prompt)


def statuses(result):
    return {r.slot: r.status for r in result.trace}


def test_full_run_fills_every_slot_in_order():
    r = run()
    assert [t.slot for t in r.trace] == [
        "perceptual",
        "parser",
        "alignment",
        "fuser",
        "stage1",
        "stage2",
    ]
    assert set(statuses(r).values()) == {"ran"}
    assert [t.plugin for t in r.trace] == [
        "fake_pq",
        "fake_parser",
        "fake_aq",
        "fake_fuser",
        "fake_stage1",
        "fake_stage2",
    ]
    assert r.P.shape == (48, 64) and r.A_defect.shape == (48, 64)
    assert r.mask.binary.any() and 0 < r.mask.fraction < 1
    assert r.image.size == (64, 48) and r.refined
    assert all(t.seed == 0 for t in r.trace if t.status == "ran")


@pytest.mark.parametrize(
    "disable, expect_skipped",
    [
        (["fake_pq"], {"perceptual"}),
        (["fake_aq"], {"parser", "alignment"}),
        (["fake_stage2"], {"stage2"}),
        (["fake_pq", "fake_stage2"], {"perceptual", "stage2"}),
    ],
)
def test_ablation_by_disable_records_skips(disable, expect_skipped):
    r = run(disable=disable)
    skipped = {s for s, st in statuses(r).items() if st == "skipped"}
    assert skipped == expect_skipped
    if "perceptual" in expect_skipped:
        assert r.perceptual.neutral and r.p == 1.0 and (r.P == 1).all()
    if "alignment" in expect_skipped:
        assert r.alignment is None and r.a is None
    if "stage2" in expect_skipped:
        # stage-1 output is final: masked pixels brightened, others untouched (no +1 of stage 2)
        src = np.asarray(make_test_image())
        out = np.asarray(r.image)
        assert (out[~r.mask.binary] == src[~r.mask.binary]).all()


def test_no_pq_means_p_equals_one_in_the_fuser():
    seen = {}

    class Spy:
        @hookimpl
        def grefine_fuse_masks(self, perceptual, alignment, context):
            seen["P"] = perceptual.map.copy()
            seen["alignment"] = alignment
            b = np.zeros(perceptual.map.shape, bool)
            return MaskResult(b.astype(np.float32), b, 0.0)

    r = run(select={"fuser": "spy"}, disable=["fake_pq", "fake_aq"], extra={"spy": Spy()})
    assert (seen["P"] == 1).all() and seen["alignment"] is None
    # Both indicators off count as perfect: high quality, neither stage runs.
    for slot in ("stage1", "stage2"):
        assert r.stage(slot).status == "skipped" and "high-quality" in r.stage(slot).reason


def test_select_swaps_the_plugin_and_the_trace_names_it():
    class OtherStage2:
        @hookimpl
        def grefine_refine_stage2(self, image, context):
            from grefine_core.types import StageOutput

            return StageOutput(image, {"other": True})

    r = run(select={"stage2": "other"}, extra={"other": OtherStage2()})
    rec = r.stage("stage2")
    assert rec.plugin == "other" and rec.info == {"other": True}


def test_select_none_skips_a_slot():
    r = run(select={"stage1": "none"})
    assert (
        r.stage("stage1").status == "skipped" and "no plugin selected" in r.stage("stage1").reason
    )


def test_hq_image_is_returned_unchanged_by_both_stages():
    """docs/refiners.md: p and a at or above the bounds and no defect -> neither stage hook is called."""
    bright = Image.new("RGB", (32, 32), (250, 250, 250))  # fake p = 0.98, fake a = 0.9
    from grefine_core.config import HQSkipSettings

    r = run(image=bright, prompt="a red cat", hq_skip=HQSkipSettings(p_bound=0.95, a_bound=0.9))
    for slot in ("stage1", "stage2"):
        rec = r.stage(slot)
        assert rec.status == "skipped" and rec.reason.startswith("high-quality image: p=0.98")
    assert r.high_quality and not r.refined
    assert np.array_equal(np.asarray(r.image), np.asarray(bright))
    report = r.to_dict()
    assert report["high_quality"] is True and "no alignment defect" in report["high_quality_reason"]


@pytest.mark.parametrize(
    ("p_bound", "a_bound", "prompt", "why"),
    [
        (0.99, 0.9, "a red cat", "p below its bound"),
        (0.95, 0.91, "a red cat", "a below its bound"),
        (0.0, 0.0, "a red cat and a missing", "an alignment defect"),
    ],
)
def test_not_hq_refines_even_when_the_other_bound_holds(p_bound, a_bound, prompt, why):
    """Each of the three conditions alone keeps the image from counting as high quality."""
    from grefine_core.config import HQSkipSettings

    bright = Image.new("RGB", (32, 32), (250, 250, 250))
    r = run(image=bright, prompt=prompt, hq_skip=HQSkipSettings(p_bound=p_bound, a_bound=a_bound))
    assert r.high_quality is None, why
    assert r.stage("stage2").status == "ran", why


def test_empty_mask_skips_stage1_only():
    """Not high quality (p < bound) but nothing masked: stage 1 skipped, stage 2 still runs."""
    from grefine_core.config import HQSkipSettings

    bright = Image.new("RGB", (32, 32), (250, 250, 250))
    r = run(image=bright, prompt="a red cat", hq_skip=HQSkipSettings(p_bound=1.0, a_bound=1.0))
    rec = r.stage("stage1")
    assert rec.status == "skipped" and "empty mask" in rec.reason
    assert r.stage("stage2").status == "ran" and r.refined


def test_assess_runs_no_refiner():
    r = run(mode="assess")
    assert r.stage("stage1").reason == "assess only" and r.stage("stage2").reason == "assess only"
    assert r.image is r.input_image and not r.refined


def test_empty_prompt_skips_alignment_with_a_reason():
    r = run(prompt="   ")
    assert (
        r.stage("alignment").status == "skipped" and "empty prompt" in r.stage("alignment").reason
    )


def test_long_and_non_ascii_prompts_run():
    r = run(prompt="ein roter Kater 🐱 mit Hut, " * 80)
    assert len(r.prompt) > 2000 and r.parsed is not None and r.to_json()
    assert "🐱" in json.loads(r.to_json())["prompt"]


def test_a_raising_plugin_is_named_with_its_slot():
    with pytest.raises(
        PluginError, match=r"plugin 'bad' failed in slot 'stage1': RuntimeError: kaput"
    ) as e:
        run(select={"stage1": "bad"}, extra={"bad": RaisingPlugin("stage1", "kaput")})
    assert e.value.plugin == "bad" and e.value.slot == "stage1"


def test_wrong_shape_and_nan_maps_are_rejected_naming_the_plugin():
    class WrongShape:
        @hookimpl
        def grefine_fuse_masks(self, perceptual, alignment, context):
            b = np.zeros((3, 3), bool)
            return MaskResult(b.astype(np.float32), b, 0.0)

    class NaNMap:
        @hookimpl
        def grefine_perceptual_map(self, image, context):
            m = np.full((image.height, image.width), np.nan, np.float32)
            return PerceptualResult(0.5, m)

    with pytest.raises(
        PluginError,
        match=r"plugin 'wrong' \(slot 'fuser'\) returned the soft mask of shape \(3, 3\); expected \(H, W\) = \(48, 64\)",
    ):
        run(select={"fuser": "wrong"}, extra={"wrong": WrongShape()})
    with pytest.raises(
        PluginError,
        match=r"plugin 'nan' \(slot 'perceptual'\) returned the perceptual map P with 3072 NaN/inf values",
    ):
        run(select={"perceptual": "nan"}, extra={"nan": NaNMap()})


def test_a_plugin_returning_none_is_an_error():
    class Lazy:
        @hookimpl
        def grefine_refine_stage2(self, image, context):
            return None

    with pytest.raises(PluginError, match=r"plugin 'lazy' returned nothing for slot 'stage2'"):
        run(select={"stage2": "lazy"}, extra={"lazy": Lazy()})


def test_result_save_writes_everything(tmp_path):
    r = run()
    paths = r.save(tmp_path, "cat")
    assert paths["image"] == tmp_path / "cat.png" and Image.open(paths["image"]).size == (64, 48)
    report = json.loads(paths["json"].read_text())
    assert report["perceptual"]["score"] == pytest.approx(r.p)
    assert report["alignment"]["defects"] == [
        {"text": "a missing", "noun": "missing", "kind": "noun"}
    ]
    assert report["mask"]["fraction"] == pytest.approx(r.mask.fraction)
    assert [t["slot"] for t in report["trace"]] == [
        "perceptual",
        "parser",
        "alignment",
        "fuser",
        "stage1",
        "stage2",
    ]
    assert report["plumbing_only"] is True and "plumbing" in report["notice"]
    maps = paths["maps"]
    with np.load(maps / "maps.npz") as npz:
        for name in ("pq_map", "aq_defect_map", "mask_soft", "mask_binary"):
            assert npz[name].shape == (48, 64) and npz[name].dtype == np.float32
        np.testing.assert_array_equal(npz["pq_map"], r.P)
    assert not list(maps.glob("*.npy"))  # "png", the default: one maps.npz, no .npy
    assert (maps / "pq_map_overlay.png").is_file() and (maps / "mask_binary.png").is_file()
    assert Image.open(maps / "overview.png").size[1] > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.json", "cat.png", "cat_maps"]


@pytest.mark.parametrize(
    "maps, writer, fail_at", [("all", "save", 3), ("png", "savez_compressed", 1)]
)
def test_disk_full_during_save_leaves_no_partial_files(
    tmp_path, monkeypatch, maps, writer, fail_at
):
    r = run()
    calls = {"n": 0}
    real_write = getattr(np, writer)

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(np, writer, failing_write)
    with pytest.raises(OutputError, match=r"failed: the disk is full"):
        r.save(tmp_path, "cat", maps)
    assert calls["n"] == fail_at
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_directory(tmp_path, monkeypatch):
    r = run()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"cannot be created"):
        r.save(blocker / "sub", "cat")
    import os

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(OutputError, match=r"is not writable"):
        r.save(tmp_path / "out", "cat")


def test_refine_many_reuses_models_continues_after_failures_and_resumes(tmp_path):
    ok = tmp_path / "ok.png"
    make_test_image().save(ok)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"nope")
    cfg = fake_config()
    pipe = GRefine(cfg, extra_plugins=fake_plugins())
    loads = []
    pipe.models.get_or_create("shared-model", lambda: loads.append(1) or object())
    out = tmp_path / "out"
    report = pipe.refine_many([(ok, PROMPT), (corrupt, PROMPT), (ok, PROMPT)], out)
    assert [o.status for o in report.outcomes] == ["done", "failed", "done"]
    assert "corrupt.png" in report.failed[0].error
    assert (
        (out / "ok.json").is_file()
        and (out / "ok-3.json").is_file()
        or (out / "ok-2.json").is_file()
    )
    report = pipe.refine_many([(ok, PROMPT), (corrupt, PROMPT)], out)
    assert [o.status for o in report.outcomes] == ["resumed", "failed"]
    assert len(loads) == 1


def test_batch_never_overwrites_an_input(tmp_path):
    img = tmp_path / "cat.png"
    make_test_image().save(img)
    pipe = GRefine(fake_config(), extra_plugins=fake_plugins())
    with pytest.raises(OutputError, match=r"refusing to overwrite the input"):
        pipe.refine_many([(img, PROMPT)], tmp_path)


def test_prompt_must_be_a_string():
    with pytest.raises(InputError, match=r"prompt must be a string, got int"):
        run(prompt=3)


def test_observer_hooks_see_every_stage_and_progress():
    events = []

    class Observer:
        @hookimpl
        def grefine_run_start(self, context):
            events.append(("run_start", context.item_name))

        @hookimpl
        def grefine_stage_start(self, context, slot, plugin):
            events.append(("start", slot))

        @hookimpl
        def grefine_stage_progress(self, context, slot, step, total):
            events.append(("progress", slot, step, total))

        @hookimpl
        def grefine_stage_end(self, context, record):
            events.append(("end", record.slot, record.status))

        @hookimpl
        def grefine_run_end(self, context, result):
            events.append(("run_end", result.refined))

    cfg = fake_config(disable=["fake_stage2"])
    GRefine(cfg, extra_plugins=fake_plugins(), observers=[Observer()]).refine(
        make_test_image(), PROMPT, name="x"
    )
    assert events[0] == ("run_start", "x") and events[-1] == ("run_end", True)
    assert ("progress", "stage1", 1, 1) in events
    assert ("end", "stage2", "skipped") in events
    assert events.count(("start", "perceptual")) == 1


def test_refine_many_accepts_in_memory_images_without_out_dir():
    pipe = GRefine(fake_config(), extra_plugins=fake_plugins())
    report = pipe.refine_many(
        [(make_test_image(seed=1), "a cat"), (make_test_image(seed=2), "a dog")]
    )
    assert [o.item.name for o in report.outcomes] == ["image", "image-2"]
    assert all(o.status == "done" and o.result is not None for o in report.outcomes)
    assert [o.result.seed for o in report.outcomes] == [0, 1]


def test_batch_names_never_collide_with_a_file_named_like_a_suffix(tmp_path):
    from grefine_core.app.manifest import unique_items

    a, a2 = tmp_path / "x" / "a.png", tmp_path / "a-2.png"
    names = [i.name for i in unique_items([(a, "p"), (a, "p"), (a2, "p"), (a, "p")])]
    assert names == ["a", "a-3", "a-2", "a-4"]


def test_non_finite_numbers_from_a_plugin_are_saved_as_null(tmp_path):
    class NaNInfo:
        @hookimpl
        def grefine_refine_stage2(self, image, context):
            from grefine_core.types import StageOutput

            return StageOutput(image, {"loss": float("nan"), "scale": np.float32("inf")})

    r = run(select={"stage2": "nan_info"}, extra={"nan_info": NaNInfo()})
    paths = r.save(tmp_path, "cat", maps="none")
    info = json.loads(paths["json"].read_text())["trace"][5]["info"]
    assert info == {"loss": None, "scale": None}


def test_a_plugin_failing_on_one_item_does_not_stop_the_next(tmp_path):
    class Picky:
        @hookimpl
        def grefine_refine_stage2(self, image, context):
            from grefine_core.types import StageOutput

            if context.item_name == "first":
                raise ValueError("cannot handle this one")
            return StageOutput(image)

    cfg = fake_config(select={"stage2": "picky"})
    pipe = GRefine(cfg, extra_plugins={**fake_plugins(), "picky": Picky()})
    for name in ("first", "second"):
        make_test_image().save(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    report = pipe.refine_many([(tmp_path / "first.png", "x"), (tmp_path / "second.png", "x")], out)
    assert [o.status for o in report.outcomes] == ["failed", "done"]
    assert report.failed[0].error == (
        "plugin 'picky' failed in slot 'stage2': ValueError: cannot handle this one"
    )
    assert report.exit_code == 1 and (out / "second.json").is_file()
    assert not (out / "first.json").exists() and not (out / "first.png").exists()


def test_an_unexpected_error_fails_the_item_not_the_batch(tmp_path, monkeypatch):
    from grefine_core.app import batch

    real_save = batch.save_outcome

    def save(result, target, name, output):
        if name == "image":
            raise KeyError("bug")
        return real_save(result, target, name, output)

    monkeypatch.setattr(batch, "save_outcome", save)
    pipe = GRefine(fake_config(), extra_plugins=fake_plugins())
    report = pipe.refine_many([(make_test_image(), "a"), (make_test_image(), "b")], tmp_path)
    assert [o.status for o in report.outcomes] == ["failed", "done"]
    assert report.failed[0].error == "unexpected KeyError: 'bug'" and report.exit_code == 1


def test_bad_inputs_only_give_exit_code_2(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    pipe = GRefine(fake_config(), extra_plugins=fake_plugins())
    report = pipe.refine_many([(tmp_path / "empty.png", "x")], tmp_path / "out")
    assert report.exit_code == 2 and "is empty (0 bytes)" in report.failed[0].error


def test_batch_never_replaces_a_maps_folder_holding_an_input(tmp_path):
    holder = tmp_path / "cat_maps"
    holder.mkdir()
    img = holder / "cat.png"
    make_test_image().save(img)
    pipe = GRefine(fake_config(), extra_plugins=fake_plugins())
    with pytest.raises(OutputError, match=r"refusing to replace the folder .*cat_maps'.*holds"):
        pipe.refine_many([(img, PROMPT)], tmp_path)
    assert img.is_file()


@pytest.mark.parametrize(
    "declared, message",
    [
        (
            RuntimeError("oops"),
            r"plugin 'odd' failed in grefine_settings_models\(\): RuntimeError: oops",
        ),
        (["not", "a", "dict"], r"plugin 'odd': grefine_settings_models\(\) must return"),
        ({"odd": dict}, r"plugin 'odd': settings section 'odd' must map to a pydantic model"),
    ],
)
def test_a_broken_settings_declaration_names_the_plugin(declared, message):
    class Odd:
        @hookimpl
        def grefine_settings_models(self):
            if isinstance(declared, Exception):
                raise declared
            return declared

    with pytest.raises(PluginError, match=message):
        GRefine(fake_config(), extra_plugins={**fake_plugins(), "odd": Odd()})


def test_parse_alone_reports_progress_and_needs_a_parser():
    from grefine_core.errors import UsageError

    events = []

    class SlowParser:
        @hookimpl
        def grefine_parse_prompt(self, prompt, context):
            from grefine_core.types import ParsedPrompt

            context.progress(1, 2)
            return ParsedPrompt(prompt, [], "slow")

    class Observer:
        @hookimpl
        def grefine_stage_progress(self, context, slot, step, total):
            events.append((context.item_name, slot, step, total))

    cfg = fake_config(select={"parser": "slow"})
    pipe = GRefine(
        cfg, extra_plugins={**fake_plugins(), "slow": SlowParser()}, observers=[Observer()]
    )
    assert pipe.parse("a cat").parser == "slow" and events == [("prompt", "parser", 1, 2)]
    pipe = GRefine(fake_config(select={"parser": "none"}), extra_plugins=fake_plugins())
    with pytest.raises(UsageError, match=r"no parser to run: no plugin selected.*fake_parser"):
        pipe.parse("a cat")


def test_resume_needs_a_report_of_the_same_mode_and_prompt(tmp_path):
    img = tmp_path / "cat.png"
    make_test_image().save(img)
    out = tmp_path / "out"
    pipe = GRefine(fake_config(), extra_plugins=fake_plugins())
    assert pipe.refine_many([(img, PROMPT)], out, mode="assess").outcomes[0].status == "done"
    # an assess report is not a refined result
    assert pipe.refine_many([(img, PROMPT)], out).outcomes[0].status == "done"
    assert json.loads((out / "cat.json").read_text())["refined"] is True
    assert pipe.refine_many([(img, PROMPT)], out).outcomes[0].status == "resumed"
    assert pipe.refine_many([(img, "another prompt")], out).outcomes[0].status == "done"
    (out / "cat.json").write_text("{truncated")  # not a report grefine wrote: never replaced
    outcome = pipe.refine_many([(img, "another prompt")], out).outcomes[0]
    assert outcome.status == "failed" and "is not a grefine report" in outcome.error
    assert (out / "cat.json").read_text() == "{truncated"


def test_pipelines_can_share_one_model_cache():
    from grefine_core.context import ModelCache

    shared = ModelCache()
    a = GRefine(fake_config(), extra_plugins=fake_plugins(), models=shared)
    b = GRefine(fake_config(disable=["fake_stage2"]), extra_plugins=fake_plugins(), models=shared)
    built = []
    first = a.models.get_or_create("clip", lambda: built.append(1) or object())
    assert b.models.get_or_create("clip", lambda: built.append(2) or object()) is first
    assert (
        built == [1] and GRefine(fake_config(), extra_plugins=fake_plugins()).models is not shared
    )


def test_start_then_advance_is_refine_and_the_parts_survive_pickling():
    """An engine runs the parts in different processes: pickled between them, with a fresh
    pipeline of the same configuration for each part, the result equals one refine()."""
    import pickle

    image = make_test_image()
    whole = GRefine(fake_config(), extra_plugins=fake_plugins()).refine(image, PROMPT, seed=4)
    part = GRefine(fake_config(), extra_plugins=fake_plugins()).start(image, PROMPT, seed=4)
    assert [r.slot for r in part.trace] == ["perceptual", "parser", "alignment", "fuser"]
    assert np.array_equal(np.asarray(part.image), np.asarray(part.input_image))  # not refined yet
    for slot in ("stage1", "stage2"):
        part = pickle.loads(pickle.dumps(part))
        GRefine(fake_config(), extra_plugins=fake_plugins()).advance(part, slot)
    assert np.array_equal(np.asarray(part.image), np.asarray(whole.image))
    assert [(r.slot, r.status) for r in part.trace] == [(r.slot, r.status) for r in whole.trace]
    assert part.refined and whole.refined


def test_advance_refuses_a_stage_out_of_order():
    pipe = GRefine(fake_config(), extra_plugins=fake_plugins())
    result = pipe.start(make_test_image(), PROMPT)
    with pytest.raises(UsageError, match=r"advance\('stage2'\): 'image' has run 0 of its two"):
        pipe.advance(result, "stage2")
    pipe.advance(result, "stage1")
    pipe.advance(result, "stage2")
    with pytest.raises(UsageError, match="has run 2 of its two stages"):
        pipe.advance(result, "stage2")
