"""``grefine weights`` and the check before a run: every weight (hook ``grefine_weights``) of the active plugins is listed
and checked on disk without the network, all missing ones are named at once, and ``fetch`` fills
the standard caches from a local mirror folder that stands in for the remote sources (the same
layout: ``hf/<org>/<repo>/...`` and ``url/<host>/<path>``), after which the real loaders read the
weights offline."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from grefine_core.app.cli import main
from grefine_core.app.weights import collect_weights, missing, preflight
from grefine_core.config import load_config
from grefine_core.errors import InputError, MissingWeightsError, UsageError
from grefine_core.pipeline import GRefine

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "images" / "vase_odd.png"
PAPER_WEIGHTS = 5  # CLIP, PQ prompts, SDXL inpainting, SD-1.5 parts, PASD checkpoint


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty hub and grefine caches (nothing of the user's is read or written)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GREFINE_PQ_DIR", str(tmp_path / "pq"))
    monkeypatch.delenv("GREFINE_WEIGHTS_MIRROR", raising=False)
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails at once, and is counted."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_paper_lists_every_weight_and_exits_2_when_missing(empty_caches, capsys):
    assert main(["weights", "--preset", "paper", "--json"]) == 2
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == PAPER_WEIGHTS
    by_plugin = {(w["plugin"], w["name"].split(" ")[0]) for w in listed}
    assert by_plugin == {
        ("clip_pq", "CLIP"),
        ("clip_pq", "PQ-Map"),
        ("sdxl", "SDXL"),
        ("pasd", "SD-1.5"),
        ("pasd", "PASD"),
    }
    assert all(not w["present"] and w["fetch"] and w["licence"] for w in listed)
    pq = next(w for w in listed if w["name"].startswith("PQ-Map"))
    assert pq["target"] == str(empty_caches / "pq") and all(
        len(h) == 64 for h in pq["files"].values()
    )
    pasd = next(w for w in listed if w["name"].startswith("PASD"))
    assert pasd["target"].endswith(".cache/grefine/pasd/checkpoint-100000")
    assert not pasd["target"].startswith("runs")  # not relative to the working folder


def test_tiny_and_oracle_need_no_weight(empty_caches, capsys):
    assert main(["weights", "--preset", "oracle"]) == 0
    assert "loads no weight files" in capsys.readouterr().out
    assert main(["weights", "--preset", "tiny"]) == 0  # PQ prompts optional (random fallback)
    assert "optional, absent" in capsys.readouterr().out


def test_preflight_names_all_missing_weights_at_once_fast_and_offline(
    empty_caches, no_network, capsys
):
    start = time.perf_counter()
    code = main(
        [
            "refine",
            str(IMAGE),
            "--prompt",
            "a vase",
            "--preset",
            "paper",
            "--out",
            str(empty_caches / "out"),
            "-q",
        ]
    )
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2 and seconds < 5.0, (code, seconds)
    assert no_network == []  # not one connection attempt
    assert err.count("error:") == 1 and f"{PAPER_WEIGHTS} model weight(s) missing" in err
    for name in ("CLIP", "PQ-Map", "SDXL inpainting", "SD-1.5", "PASD checkpoint"):
        assert err.count(name) == 1, name
    assert "grefine weights fetch --preset paper" in err
    assert not (empty_caches / "out").exists()  # nothing written, no item started


def test_a_batch_fails_once_not_per_item(empty_caches, no_network, capsys, tmp_path):
    manifest = tmp_path / "items.csv"
    manifest.write_text(f"image,prompt\n{IMAGE},a vase\n{IMAGE},a red vase\n")
    assert (
        main(
            [
                "refine",
                "--prompt-file",
                str(manifest),
                "--preset",
                "paper",
                "--out",
                str(tmp_path / "o"),
                "-q",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.count("missing for preset") == 1


def _mirror_pq(mirror: Path, shared: Path) -> None:
    from grefine_quality.constants import PQ_BASE_URL, PQ_FACTORS, pq_filename

    folder = mirror / "url" / PQ_BASE_URL.split("://", 1)[1]
    folder.mkdir(parents=True)
    for factor in PQ_FACTORS:
        shutil.copy(shared / pq_filename(factor), folder / pq_filename(factor))


@pytest.fixture
def pq_files(shared_root):
    folder = shared_root / "data" / "pq_embeddings"
    if not folder.is_dir():
        pytest.skip(f"the released PQ prompt files are not in {folder}")
    return folder


def test_fetch_pq_prompts_from_the_mirror_checks_sha256(
    empty_caches, pq_files, monkeypatch, capsys
):
    mirror = empty_caches / "mirror"
    _mirror_pq(mirror, pq_files)
    monkeypatch.setenv("GREFINE_WEIGHTS_MIRROR", str(mirror))
    args = [
        "--preset",
        "paper",
        "--set",
        "plugins.clip.model=tiny",
        "--select",
        "stage1=none",
        "--select",
        "stage2=none",
    ]
    assert main(["weights", *args]) == 2
    assert main(["weights", "fetch", *args]) == 0
    out = capsys.readouterr().out
    assert "present, sha256 ok" in out
    assert sorted(p.name for p in (empty_caches / "pq").iterdir()) == [
        "PQ-natural.pth",
        "PQ-overall.pth",
        "PQ-rational.pth",
        "PQ-technical.pth",
    ]
    # a file changed on disk is caught by the next check
    target = empty_caches / "pq" / "PQ-overall.pth"
    target.write_bytes(target.read_bytes()[:-1] + b"x")
    assert main(["weights", *args]) == 2
    assert "sha256 MISMATCH" in capsys.readouterr().out


def test_a_corrupted_download_is_removed_not_kept(empty_caches, pq_files, monkeypatch):
    mirror = empty_caches / "mirror"
    _mirror_pq(mirror, pq_files)
    bad = next((mirror / "url").rglob("PQ-rational.pth"))
    bad.write_bytes(b"not the released file")
    monkeypatch.setenv("GREFINE_WEIGHTS_MIRROR", str(mirror))
    cfg = load_config(preset="paper", overrides={"plugins": {"clip": {"model": "tiny"}}})
    weights = [w for w in collect_weights(GRefine(cfg)) if w.name.startswith("PQ-Map")]
    from grefine_core.app.weights_fetch import fetch

    with pytest.raises(InputError, match="PQ-rational.pth has sha256"):
        fetch(weights[0], say=lambda text: None)
    names = sorted(p.name for p in (empty_caches / "pq").iterdir())
    assert "PQ-rational.pth" not in names and not any(n.endswith(".part") for n in names)


def test_fetch_a_hub_pipeline_from_the_mirror_then_load_it_offline(empty_caches, monkeypatch):
    from grefine_sdxl.tiny import build_tiny_pipeline

    repo = "grefine-test/tiny-sdxl-inpainting"
    mirror = empty_caches / "mirror"
    build_tiny_pipeline().save_pretrained(mirror / "hf" / repo)
    (mirror / "hf" / repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not fetched")
    monkeypatch.setenv("GREFINE_WEIGHTS_MIRROR", str(mirror))
    cfg = load_config(preset="tiny", overrides={"plugins": {"sdxl": {"model": repo}}})
    pipeline = GRefine(cfg)
    [weight] = missing(collect_weights(pipeline))
    assert weight.repo == repo and weight.plugin == "sdxl"
    assert (
        main(["weights", "fetch", "--preset", "tiny", "--set", f"plugins.sdxl.model={repo}"]) == 0
    )
    assert missing(collect_weights(pipeline)) == []
    snapshot = next((empty_caches / "hub").glob("models--grefine-test--*/snapshots/*"))
    assert (snapshot / "model_index.json").is_file()
    assert not (snapshot / "unet" / "diffusion_pytorch_model.bin").exists()  # patterns honoured
    # A fresh process, as a user's next run: the hub libraries read their cache folder and
    # offline switch when imported, and earlier tests in this one imported them already.
    code = (
        "from grefine_sdxl.loading import load_inpaint_pipeline\n"
        "from grefine_sdxl.settings import SDXLSettings\n"
        f"print(type(load_inpaint_pipeline(SDXLSettings(model={repo!r}))).__name__)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("StableDiffusionXLInpaintPipeline")


def test_fetch_unpacks_an_archive_whatever_its_layout(empty_caches, monkeypatch):
    mirror = empty_caches / "mirror"
    archive_dir = mirror / "hf" / "yangtao9009" / "PASD"
    archive_dir.mkdir(parents=True)
    with zipfile.ZipFile(archive_dir / "pasd.zip", "w") as zf:
        for part in ("unet", "controlnet"):
            zf.writestr(f"runs/pasd/checkpoint-100000/{part}/config.json", "{}")
            zf.writestr(
                f"runs/pasd/checkpoint-100000/{part}/diffusion_pytorch_model.safetensors", ""
            )
    sd15 = mirror / "hf" / "grefine-test" / "sd15"
    for rel in (
        "model_index.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/vocab.json",
        "scheduler/scheduler_config.json",
    ):
        (sd15 / rel).parent.mkdir(parents=True, exist_ok=True)
        (sd15 / rel).write_text("{}")
    monkeypatch.setenv("GREFINE_WEIGHTS_MIRROR", str(mirror))
    target = empty_caches / "weights" / "pasd-ckpt"
    sets = [
        "--set",
        "plugins.pasd.sd_model=grefine-test/sd15",
        "--set",
        f"plugins.pasd.pasd_checkpoint={target}",
    ]
    assert main(["weights", "--preset", "tiny", *sets]) == 2
    assert main(["weights", "fetch", "--preset", "tiny", *sets]) == 0
    assert (target / "unet" / "config.json").is_file() and (target / "controlnet").is_dir()
    assert sorted(p.name for p in target.parent.iterdir()) == ["pasd-ckpt"]  # no staging left


def test_an_unsafe_archive_is_refused(empty_caches, monkeypatch):
    from grefine_core.app.weights import Weight
    from grefine_core.app.weights_fetch import unpack

    archive = empty_caches / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside/unet/config.json", "{}")
    weight = Weight("p", "x", False, "", {}, str(empty_caches / "t"), contains=["unet"])
    with pytest.raises(InputError, match="unsafe path"):
        unpack(weight, [archive])
    assert not (empty_caches / "outside").exists()


def test_fetch_without_a_mirror_tries_the_host_once_then_stops(empty_caches, no_network, capsys):
    code = main(
        ["weights", "fetch", "--preset", "tiny", "--set", "plugins.sdxl.model=grefine-test/absent"]
    )
    assert code == 2 and len(no_network) == 1
    assert "cannot reach huggingface.co" in capsys.readouterr().err


def test_everything_local_turns_the_hub_offline(empty_caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    preflight(GRefine(load_config(preset="oracle")), say=lambda text: None)
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True


def test_a_device_that_is_not_there_fails_before_the_first_item(monkeypatch, tmp_path, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        code = main(
            [
                "refine",
                str(IMAGE),
                "--prompt",
                "a vase",
                "--preset",
                "tiny",
                "--device",
                device,
                "--out",
                str(tmp_path / "o"),
                "-q",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("error:") == 1 and "sees no CUDA GPU" in err
        assert not (tmp_path / "o").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    from grefine_core.app.weights import check_device

    check_device("cuda:0")
    with pytest.raises(UsageError, match=r"'cuda:1'.*sees 1 GPU"):
        check_device("cuda:1")


def test_a_malformed_device_is_refused_with_the_valid_forms(capsys, tmp_path):
    assert (
        main(["refine", str(IMAGE), "--prompt", "a", "--device", "gpu0", "--out", str(tmp_path)])
        == 2
    )
    assert "valid: auto, cpu, mps, cuda, cuda:N" in capsys.readouterr().err


def test_a_plugin_weight_declaration_is_checked(monkeypatch):
    from grefine_core.app.weights import _weight
    from grefine_core.errors import PluginError

    with pytest.raises(PluginError, match="plugin 'x'.*keys name, present"):
        _weight("x", {"name": "a"})
    with pytest.raises(PluginError, match="unknown keys \\['colour'\\]"):
        _weight(
            "x",
            {"name": "a", "present": True, "source": "", "files": {}, "target": "", "colour": 1},
        )


def test_missing_weights_error_exits_2():
    assert MissingWeightsError.exit_code == 2


def test_a_missing_extra_is_named_with_the_weights_and_never_installed(
    empty_caches, no_network, monkeypatch, capsys
):
    import sys

    monkeypatch.setitem(sys.modules, "spacy", None)  # as if grefine[spacy] were not installed
    args = ["--preset", "tiny", "--select", "parser=spacy"]
    assert main(["weights", "fetch", *args]) == 2 and no_network == []
    captured = capsys.readouterr()
    assert "spaCy (Python package)  [MISSING]" in captured.out
    assert 'pip install "grefine[spacy]"' in captured.out
    code = main(["refine", str(IMAGE), "--prompt", "a vase", *args, "--out",
                 str(empty_caches / "o"), "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "spaCy (Python package) [plugin spacy; looked in this Python" in err
    assert not (empty_caches / "o").exists()
