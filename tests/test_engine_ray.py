"""The Ray engine (docs/scale-out.md) on a local Ray instance with 2 CPUs, tiny preset: the same
outputs as the local engine, resume after an interruption, per-item failures, bad input.

What this proves: the plumbing of the distributed engine (identical bytes, seeds, resume) on
random-weight models; not image quality, and not a multi-node cluster."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

from grefine_core.app.cli import main
from grefine_core.app.engine_ray import Pool, RayOptions, parse_pool
from grefine_core.config import load_config
from grefine_core.errors import UsageError
from grefine_core.pipeline import GRefine

ray = pytest.importorskip(
    "ray", reason="the ray extra is not installed: pip install 'grefine[ray]'"
)

PROMPTS = [
    "a red cat on a blue sofa",
    "two dogs under a green tree",
    "a yellow car",
    "an old man with a hat",
    "a castle on a hill at night",
    "",
]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module (2 CPUs, its own short temp folder)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # unix socket paths must stay short
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level=logging.WARNING)
    yield temp
    ray.shutdown()


def make_items(folder, n=6):
    rng = np.random.default_rng(7)
    items = []
    for i in range(n):
        path = folder / f"img{i}.png"
        pixels = (rng.random((48 + 8 * i, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(path)
        items.append((path, PROMPTS[i % len(PROMPTS)]))
    return items


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def assert_same_item(a_dir, b_dir, stem):
    a = np.asarray(Image.open(a_dir / f"{stem}.png"))
    b = np.asarray(Image.open(b_dir / f"{stem}.png"))
    assert a.shape == b.shape and (a == b).all(), f"{stem}: images differ"
    ra = json.loads((a_dir / f"{stem}.json").read_text())
    rb = json.loads((b_dir / f"{stem}.json").read_text())
    # The PNG embeds the report (with timings), so only its hash may differ between engines.
    ra["files"].pop(f"{stem}.png"), rb["files"].pop(f"{stem}.png")
    assert without_timings(ra) == without_timings(rb), f"{stem}: reports differ"
    with (
        np.load(a_dir / f"{stem}_maps" / "maps.npz") as ma,
        np.load(b_dir / f"{stem}_maps" / "maps.npz") as mb,
    ):
        assert sorted(ma.files) == sorted(mb.files) and ma.files
        for name in ma.files:
            assert np.array_equal(ma[name], mb[name]), f"{stem}: map {name} differs"


def test_six_items_equal_the_local_engine_and_a_raising_item_is_recorded(ray_session, tmp_path):
    items = make_items(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    items.insert(3, (broken, "a broken file"))
    pipeline = GRefine(load_config(preset="tiny"))
    local = pipeline.refine_many(items, tmp_path / "local")
    # Two actors in the first pool (Ray decides how many get work).
    options = RayOptions(pools={"start": Pool(size=2, num_cpus=0.5)})
    seen = []
    remote = pipeline.refine_many(
        items, tmp_path / "ray", engine="ray", ray=options, on_item=seen.append
    )
    assert [o.item.name for o in remote.outcomes] == [o.item.name for o in local.outcomes]
    assert [o.status for o in remote.outcomes] == ["done"] * 3 + ["failed"] + ["done"] * 3
    assert "not a readable image" in remote.outcomes[3].error
    assert remote.outcomes[3].exit_code == 2 and remote.exit_code == 2
    assert len(seen) == 7  # progress saw every item
    for i in range(6):
        assert_same_item(tmp_path / "local", tmp_path / "ray", f"img{i}")
    seeds = [json.loads((tmp_path / "ray" / f"img{i}.json").read_text())["seed"] for i in range(6)]
    assert seeds == [0, 1, 2, 4, 5, 6]  # the broken item kept its place (seed 3)
    # A rerun trusts what either engine wrote: nothing is sent to Ray again.
    again = pipeline.refine_many(items, tmp_path / "local", engine="ray", ray=options)
    assert [o.status for o in again.outcomes].count("resumed") == 6


def test_assess_writes_to_a_uri_and_resumes_there(ray_session, tmp_path):
    items = make_items(tmp_path, 3)
    pipeline = GRefine(load_config(preset="tiny"))
    from pyarrow.fs import LocalFileSystem

    from grefine_core.app.location import ArrowPath

    folder = tmp_path / "bucket" / "run1"  # the object-store code path over a local filesystem
    uri = ArrowPath(LocalFileSystem(), str(folder), f"file://{folder}")
    first = pipeline.refine_many(items, uri, mode="assess", engine="ray")
    assert [o.status for o in first.outcomes] == ["done"] * 3
    local = pipeline.refine_many(items, tmp_path / "local", mode="assess")
    for i in range(3):
        assert_same_item(tmp_path / "local", tmp_path / "bucket" / "run1", f"img{i}")
    assert not list((tmp_path / "bucket" / "run1").glob(".grefine*"))  # no lock, no staging
    again = pipeline.refine_many(items, uri, mode="assess", engine="ray")
    assert [o.status for o in again.outcomes] == ["resumed"] * 3
    assert [o.status for o in local.outcomes] == ["done"] * 3


def write_manifest(tmp_path, items):
    manifest = tmp_path / "items.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "prompt"])
        for path, prompt in items:
            writer.writerow([path.name, prompt or "a plain picture"])  # a CSV needs a prompt
    return manifest


def run_cli(args, env, timeout=600):
    child = subprocess.Popen(
        [sys.executable, "-m", "grefine_core.app.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    finally:
        try:  # whatever Ray started in its group goes with it: no writer outlives the run
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def test_an_interrupted_ray_run_resumes_without_redoing_finished_items(tmp_path):
    items = make_items(tmp_path)
    manifest = write_manifest(tmp_path, items)
    out = tmp_path / "out"
    args = ["refine", "--prompt-file", str(manifest), "--out", str(out), "--preset", "tiny"]
    args += ["--engine", "ray", "-q"]
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    env["RAY_USAGE_STATS_ENABLED"], env["RAY_AUTH_MODE"] = "0", "disabled"
    # The driver kills itself (SIGKILL, no clean-up) once 3 outcomes have reached it.
    crashed = run_cli(args, {**env, "GREFINE_CRASH_AT": "ray-outcome:3"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    finished = {p.stem: p.stat().st_mtime_ns for p in out.glob("img*.json")}
    assert len(finished) >= 3
    rerun = run_cli(args[:-1], env)  # without -q: the summary line
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    resumed = 6 - len(finished)
    assert f"{resumed} done, {len(finished)} already done (resumed), 0 failed" in rerun.stdout
    for stem, mtime in finished.items():  # not rewritten
        assert (out / f"{stem}.json").stat().st_mtime_ns == mtime
    assert sorted(p.stem for p in out.glob("img*.json")) == [f"img{i}" for i in range(6)]
    assert not list(out.glob(".grefine-stage.*"))  # the interrupted run's staging is gone


def test_ray_without_the_extra_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    image = make_items(tmp_path, 1)[0][0]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    code = main(
        ["refine", str(image), "--prompt", "a cat", "--out", str(tmp_path / "o")]
        + [
            "--preset",
            "tiny",
            "--engine",
            "ray",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "pip install 'grefine[ray]'" in err and not (tmp_path / "o").exists()


def test_an_unreachable_ray_address_is_a_one_line_error(tmp_path, capsys):
    image = make_items(tmp_path, 1)[0][0]
    args = ["refine", str(image), "--prompt", "a cat", "--out", str(tmp_path / "o")]
    code = main([*args, "--preset", "tiny", "--engine", "ray", "--ray-address", "127.0.0.1:9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--ray-address '127.0.0.1:9': no Ray cluster answers there" in err
    code = main([*args, "--ray-address", "127.0.0.1:9"])  # without --engine ray
    assert code == 2 and "need --engine ray" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stage1=2:1", ("stage1", Pool(2, 1.0, 0.5, 1))),
        ("start=3", ("start", Pool(3, 0.0, 0.5, 1))),
        ("stage2=1:0.5:2:4", ("stage2", Pool(1, 0.5, 2.0, 4))),
    ],
)
def test_pool_specs_parse(text, expected):
    assert parse_pool(text) == expected


@pytest.mark.parametrize("text", ["stage3=1", "stage1", "stage1=x", "stage1=0", "start=1:-1"])
def test_bad_pool_specs_name_the_value(text):
    with pytest.raises(UsageError, match="--ray-pool|size >= 1|must be >= 0"):
        parse_pool(text)


def test_pools_mixing_gpu_and_cpu_actors_need_a_device(tmp_path):
    config = load_config(preset="tiny").model_copy(update={"device": "auto"})
    options = RayOptions(pools={"stage1": Pool(num_gpus=1)})
    with pytest.raises(UsageError, match="mix GPU and CPU actors"):
        GRefine(config).refine_many(
            make_items(tmp_path, 1), tmp_path / "o", engine="ray", ray=options
        )


def test_pools_that_fit_per_actor_but_not_in_all_are_refused(ray_session, tmp_path):
    options = RayOptions(pools={p: Pool(size=2, num_cpus=1.0) for p in ("start", "stage1")})
    pipeline = GRefine(load_config(preset="tiny"))  # 2 + 2 + 0.5 CPUs asked, 2 there
    with pytest.raises(UsageError, match=r"ask for 4.5 CPU\(s\) in all \(1 per actor at most\)"):
        pipeline.refine_many(make_items(tmp_path, 1), tmp_path / "o", engine="ray", ray=options)


def test_a_pool_this_machine_cannot_place_is_refused_not_awaited(ray_session, tmp_path):
    options = RayOptions(pools={"stage1": Pool(num_gpus=1)})  # no GPU here; device = cpu
    pipeline = GRefine(load_config(preset="tiny"))
    with pytest.raises(UsageError, match=r"ask for 1 GPU\(s\) in all .*the Ray cluster has 0"):
        pipeline.refine_many(make_items(tmp_path, 1), tmp_path / "o", engine="ray", ray=options)
