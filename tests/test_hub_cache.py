"""The local Hugging Face cache is read without the network: revisions for the fingerprint, and
"the files are here" so that loaders pass local_files_only (no request to the hub)."""

from __future__ import annotations

from grefine_core.app.fingerprint import model_identifiers
from grefine_core.hub import cached_revisions, is_cached


def fake_repo(root, repo, commit="abc123", files=("model_index.json",)):
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in files:
        (snap / name).write_text("{}")
    return base


def test_cached_repos_are_found_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    fake_repo(tmp_path, "org/model")
    assert cached_revisions("org/model") == {"main": "abc123"} and is_cached("org/model")
    assert not is_cached("org/other") and cached_revisions("org/other") == {}
    fake_repo(tmp_path, "org/empty", files=())
    assert not is_cached("org/empty")  # a snapshot without files is not a usable copy
    ids = model_identifiers(
        {"sdxl": {"model": "org/model", "steps": 4}, "pasd": {"sd_model": "x/y"}}
    )
    assert ids == {
        "sdxl.model": {"hub": "org/model", "revision": "main=abc123"},
        "pasd.sd_model": {"hub": "x/y", "revision": "not in the local cache"},
    }


def test_local_model_paths_are_identified_by_size_and_mtime(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"12345")
    ident = model_identifiers({"clip": {"model": str(folder)}})["clip.model"]
    assert ident["bytes"] == 5 and ident["files"] == 1 and ident["path"] == str(folder.resolve())
    (folder / "a.bin").write_bytes(b"123456")
    assert model_identifiers({"clip": {"model": str(folder)}})["clip.model"]["bytes"] == 6


def test_sdxl_loads_a_cached_hub_id_offline(tmp_path, monkeypatch):
    import grefine_sdxl.loading as loading
    from grefine_sdxl.settings import SDXLSettings

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    fake_repo(tmp_path, "org/sdxl")
    seen = {}

    def fake_from(source, **kwargs):
        seen.update(kwargs, source=source)
        raise RuntimeError("stop here")

    monkeypatch.setattr(loading, "from_pretrained_source", fake_from)
    try:
        loading.load_inpaint_pipeline(SDXLSettings(model="org/sdxl"))
    except RuntimeError:
        pass
    assert seen["source"] == "org/sdxl" and seen["local_files_only"] is True


def test_a_subfolder_of_a_cached_repo_is_identified_by_the_repo_revision(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    fake_repo(tmp_path, "yangtao9009/PASD", commit="def456")
    ids = model_identifiers({"pasd": {"pasd_checkpoint": "hf://yangtao9009/PASD/pasd/ckpt"}})
    assert ids == {
        "pasd.pasd_checkpoint": {
            "hub": "hf://yangtao9009/PASD/pasd/ckpt",
            "revision": "main=def456",
        }
    }
