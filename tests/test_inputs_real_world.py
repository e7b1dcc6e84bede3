"""Real-world inputs and one-line errors: EXIF orientation, prompts from A1111/ComfyUI metadata and
sidecars, metadata kept in outputs, and the small cases of bad input (fake plugins, fast)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from grefine_core.app.cli import main
from grefine_core.imageio import load_image
from grefine_core.testing import fake_select_args, make_test_image, registered_fakes

FAKES = fake_select_args()
A1111 = (
    "a red cat on a wooden table, (masterpiece:1.2)\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 64x48"
)
COMFY = json.dumps(
    {
        "3": {"class_type": "KSampler", "inputs": {"positive": ["6", 0], "negative": ["7", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a green frog on a leaf"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry"}},
    }
)


@pytest.fixture
def fakes():
    with registered_fakes():
        yield


def png_with(path: Path, **chunks: str) -> Path:
    info = PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    make_test_image().save(path, pnginfo=info)
    return path


# ---------------------------------------------------------------- EXIF orientation


def test_exif_orientation_is_applied_and_recorded(tmp_path):
    stored = np.zeros((40, 80, 3), np.uint8)  # stored 80 wide, 40 high
    stored[:, :40] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate 90 degrees clockwise: 40 wide, 80 high
    path = tmp_path / "turned.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    rgb, info = load_image(path)
    assert rgb.size == (40, 80) and info.exif_orientation == 6
    assert info.original_size == (40, 80) and not info.downscaled
    arr = np.asarray(rgb).astype(int)
    assert arr[:40].mean() > 200 and arr[40:].mean() < 50  # the white half is now on top


# ---------------------------------------------------------------- prompts from metadata


def test_prompts_from_a1111_and_comfyui_metadata():
    from grefine_core.app.metadata import a1111_prompt, comfyui_prompt, prompt_from_metadata

    assert a1111_prompt(A1111) == "a red cat on a wooden table, (masterpiece:1.2)"
    assert a1111_prompt("just a prompt") == "just a prompt"
    assert comfyui_prompt(COMFY) == "a green frog on a leaf"  # the sampler's positive input
    assert comfyui_prompt("not json") is None
    assert prompt_from_metadata({"parameters": A1111})[1] == "A1111 'parameters'"
    assert prompt_from_metadata({"workflow": "{}"}) is None


def test_cli_prompt_from_metadata_and_a_folder_with_sidecars(fakes, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    png_with(folder / "a.png", parameters=A1111)
    png_with(folder / "b.png", prompt=COMFY, workflow="{}")
    png_with(folder / "c.png")
    (folder / "c.txt").write_text("a blue bird\n")
    out = tmp_path / "out"
    assert main(["refine", *FAKES, str(folder), "--out", str(out), "--quiet"]) == 0
    prompts = {p.stem: json.loads(p.read_text())["prompt"] for p in out.glob("*.json")}
    assert prompts == {
        "a": "a red cat on a wooden table, (masterpiece:1.2)",
        "b": "a green frog on a leaf",
        "c": "a blue bird",
    }
    single = tmp_path / "one"
    args = [str(folder / "a.png"), "--prompt-from-metadata", "--out", str(single), "--quiet"]
    assert main(["assess", *FAKES, *args]) == 0
    assert json.loads((single / "a.json").read_text())["prompt"].startswith("a red cat")
    (folder / "c.txt").unlink()
    assert main(["refine", *FAKES, str(folder), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "c.png' has no prompt (looked for c.txt and its A1111" in err


def test_outputs_keep_the_inputs_chunks_and_add_grefines(fakes, tmp_path):
    src = png_with(tmp_path / "gen.png", parameters=A1111, prompt=COMFY, workflow='{"w": 1}')
    out = tmp_path / "out"
    assert main(["refine", *FAKES, str(src), "--prompt", "a cat", "--out", str(out), "-q"]) == 0
    text = Image.open(out / "gen.png").text
    assert text["prompt"] == COMFY and text["workflow"] == '{"w": 1}'
    assert text["source_parameters"] == A1111  # the input's own, kept
    assert text["parameters"].startswith("a cat") and "grefine preset: " in text["parameters"]
    assert json.loads(text["grefine"])["prompt"] == "a cat"
    stripped = tmp_path / "stripped"
    args = [str(src), "--prompt", "a cat", "--out", str(stripped), "--strip-metadata", "-q"]
    assert main(["refine", *FAKES, *args]) == 0
    assert set(Image.open(stripped / "gen.png").text) == {"grefine"}  # only the marker
    report = json.loads((out / "gen.json").read_text())
    assert report["input"]["text_chunks"] == ["parameters", "prompt", "workflow"]


# ---------------------------------------------------------------- one-line errors


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def refine_one(capsys, tmp_path, image, *extra):
    """``grefine refine IMAGE --prompt "a cat" --out tmp/o EXTRA...`` with the fake plugins."""
    argv = ["refine", *FAKES, str(image), "--prompt", "a cat", "--out", str(tmp_path / "o")]
    return run_cli(capsys, *argv, *extra)


def test_csv_field_over_the_limit_names_file_and_line(fakes, tmp_path, capsys):
    img = tmp_path / "x.png"
    make_test_image().save(img)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(f'image,prompt\nx.png,a cat\nx.png,"{"y" * 140_000}"\n')
    code, err = run_cli(
        capsys, "refine", *FAKES, "--prompt-file", str(csv_path), "--out", str(tmp_path / "o")
    )
    assert code == 2 and f"{csv_path}:3: not valid CSV" in err and len(err.splitlines()) == 1


def test_a_csv_row_without_a_prompt_is_refused_like_an_empty_prompt(fakes, tmp_path, capsys):
    img = tmp_path / "x.png"
    make_test_image().save(img)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("image,prompt\nx.png,a cat\nx.png,\n")
    code, err = run_cli(
        capsys, "refine", *FAKES, "--prompt-file", str(csv_path), "--out", str(tmp_path / "o")
    )
    assert code == 2 and f"{csv_path}:3: the prompt is empty" in err


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_the_seed_range_is_checked_up_front(fakes, tmp_path, capsys, seed):
    img = tmp_path / "x.png"
    make_test_image().save(img)
    code, err = refine_one(capsys, tmp_path, img, "--seed", seed)
    assert code == 2 and "--seed: seed must be between 0 and 9223372036854775807" in err
    assert not (tmp_path / "o").exists()


def test_a_symlink_loop_is_named_as_such(fakes, tmp_path, capsys):
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    code, err = refine_one(capsys, tmp_path, loop)
    assert code == 2 and "is a symbolic link that loops" in err
    dangling = tmp_path / "dangling.png"
    os.symlink(tmp_path / "gone.png", dangling)
    code, err = refine_one(capsys, tmp_path, dangling)
    assert code == 2 and "which does not exist" in err


def test_settings_errors_and_failed_items_take_one_line_each(fakes, tmp_path, capsys):
    img = tmp_path / "x.png"
    make_test_image().save(img)
    bad_settings = ["--set", "plugins.mask_paper.tau=7", "--set", "plugins.mask_paper.dilate_px=-1"]
    code, err = refine_one(capsys, tmp_path, img, *bad_settings)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "tau" in err and "dilate_px" in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code, err = refine_one(capsys, tmp_path, bad)
    assert code == 2
    assert sum("not a readable image" in line for line in err.splitlines()) == 1  # printed once


def test_cuda_without_a_gpu_is_found_at_start(fakes, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    img = tmp_path / "x.png"
    make_test_image().save(img)
    code, err = refine_one(capsys, tmp_path, img, "--device", "cuda")
    assert code == 2 and "device 'cuda': torch" in err and "sees no CUDA GPU" in err
    assert "FAILED" not in err and not (tmp_path / "o").exists()


def test_disk_full_says_so(monkeypatch, tmp_path):
    import errno

    from grefine_core.app.outputs import publish_item

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    from grefine_core.errors import OutputError

    with pytest.raises(OutputError, match="the disk is full"):
        publish_item(tmp_path, "x", full, None, {})
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone too

    def pil_short_write(path):
        raise OSError("4096 requested and 2016 written")

    with pytest.raises(OutputError, match="the disk is full"):
        publish_item(tmp_path, "x", pil_short_write, None, {})


def test_prompt_and_prompt_from_metadata_together_are_refused(fakes, tmp_path, capsys):
    src = png_with(tmp_path / "a.png", parameters=A1111)
    code, err = refine_one(capsys, tmp_path, src, "--prompt-from-metadata")
    assert code == 2 and "either --prompt or --prompt-from-metadata" in err


def test_a_seed_from_set_is_checked_before_anything_runs(fakes, tmp_path, capsys):
    img = tmp_path / "x.png"
    make_test_image().save(img)
    code, err = refine_one(capsys, tmp_path, img, "--set", "seed=-1")
    assert code == 2 and "seed = -1 (from --set, --config or GREFINE_SEED)" in err
    assert "NOTE" not in err


def test_cached_clip_weights_load_from_their_file(tmp_path, monkeypatch):
    import grefine_clip.loading as loading
    import open_clip

    repo = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("c0ffee")
    snap = repo / "snapshots" / "c0ffee"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"weights")
    found = loading.cached_weights("ViT-B-16-quickgelu", "openai", str(tmp_path))
    assert found == str(snap / "open_clip_model.safetensors")
    seen = {}

    def fake_create(name, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(open_clip, "create_model", fake_create)
    with pytest.raises(Exception):  # noqa: B017 - the stand-in stops the load
        loading.open_clip_model("ViT-B-16-quickgelu", "openai", str(tmp_path))
    assert seen["pretrained"] == found and seen["force_quick_gelu"] is True  # no hub request
