"""Nothing lost, nothing stale (docs/outputs.md): run fingerprints, resume, crash-safe publishing,
the writer lock, and never deleting what grefine did not write. Fake plugins: fast, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from grefine_core.app.outputs import CRASH_STEPS, STAGE_PREFIX, output_lock, verify_item
from grefine_core.errors import OutputError
from grefine_core.pipeline import GRefine
from grefine_core.testing import fake_config, fake_pipeline, fake_plugins, make_test_image

PROMPT = "a red cat and a missing"


pipe = fake_pipeline


def status(pipeline, image, out, prompt=PROMPT, **kw):
    return pipeline.refine_many([(image, prompt)], out, **kw).outcomes[0].status


# ---------------------------------------------------------------- fingerprint and resume


def test_resume_reruns_when_anything_that_shapes_the_output_changed(image, tmp_path, caplog):
    out = tmp_path / "out"
    assert status(pipe(), image, out) == "done"
    assert status(pipe(), image, out) == "resumed"
    caplog.set_level("WARNING")
    assert status(pipe(seed=7), image, out) == "done"  # another seed
    assert "seed 0 -> 7" in caplog.text
    assert status(pipe(seed=7), image, out) == "resumed"
    assert status(pipe(seed=7, preset="other"), image, out) == "done"  # another preset
    assert 'preset "tiny" -> "other"' in caplog.text
    caplog.clear()
    make_test_image(seed=3).save(image)  # the input file changed
    assert status(pipe(seed=7, preset="other"), image, out) == "done"
    assert "input.sha256" in caplog.text
    report = json.loads((out / "cat.json").read_text())
    assert report["fingerprint"]["seed"] == 7 and report["fingerprint"]["preset"] == "other"
    assert "input.sha256" in report["rerun_because"]  # the report names what changed


def test_resume_reruns_when_a_vouched_file_was_changed_or_removed(image, tmp_path, caplog):
    out = tmp_path / "out"
    p = pipe()
    assert status(p, image, out) == "done"
    report = json.loads((out / "cat.json").read_text())
    assert "cat.png" in report["files"] and "cat_maps/overview.png" in report["files"]
    (out / "cat_maps" / "overview.png").unlink()
    caplog.set_level("WARNING")
    assert status(p, image, out) == "done"
    assert "cat_maps/overview.png is missing" in caplog.text
    marked = Image.open(out / "cat.png")
    info = PngInfo()
    info.add_text("grefine", marked.text["grefine"])
    Image.new("RGB", marked.size).save(out / "cat.png", pnginfo=info)  # ours, other pixels
    assert status(p, image, out) == "done"  # the image no longer matches its hash
    assert status(p, image, out) == "resumed"


def test_a_plain_image_in_place_of_ours_is_refused_even_beside_our_report(image, tmp_path):
    out = tmp_path / "out"
    p = pipe()
    status(p, image, out)
    Image.new("RGB", (4, 4)).save(out / "cat.png")  # the user's own picture, no grefine chunk
    outcome = p.refine_many([(image, PROMPT)], out, resume=False).outcomes[0]
    assert outcome.status == "failed" and "refusing to replace" in outcome.error
    assert Image.open(out / "cat.png").size == (4, 4)


def test_no_maps_after_maps_removes_the_old_maps(image, tmp_path):
    out = tmp_path / "out"
    status(pipe(), image, out)
    assert (out / "cat_maps").is_dir()
    cfg = fake_config()
    cfg.output.maps = "none"
    assert status(GRefine(cfg, extra_plugins=fake_plugins()), image, out) == "done"
    assert not (out / "cat_maps").exists()
    assert sorted(p.name for p in out.iterdir()) == ["cat.json", "cat.png"]


def test_settings_of_plugins_in_no_slot_and_caches_do_not_rerun(image, tmp_path):
    out = tmp_path / "out"
    assert status(pipe(), image, out) == "done"
    cfg = fake_config()
    cfg.plugins = {**cfg.plugins, "metrics": {"device": "cuda"}}  # evaluation only
    assert status(GRefine(cfg, extra_plugins=fake_plugins()), image, out) == "resumed"
    from grefine_core.app.fingerprint import model_identifiers

    cache = tmp_path / "cache"
    cache.mkdir()
    assert model_identifiers({"clip": {"cache_dir": str(cache), "model": str(cache)}}) == {
        "clip.model": model_identifiers({"x": {"model": str(cache)}})["x.model"]
    }


def test_a_report_from_an_older_grefine_is_not_trusted(image, tmp_path):
    out = tmp_path / "out"
    p = pipe()
    status(p, image, out)
    report = json.loads((out / "cat.json").read_text())
    report.pop("fingerprint")
    (out / "cat.json").write_text(json.dumps(report))
    ok, why = verify_item(out, "cat", p.fingerprint(image, PROMPT, 0, "refine"))
    assert not ok and "no fingerprint" in why
    assert status(p, image, out) == "done"


# ---------------------------------------------------------------- never delete what is not ours


def test_a_users_folder_and_files_are_never_touched(image, tmp_path):
    out = tmp_path / "out"
    (out / "cat_maps.old").mkdir(parents=True)
    (out / "cat_maps.old" / "important.txt").write_text("data")
    p = pipe()
    for _ in range(3):
        assert status(p, image, out, resume=False) == "done"
    assert (out / "cat_maps.old" / "important.txt").read_text() == "data"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda out: (out / "cat.png").write_bytes(b"my own picture"), "cat.png"),
        (lambda out: (out / "cat.json").write_text('{"mine": 1}'), "not a grefine report"),
    ],
)
def test_a_users_file_in_the_way_is_refused_not_replaced(image, tmp_path, setup, message):
    out = tmp_path / "out"
    out.mkdir()
    setup(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    outcome = pipe().refine_many([(image, PROMPT)], out).outcomes[0]
    assert outcome.status == "failed" and "refusing to replace" in outcome.error
    assert message in outcome.error
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_file_added_to_a_maps_folder_is_kept(image, tmp_path):
    out = tmp_path / "out"
    p = pipe()
    status(p, image, out)
    (out / "cat_maps" / "notes.txt").write_text("mine")
    outcome = p.refine_many([(image, PROMPT)], out, resume=False).outcomes[0]
    assert outcome.status == "failed" and "cat_maps/notes.txt" in outcome.error
    assert (out / "cat_maps" / "notes.txt").read_text() == "mine"


def test_a_users_hidden_tmp_folder_is_not_taken_for_a_staging_folder(image, tmp_path):
    out = tmp_path / "out"
    backup = out / ".backup.tmp" / "maps"
    backup.mkdir(parents=True)
    (backup / "important.npy").write_bytes(b"mine")
    similar = out / ".cat.abcd1234.tmp" / "maps"  # a legacy name, but not only .npy/.png inside
    similar.mkdir(parents=True)
    (similar / "notes.txt").write_text("mine")
    status(pipe(), image, out)
    assert (backup / "important.npy").read_bytes() == b"mine"
    assert (similar / "notes.txt").read_text() == "mine"


def test_stale_staging_folders_are_cleaned_at_start(image, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    ours = out / f"{STAGE_PREFIX}cat.abc123"
    ours.mkdir()
    (ours / ".grefine-staging").write_text("123")
    legacy = out / ".cat.x7y8z9ab.tmp"  # an older grefine's staging folder of this item
    (legacy / "maps").mkdir(parents=True)
    (legacy / "maps" / "pq_map.npy").write_bytes(b"x")
    (legacy / "image.png").write_bytes(b"x")
    foreign = out / ".cache"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    status(pipe(), image, out)
    assert not ours.exists() and not legacy.exists()
    assert (foreign / "keep.txt").read_text() == "mine"


def test_a_run_that_writes_nothing_leaves_no_folder(tmp_path):
    out = tmp_path / "never"
    report = pipe().refine_many([(tmp_path / "missing.png", PROMPT)], out)
    assert report.outcomes[0].status == "failed" and not out.exists()


# ---------------------------------------------------------------- the writer lock


def test_a_second_writer_is_refused_with_the_holders_pid(image, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from grefine_core.app.outputs import "
            "output_lock\nwith output_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n"
            "    time.sleep(30)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"another grefine \(process {holder.pid}"):
            pipe().refine_many([(image, PROMPT)], out)
    finally:
        holder.kill()
        holder.wait()
    assert status(pipe(), image, out) == "done"  # released when the holder died


def test_a_writer_in_another_thread_is_refused(image, tmp_path):
    out = tmp_path / "out"
    seen: list[str] = []

    def run():
        try:
            seen.append(status(pipe(), image, out))
        except OutputError as e:
            seen.append(f"refused: {e} (exit {e.exit_code})")

    with output_lock(out):  # this thread holds the folder for the whole time
        t = threading.Thread(target=run)
        t.start()
        t.join()
    assert len(seen) == 1 and "being written by another grefine" in seen[0]
    assert seen[0].endswith("(exit 2)")
    assert status(pipe(), image, out) == "done"  # released


def test_the_lock_is_reentrant_in_one_thread(tmp_path):
    with output_lock(tmp_path), output_lock(tmp_path):
        assert (tmp_path / ".grefine.lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / ".grefine.lock").exists()


# ---------------------------------------------------------------- a crash at every step

CHILD = textwrap.dedent(
    """
    import sys
    from grefine_core.pipeline import GRefine
    from grefine_core.testing import fake_config, fake_plugins
    seed = int(sys.argv[3])
    pipe = GRefine(fake_config(seed=seed), extra_plugins=fake_plugins())
    report = pipe.refine_many([(sys.argv[1], "a red cat and a missing")], sys.argv[2])
    print(report.outcomes[0].status)
    """
)


def run_child(image, out, seed=0, crash=None):
    env = {**os.environ}
    env.pop("GREFINE_CRASH_AT", None)
    if crash:
        env["GREFINE_CRASH_AT"] = crash
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(image), str(out), str(seed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("step", CRASH_STEPS)
@pytest.mark.parametrize("first_run", [True, False])
def test_a_crash_at_any_publishing_step_never_counts_a_half_item(image, tmp_path, step, first_run):
    out = tmp_path / "out"
    if not first_run:  # a complete older result (seed 0) is being replaced by seed 5
        assert run_child(image, out, seed=0).stdout.strip() == "done"
    crashed = run_child(image, out, seed=5, crash=step)
    assert crashed.returncode == -9, crashed.stderr  # killed at that step
    fingerprint = pipe(seed=5).fingerprint(image, PROMPT, 5, "refine")
    ok, _ = verify_item(out, "cat", fingerprint)
    assert ok == (step == "json")  # done only once the report is in place
    again = run_child(image, out, seed=5)
    assert again.stdout.strip() == ("resumed" if step == "json" else "done"), again.stderr
    ok, why = verify_item(out, "cat", fingerprint)
    assert ok, why
    assert not [p for p in out.iterdir() if p.name.startswith(".grefine-stage.")]
    assert sorted(p.name for p in out.iterdir()) == ["cat.json", "cat.png", "cat_maps"]


def test_a_changed_setting_reruns(image, tmp_path, caplog):
    out = tmp_path / "out"
    assert status(pipe(), image, out) == "done"
    cfg = fake_config()
    cfg.hq_skip.p_bound = 0.5
    caplog.set_level("WARNING")
    assert status(GRefine(cfg, extra_plugins=fake_plugins()), image, out) == "done"
    assert "config.hq_skip.p_bound 0.95 -> 0.5" in caplog.text


def test_the_sections_of_the_plugins_in_the_slots_are_in_the_fingerprint(image):
    from grefine_core.config import load_config

    def fingerprint(**overrides):
        g = GRefine(load_config(preset="tiny", overrides=overrides, environ={}))
        return g.fingerprint(image, PROMPT, 0, "refine")

    base = fingerprint()
    assert base.parts["config"]["plugins"]["nltk"]["tagger_resolved"] in ("perceptron", "pattern")
    assert "metrics" not in base.parts["config"]["plugins"]  # evaluation: in no slot
    steps = fingerprint(plugins={"sdxl": {"steps": 2}})
    assert steps.changes(base) == ["config.plugins.sdxl.steps 4 -> 2"]
    assert fingerprint().digest == base.digest  # stable between identical pipelines


def test_a_bad_weights_pickle_is_one_line_without_unsafe_advice(tmp_path):
    torch = pytest.importorskip("torch")
    import datetime

    from grefine_clip.model import SurgeryCLIP

    from grefine_core.errors import InputError

    path = tmp_path / "bad.pt"
    torch.save({"visual.proj": datetime.date(2020, 1, 1)}, path)  # not a tensor: unsafe to load
    with pytest.raises(InputError) as e:
        SurgeryCLIP.from_pretrained(str(path))
    message = str(e.value)
    assert "\n" not in message and "weights_only=False" not in message
    assert "refuses" in message and str(path) in message


def test_the_backbones_settings_are_in_the_fingerprint_even_when_no_slot_owns_them():
    """[plugins.clip] belongs to the backbone plugin ``clip`` (in no slot); [plugins.backbone] is
    read by clip_pq and clip_aq: both shape outputs, so a change of either reruns the item."""
    from grefine_core.config import load_config
    from grefine_core.pipeline import GRefine
    from grefine_core.testing import make_test_image

    def sections(**overrides):
        cfg = load_config(preset="tiny", environ={}, overrides=overrides)
        fp = GRefine(cfg).fingerprint(make_test_image(), "a cat", None, "assess")
        return fp.parts["config"]["plugins"]

    base = sections(select={"alignment": "none"})
    assert {"clip", "backbone", "pq"} <= set(base) and "metrics" not in base
    changed = sections(select={"alignment": "none"}, plugins={"clip": {"cache_dir": "/elsewhere"}})
    assert changed["clip"] != base["clip"]
