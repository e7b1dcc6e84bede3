"""The export cache: keyed by the weights hash and options, re-exported only when something
changed; stale or foreign files re-exported or refused with a clear message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny0():
    from grefine_clip import SurgeryCLIP

    return SurgeryCLIP.tiny(seed=0)


@pytest.fixture(scope="module")
def tiny1():
    from grefine_clip import SurgeryCLIP

    return SurgeryCLIP.tiny(seed=1)


@pytest.fixture()
def opts():
    from grefine_onnx.export import ExportOptions

    return ExportOptions(parts=("image",))


@pytest.fixture()
def count_exports(monkeypatch):
    """Count calls of export_clip made by the cache."""
    import grefine_onnx.cache as cache

    calls: list[Path] = []
    real = cache.export_clip

    def counting(clip, out_dir, *args, **kwargs):
        calls.append(Path(out_dir))
        return real(clip, out_dir, *args, **kwargs)

    monkeypatch.setattr(cache, "export_clip", counting)
    return calls


def test_exports_once_then_reuses_and_keys_by_weights(tiny0, tiny1, opts, tmp_path, count_exports):
    from grefine_onnx.cache import ensure_export
    from grefine_onnx.hashing import clip_weights_sha256

    folder, manifest = ensure_export(tiny0, opts, cache_dir=tmp_path, model_name="tiny")
    assert count_exports == [folder] and folder.parent == tmp_path
    assert folder.name == f"tiny-{manifest['key']}"
    again, manifest2 = ensure_export(tiny0, opts, cache_dir=tmp_path, model_name="tiny")
    assert again == folder and manifest2 == manifest and len(count_exports) == 1  # cache hit
    other, manifest3 = ensure_export(tiny1, opts, cache_dir=tmp_path, model_name="tiny")
    assert other != folder and len(count_exports) == 2  # other weights, other key
    assert manifest3["source"]["weights_sha256"] == clip_weights_sha256(tiny1)
    assert manifest3["source"]["weights_sha256"] != manifest["source"]["weights_sha256"]


def test_changed_options_get_their_own_folder(tiny0, tmp_path, count_exports):
    from grefine_onnx.cache import ensure_export
    from grefine_onnx.export import ExportOptions

    a, _ = ensure_export(tiny0, ExportOptions(parts=("image",)), cache_dir=tmp_path)
    b, mb = ensure_export(tiny0, ExportOptions(parts=("image",), static=True), cache_dir=tmp_path)
    assert a != b and mb["static"] is True and len(count_exports) == 2


def test_replaced_file_is_reexported_with_a_warning(tiny0, opts, tmp_path, caplog, count_exports):
    from grefine_onnx.cache import ensure_export
    from grefine_onnx.hashing import file_sha256

    folder, manifest = ensure_export(tiny0, opts, cache_dir=tmp_path)
    image = folder / "image.onnx"
    data = bytearray(image.read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes
    image.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        again, manifest2 = ensure_export(tiny0, opts, cache_dir=tmp_path)
    assert again == folder and len(count_exports) == 2
    assert (
        "does not match the sha256 in the manifest" in caplog.text and "re-exporting" in caplog.text
    )
    assert file_sha256(image) == manifest2["graphs"]["image"]["sha256"]


def test_stale_file_is_refused_on_request(tiny0, opts, tmp_path, count_exports):
    from grefine_onnx.cache import ensure_export

    from grefine_core.errors import ConfigError

    folder, _ = ensure_export(tiny0, opts, cache_dir=tmp_path)
    (folder / "image.onnx").write_bytes(b"truncated")
    with pytest.raises(ConfigError) as err:
        ensure_export(tiny0, opts, cache_dir=tmp_path, on_mismatch="refuse")
    msg = str(err.value)
    assert "cannot use the ONNX export" in msg and "image.onnx has 9 bytes" in msg
    assert "on_mismatch" in msg and len(count_exports) == 1


def test_foreign_export_dir_is_refused_or_reexported(tiny0, tiny1, opts, tmp_path, caplog):
    from grefine_onnx.cache import ensure_export
    from grefine_onnx.export import export_clip
    from grefine_onnx.hashing import clip_weights_sha256

    from grefine_core.errors import ConfigError

    export_clip(tiny0, tmp_path, opts)  # e.g. `grefine export-onnx --out DIR` for other weights
    with pytest.raises(ConfigError, match="export of other weights"):
        ensure_export(tiny1, opts, directory=tmp_path, on_mismatch="refuse")
    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        folder, manifest = ensure_export(tiny1, opts, directory=tmp_path)
    assert folder == tmp_path and "other weights" in caplog.text
    assert manifest["source"]["weights_sha256"] == clip_weights_sha256(tiny1)


def test_onnx_files_without_manifest_are_foreign(tiny0, opts, tmp_path):
    from grefine_onnx.cache import ensure_export
    from grefine_onnx.manifest import check_export

    from grefine_core.errors import ConfigError

    (tmp_path / "image.onnx").write_bytes(b"\x08\x07 not ours")
    check = check_export(tmp_path)
    assert check.status == "foreign" and "without a manifest.json" in check.reason
    with pytest.raises(ConfigError, match="without a manifest.json"):
        ensure_export(tiny0, opts, directory=tmp_path, on_mismatch="refuse")


def test_old_format_and_broken_manifest_are_stale(tiny0, opts, tmp_path):
    import json

    from grefine_onnx.export import export_clip
    from grefine_onnx.manifest import check_export, manifest_path

    export_clip(tiny0, tmp_path, opts)
    assert check_export(tmp_path).ok
    data = json.loads(manifest_path(tmp_path).read_text())
    data["format"] = "grefine-onnx/0"
    manifest_path(tmp_path).write_text(json.dumps(data))
    check = check_export(tmp_path)
    assert check.status == "stale" and "grefine-onnx/0" in check.reason
    manifest_path(tmp_path).write_text("{not json")
    assert check_export(tmp_path).status == "stale"


def test_opening_a_folder_without_export_is_a_clear_error(tmp_path):
    from grefine_onnx.backend import OnnxSurgeryCLIP

    from grefine_core.errors import ConfigError

    with pytest.raises(ConfigError, match="grefine export-onnx"):
        OnnxSurgeryCLIP.from_export(tmp_path / "nothing")


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from grefine_onnx.cache import default_cache_dir

    monkeypatch.setenv("GREFINE_ONNX_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("GREFINE_ONNX_CACHE")
    assert default_cache_dir() == Path("~/.cache/grefine/onnx").expanduser()


def test_model_dir_without_a_needed_graph_is_stale(tiny0, opts, tmp_path, caplog):
    """A `--parts image` export given as model_dir lacks the graphs the backend needs: refused
    or re-exported like any stale export, not accepted and failing later."""
    from grefine_onnx.cache import ensure_export
    from grefine_onnx.export import ExportOptions, export_clip

    from grefine_core.errors import ConfigError

    export_clip(tiny0, tmp_path, opts)  # image only
    needs = ExportOptions(parts=("image", "text"))
    with pytest.raises(ConfigError, match="lists no 'text' graph"):
        ensure_export(tiny0, needs, directory=tmp_path, on_mismatch="refuse")
    with caplog.at_level(logging.WARNING, logger="grefine.onnx"):
        folder, manifest = ensure_export(tiny0, needs, directory=tmp_path)
    assert folder == tmp_path and set(manifest["graphs"]) == {"image", "text"}
    assert "re-exporting" in caplog.text
    # The image-only options still accept the folder as it now is: nothing is re-exported.
    assert ensure_export(tiny0, opts, directory=tmp_path)[1] == manifest
