"""Loading SDXL inpainting weights: what each source means and the errors for missing weights."""

from __future__ import annotations

import pytest
from grefine_sdxl.loading import cache_key, classify_source, load_inpaint_pipeline
from grefine_sdxl.settings import DEFAULT_MODEL, SDXLSettings

from grefine_core.errors import ConfigError, MissingWeightsError


def test_classify_sources(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert classify_source("tiny") == "tiny" and classify_source(" TINY ") == "tiny"
    assert classify_source(str(tmp_path)) == "folder"
    assert classify_source(str(tmp_path / "weights.safetensors")) == "single_file"
    assert classify_source(DEFAULT_MODEL) == "hub"
    with pytest.raises(ConfigError, match="notes.txt.*not a checkpoint"):
        classify_source(str(tmp_path / "notes.txt"))


@pytest.mark.parametrize(
    "missing", ["/no/such/folder", "./sdxl", "models/sdxl/inpaint", "x.safetensors"]
)
def test_missing_paths_name_the_path_and_the_licence(missing):
    with pytest.raises(MissingWeightsError) as info:
        classify_source(missing)
    text = str(info.value)
    assert repr(missing) in text and "does not exist" in text
    assert "licence" in text and "tiny" in text


def test_folder_without_model_index_is_explained(tmp_path):
    pytest.importorskip("diffusers")
    with pytest.raises(MissingWeightsError, match="without model_index.json"):
        load_inpaint_pipeline(SDXLSettings(model=str(tmp_path)))


def test_uncached_hub_id_says_how_to_download(monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = "grefine-tests/no-such-sdxl-inpainting"
    with pytest.raises(MissingWeightsError) as info:
        load_inpaint_pipeline(SDXLSettings(model=repo, local_files_only=True))
    text = str(info.value)
    assert repr(repo) in text and "hub id" in text
    assert f"hf download {repo}" in text and "Open RAIL++-M" in text


def test_missing_vae_is_named(monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = SDXLSettings(model=DEFAULT_MODEL, vae="grefine-tests/no-such-vae", local_files_only=True)
    with pytest.raises(MissingWeightsError, match="plugins.sdxl.vae = 'grefine-tests/no-such-vae'"):
        load_inpaint_pipeline(s)


def test_cache_key_covers_what_changes_the_pipeline():
    a = cache_key(SDXLSettings(model="tiny"), "cpu", "float32")
    assert a == cache_key(SDXLSettings(model="tiny", steps=3, strength=0.5), "cpu", "float32")
    assert a != cache_key(SDXLSettings(model="tiny", vae_tiling=True), "cpu", "float32")
    assert a != cache_key(SDXLSettings(model="tiny"), "cuda", "float16")


def test_hub_id_never_touches_the_network_in_tests(no_network):
    """tests/conftest.py sets HF_HUB_OFFLINE=1: even with local_files_only = false (the default)
    an uncached hub id fails fast with the download advice, without a connection attempt."""
    pytest.importorskip("diffusers")
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    repo = "grefine-tests/no-such-sdxl-inpainting"
    with pytest.raises(MissingWeightsError, match=f"hf download {repo}"):
        load_inpaint_pipeline(SDXLSettings(model=repo))
    with pytest.raises(MissingWeightsError, match="plugins.sdxl.vae"):
        load_inpaint_pipeline(SDXLSettings(model=DEFAULT_MODEL, vae="grefine-tests/no-such-vae"))
    assert no_network == []


def test_missing_variant_names_the_setting(tmp_path):
    torch = pytest.importorskip("torch")
    from grefine_sdxl.loading import from_pretrained_source, quiet_progress_bars
    from grefine_sdxl.tiny import build_tiny_pipeline

    with quiet_progress_bars():
        build_tiny_pipeline().save_pretrained(tmp_path)  # float32 files only, no fp16 variant
    with pytest.raises(MissingWeightsError, match="plugins.sdxl.variant = 'fp16'") as info:
        from_pretrained_source(
            str(tmp_path), torch_dtype=torch.float32, variant="fp16", local_files_only=True
        )
    assert repr(str(tmp_path)) in str(info.value) and 'variant = ""' in str(info.value)
