"""Outputs at a pyarrow filesystem URI (the object-store rules of docs/scale-out.md), through
the local engine and fake plugins (fast, no torch): publish, resume, refuse, clean up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grefine_core.app.location import ArrowPath, is_uri, output_target
from grefine_core.errors import UsageError
from grefine_core.pipeline import GRefine
from grefine_core.testing import fake_config, fake_pipeline, fake_plugins, make_test_image

pytest.importorskip(
    "pyarrow.fs", reason="pyarrow comes with the ray extra: pip install 'grefine[ray]'"
)

PROMPT = "a red cat and a missing"


def store(folder):
    """An object-store stand-in: the ArrowPath code path (no lock, no renames, uploads) over a
    local pyarrow filesystem (a ``file://`` URI itself is a local folder with the local rules)."""
    from pyarrow.fs import LocalFileSystem

    return ArrowPath(LocalFileSystem(), str(folder), f"file://{folder}")


pipe = fake_pipeline


def statuses(report):
    return [o.status for o in report.outcomes]


def test_a_uri_gets_the_same_files_as_a_folder_and_resumes(image, tmp_path):
    uri = store(tmp_path / "bucket" / "run")
    assert statuses(pipe().refine_many([(image, PROMPT)], uri)) == ["done"]
    assert statuses(pipe().refine_many([(image, PROMPT)], tmp_path / "plain")) == ["done"]
    remote, plain = tmp_path / "bucket" / "run", tmp_path / "plain"
    assert sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*")) == sorted(
        p.relative_to(plain).as_posix() for p in plain.rglob("*")
    )
    report = json.loads((remote / "cat.json").read_text())
    assert "cat_maps/maps.npz" in report["files"] and "cat.png" in report["files"]
    assert statuses(pipe().refine_many([(image, PROMPT)], uri)) == ["resumed"]
    assert statuses(pipe(seed=3).refine_many([(image, PROMPT)], uri)) == ["done"]  # changed
    (remote / "cat_maps" / "maps.npz").write_bytes(b"tampered")
    assert statuses(pipe(seed=3).refine_many([(image, PROMPT)], uri)) == ["done"]


def test_the_report_is_uploaded_last(image, tmp_path, monkeypatch):
    uploads = []
    original = ArrowPath.upload

    def recording(self, local):
        uploads.append(self.name)
        original(self, local)

    monkeypatch.setattr(ArrowPath, "upload", recording)
    pipe().refine_many([(image, PROMPT)], store(tmp_path / "run"))
    assert uploads[-2:] == ["cat.png", "cat.json"] and "maps.npz" in uploads[:-2]


def test_an_object_grefine_did_not_write_is_refused_and_kept(image, tmp_path):
    remote = tmp_path / "run"
    remote.mkdir()
    make_test_image().save(remote / "cat.png")  # the user's own image, no report vouches for it
    before = (remote / "cat.png").read_bytes()
    outcome = pipe().refine_many([(image, PROMPT)], store(remote)).outcomes[0]
    assert outcome.status == "failed" and "grefine did not write it" in outcome.error
    assert outcome.exit_code == 2 and (remote / "cat.png").read_bytes() == before
    (remote / "cat.png").unlink()
    (remote / "cat.json").write_text('{"mine": 1}')
    outcome = pipe().refine_many([(image, PROMPT)], store(remote)).outcomes[0]
    assert outcome.status == "failed" and "not a grefine report" in outcome.error


def test_maps_none_after_maps_removes_our_old_map_objects(image, tmp_path):
    uri = store(tmp_path / "run")
    pipe().refine_many([(image, PROMPT)], uri)
    cfg = fake_config()
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"maps": "none"})})
    report = GRefine(cfg, extra_plugins=fake_plugins()).refine_many([(image, PROMPT)], uri)
    assert statuses(report) == ["done"]
    assert not [p for p in (tmp_path / "run" / "cat_maps").rglob("*") if p.is_file()]


def test_uri_recognition_and_a_bad_scheme():
    assert is_uri("s3://bucket/x") and is_uri("file:///tmp/x") and not is_uri("out/dir")
    assert output_target("file:///tmp/x") == Path("/tmp/x")  # local: lock and atomic renames
    with pytest.raises(UsageError, match=r"--out nosuch://x: not a filesystem pyarrow can open"):
        output_target("nosuch://x")


def test_a_users_file_in_a_maps_prefix_is_refused_and_kept(image, tmp_path):
    uri = store(tmp_path / "run")
    pipe().refine_many([(image, PROMPT)], uri)
    (tmp_path / "run" / "cat_maps" / "notes.txt").write_text("mine")
    outcome = pipe(seed=2).refine_many([(image, PROMPT)], uri).outcomes[0]
    assert outcome.status == "failed" and "cat_maps/notes.txt" in outcome.error
    assert (tmp_path / "run" / "cat_maps" / "notes.txt").read_text() == "mine"


def test_an_interrupted_uploads_map_objects_do_not_block_the_item(image, tmp_path):
    """A run killed after uploading its maps marker and some maps (no report yet): the next
    run removes them as its own instead of refusing the item."""
    uri = store(tmp_path / "run")
    cfg = fake_config()
    all_maps = cfg.model_copy(update={"output": cfg.output.model_copy(update={"maps": "all"})})
    GRefine(all_maps, extra_plugins=fake_plugins()).refine_many([(image, PROMPT)], uri)
    (tmp_path / "run" / "cat.json").unlink()  # as if killed before the report was uploaded
    assert statuses(pipe().refine_many([(image, PROMPT)], uri)) == ["done"]  # maps = png
    assert not list((tmp_path / "run" / "cat_maps").glob("*.npy"))
