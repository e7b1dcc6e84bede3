"""``grefine weights`` and the check before a run: every weight (hook ``grefine_weights``) of the
plugins a run calls is listed and checked on disk without the network, all missing ones are named
at once, and ``fetch`` fills the standard caches from a local mirror folder that stands in for
the remote sources (the same layout: ``hf/<org>/<repo>/...`` and ``url/<host>/<path>``), after
which the real loaders read the weights offline."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grefine_core.app.cli import main
from grefine_core.app.weights import collect_weights, hub_complete, missing, preflight
from grefine_core.app.weights_fetch import _probe, download
from grefine_core.config import load_config
from grefine_core.errors import MissingWeightsError, UsageError
from grefine_core.pipeline import GRefine

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "images" / "vase_odd.png"
PAPER_WEIGHTS = 5  # on the CPU: CLIP, PQ prompts, SDXL inpainting, SD-1.5 parts, PASD checkpoint
TINY_SDXL = "grefine-test/tiny-sdxl-inpainting"


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

    _probe.cache_clear()
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield attempts
    _probe.cache_clear()


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _weights_json(capsys, *args) -> tuple[int, list[dict]]:
    code = main(["weights", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_paper_lists_every_weight_and_exits_2_when_missing(empty_caches, no_gpu, capsys):
    code, listed = _weights_json(capsys, "--preset", "paper")
    assert code == 2 and len(listed) == PAPER_WEIGHTS
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
    assert pq["fetch"].count("curl -L -o") == 4  # the exact commands, one per file
    pasd = next(w for w in listed if w["name"].startswith("PASD"))
    assert pasd["source"] == "hf://yangtao9009/PASD"
    assert sorted(pasd["files"]) == [
        "pasd/checkpoint-100000/controlnet/*",
        "pasd/checkpoint-100000/unet/*",
    ]
    sdxl = next(w for w in listed if w["plugin"] == "sdxl")
    assert "unet/diffusion_pytorch_model.safetensors" in sdxl["files"]  # each model, by name


def test_a_gpu_run_also_needs_the_float16_vae(empty_caches, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, listed = _weights_json(capsys, "--preset", "paper")
    assert code == 2 and len(listed) == PAPER_WEIGHTS + 1
    assert any(w["source"] == "hf://madebyollin/sdxl-vae-fp16-fix" for w in listed)
    code, on_cpu = _weights_json(capsys, "--preset", "paper", "--device", "cpu")
    assert len(on_cpu) == PAPER_WEIGHTS  # the CPU runs float32: no fp16 VAE


def test_an_assess_needs_no_refiner_weights(empty_caches, no_gpu, no_network, capsys):
    code, listed = _weights_json(capsys, "--preset", "paper", "--mode", "assess")
    assert code == 2 and {w["plugin"] for w in listed} == {"clip_pq"}
    argv = ["assess", str(IMAGE), "--prompt", "a vase", "--preset", "paper", "--out"]
    assert main([*argv, str(empty_caches / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "2 model weight(s)" in err and "SDXL" not in err and "PASD" not in err


def test_tiny_and_oracle_need_no_weight(empty_caches, capsys):
    assert main(["weights", "--preset", "oracle"]) == 0
    assert "loads no weight files" in capsys.readouterr().out
    assert main(["weights", "--preset", "tiny"]) == 0  # PQ prompts optional (random fallback)
    assert "optional, absent" in capsys.readouterr().out


def test_preflight_names_all_missing_weights_at_once_fast_and_offline(
    empty_caches, no_network, capsys
):
    start = time.perf_counter()
    argv = ["refine", str(IMAGE), "--prompt", "a vase", "--preset", "paper", "--out"]
    code = main([*argv, str(empty_caches / "out"), "-q"])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2 and seconds < 5.0, (code, seconds)
    assert no_network == []  # not one connection attempt
    assert err.count("error:") == 1 and f"{PAPER_WEIGHTS} model weight(s)" in err
    for name in ("CLIP", "PQ-Map", "SDXL inpainting", "SD-1.5", "PASD checkpoint"):
        assert err.count(name) == 1, name
    assert "--fetch-weights (the same command)" in err
    assert not (empty_caches / "out").exists()  # nothing written, no item started


def test_a_batch_fails_once_not_per_item(empty_caches, no_network, capsys, tmp_path):
    manifest = tmp_path / "items.csv"
    manifest.write_text(f"image,prompt\n{IMAGE},a vase\n{IMAGE},a red vase\n")
    argv = ["refine", "--prompt-file", str(manifest), "--preset", "paper", "--out"]
    assert main([*argv, str(tmp_path / "o"), "-q"]) == 2
    assert capsys.readouterr().err.count("missing for preset") == 1


# --------------------------------------------------------------------------- URL files (PQ)


@pytest.fixture
def fake_pq(empty_caches, monkeypatch):
    """Four made-up PQ files on a mirror, with their sha256 as the published ones."""
    import grefine_quality.weights as quality_weights
    from grefine_quality.constants import PQ_BASE_URL, PQ_FACTORS, pq_filename

    folder = empty_caches / "mirror" / "url" / PQ_BASE_URL.split("://", 1)[1]
    folder.mkdir(parents=True)
    digests = {}
    for factor in PQ_FACTORS:
        data = f"prompt file {factor}".encode()
        (folder / pq_filename(factor)).write_bytes(data)
        digests[factor] = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(quality_weights, "PQ_SHA256", digests)
    monkeypatch.setenv("GREFINE_WEIGHTS_MIRROR", str(empty_caches / "mirror"))
    return folder


PQ_ONLY = ["--preset", "paper", "--set", "plugins.clip.model=tiny", "--select", "stage1=none",
           "--select", "stage2=none"]  # fmt: skip


def test_fetch_url_files_from_the_mirror_checks_sha256(empty_caches, fake_pq, capsys):
    assert main(["weights", *PQ_ONLY]) == 2
    assert main(["weights", "fetch", *PQ_ONLY]) == 0
    assert "present, sha256 ok" in capsys.readouterr().out
    assert sorted(p.name for p in (empty_caches / "pq").iterdir()) == [
        "PQ-natural.pth", "PQ-overall.pth", "PQ-rational.pth", "PQ-technical.pth"
    ]  # fmt: skip
    target = empty_caches / "pq" / "PQ-overall.pth"
    target.write_bytes(b"changed on disk")  # caught by the next check
    assert main(["weights", *PQ_ONLY]) == 2
    assert "sha256 MISMATCH" in capsys.readouterr().out


def test_a_corrupted_download_is_removed_not_kept(empty_caches, fake_pq, capsys):
    (fake_pq / "PQ-rational.pth").write_bytes(b"not the published file")
    assert main(["weights", "fetch", *PQ_ONLY]) == 2
    assert "PQ-rational.pth has sha256" in capsys.readouterr().err
    names = sorted(p.name for p in (empty_caches / "pq").iterdir())
    assert "PQ-rational.pth" not in names and not any(n.endswith(".part") for n in names)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """A file server that honours ``Range: bytes=N-`` (206, or 416 past the end)."""

    payload = b"0123456789" * 1000

    def do_GET(self):  # noqa: N802 - http.server's name
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(self.payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_interrupted_url_download_continues_where_it_stopped(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/f.bin"
    try:
        part = tmp_path / "f.bin.part"
        part.write_bytes(_RangeHandler.payload[:3000])  # a download cut off
        download(url, part)
        assert part.read_bytes() == _RangeHandler.payload
        download(url, part)  # already whole: the server says 416, the part is kept
        assert part.read_bytes() == _RangeHandler.payload
    finally:
        server.shutdown()


# --------------------------------------------------------------------------- hub repositories


def _mirror_tiny_sdxl(mirror: Path) -> None:
    from grefine_sdxl.tiny import build_tiny_pipeline

    build_tiny_pipeline().save_pretrained(mirror / "hf" / TINY_SDXL)
    (mirror / "hf" / TINY_SDXL / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"x")


def test_fetch_a_hub_pipeline_from_the_mirror_then_load_it_offline(empty_caches, monkeypatch):
    mirror = empty_caches / "mirror"
    _mirror_tiny_sdxl(mirror)
    monkeypatch.setenv("GREFINE_WEIGHTS_MIRROR", str(mirror))
    cfg = load_config(preset="tiny", overrides={"plugins": {"sdxl": {"model": TINY_SDXL}}})
    pipeline = GRefine(cfg)
    [weight] = missing(collect_weights(pipeline))
    assert weight.repo == TINY_SDXL and weight.plugin == "sdxl"
    assert main(["weights", "fetch", "--preset", "tiny", "--sdxl-model", TINY_SDXL]) == 0
    assert missing(collect_weights(pipeline)) == []
    snapshot = next((empty_caches / "hub").glob("models--grefine-test--*/snapshots/*"))
    assert (snapshot / "model_index.json").is_file()
    assert not (snapshot / "unet" / "diffusion_pytorch_model.bin").exists()  # patterns honoured
    # A fresh process, as a user's next run: the hub libraries read their cache folder and
    # offline switch when imported, and earlier tests in this one imported them already.
    code = (
        "from grefine_sdxl.loading import load_inpaint_pipeline\n"
        "from grefine_sdxl.settings import SDXLSettings\n"
        f"print(type(load_inpaint_pipeline(SDXLSettings(model={TINY_SDXL!r}))).__name__)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("StableDiffusionXLInpaintPipeline")


def test_fetch_weights_flag_fetches_then_runs(empty_caches, monkeypatch, capsys):
    mirror = empty_caches / "mirror"
    _mirror_tiny_sdxl(mirror)
    monkeypatch.setenv("GREFINE_WEIGHTS_MIRROR", str(mirror))
    argv = ["refine", str(IMAGE), "--prompt", "a vase", "--preset", "tiny", "--sdxl-model",
            TINY_SDXL, "--disable", "pasd", "--out", str(empty_caches / "o")]  # fmt: skip
    assert main([*argv, "-q"]) == 2  # without the flag: named, not fetched
    assert "--fetch-weights" in capsys.readouterr().err
    # A fresh process (the hub libraries fix their cache folder when first imported).
    cmd = [sys.executable, "-m", "grefine_core.app.cli", *argv, "--fetch-weights", "-q"]
    proc = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (empty_caches / "o" / "vase_odd.png").is_file()


def _cache_repo(root: Path, repo: str, files: list[str], incomplete: bool = False) -> None:
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text("c0ffee")
    for name in files:
        (base / "snapshots" / "c0ffee" / name).parent.mkdir(parents=True, exist_ok=True)
        (base / "snapshots" / "c0ffee" / name).write_text("{}")
    if incomplete:
        (base / "blobs").mkdir()
        (base / "blobs" / "0123abcd.incomplete").write_bytes(b"half")


def test_a_half_done_hub_download_is_not_taken_for_a_complete_one(tmp_path):
    patterns = ["model_index.json", "unet/diffusion_pytorch_model.safetensors"]
    _cache_repo(tmp_path, "org/configs-only", ["model_index.json"])  # the weights never came
    _cache_repo(tmp_path, "org/all", [*patterns])
    _cache_repo(tmp_path, "org/downloading", [*patterns], incomplete=True)
    assert not hub_complete("org/configs-only", patterns, str(tmp_path))
    assert hub_complete("org/all", patterns, str(tmp_path))
    assert not hub_complete("org/downloading", patterns, str(tmp_path))
    assert not hub_complete("org/absent", patterns, str(tmp_path))


def test_the_pasd_checkpoint_is_read_from_the_hub_cache(empty_caches, monkeypatch):
    from grefine_pasd.loading import check_pasd_checkpoint

    mirror = empty_caches / "mirror"
    sub = mirror / "hf" / "yangtao9009" / "PASD" / "pasd" / "checkpoint-100000"
    for part in ("unet", "controlnet"):
        (sub / part).mkdir(parents=True)
        (sub / part / "config.json").write_text("{}")
        (sub / part / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (sub.parent / "other.bin").write_bytes(b"not fetched")
    sd15 = mirror / "hf" / "grefine-test" / "sd15"
    for rel in ("model_index.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                "text_encoder/config.json", "text_encoder/model.safetensors",
                "tokenizer/vocab.json", "scheduler/scheduler_config.json"):  # fmt: skip
        (sd15 / rel).parent.mkdir(parents=True, exist_ok=True)
        (sd15 / rel).write_text("{}")
    monkeypatch.setenv("GREFINE_WEIGHTS_MIRROR", str(mirror))
    sets = ["--set", "plugins.pasd.sd_model=grefine-test/sd15", "--set",
            "plugins.pasd.pasd_checkpoint=hf://yangtao9009/PASD/pasd/checkpoint-100000"]  # fmt: skip
    assert main(["weights", "--preset", "tiny", *sets]) == 2
    assert main(["weights", "fetch", "--preset", "tiny", *sets]) == 0
    folder = check_pasd_checkpoint("hf://yangtao9009/PASD/pasd/checkpoint-100000")
    assert (folder / "unet" / "config.json").is_file() and folder.name == "checkpoint-100000"
    assert not (folder.parent / "other.bin").exists()
    with pytest.raises(MissingWeightsError, match="grefine weights fetch"):
        check_pasd_checkpoint("hf://yangtao9009/PASD/pasd/checkpoint-999")


def test_one_failed_fetch_does_not_stop_the_others(empty_caches, fake_pq, capsys):
    # the SDXL repository is not on the mirror; the PQ files are
    args = [*PQ_ONLY[:4], "--select", "stage2=none", "--sdxl-model", "grefine-test/absent"]
    assert main(["weights", "fetch", *args]) == 2
    err = capsys.readouterr().err
    assert "the mirror" in err and "grefine-test/absent" in err
    assert len(list((empty_caches / "pq").iterdir())) == 4  # fetched all the same


def test_fetch_without_a_mirror_asks_the_host_once_then_stops(empty_caches, no_network, capsys):
    args = ["--preset", "tiny", "--sdxl-model", "grefine-test/absent", "--select", "stage2=none"]
    code = main(["weights", "fetch", *args])
    err = capsys.readouterr().err
    assert code == 2 and len(no_network) == 1, no_network
    assert "cannot reach huggingface.co" in err and err.count("error:") == 1


def test_everything_local_turns_the_hub_offline(empty_caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    preflight(GRefine(load_config(preset="oracle")), say=lambda text: None)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True


# --------------------------------------------------------------------------- device, declarations


def test_a_device_that_is_not_there_fails_before_the_first_item(monkeypatch, tmp_path, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        argv = ["refine", str(IMAGE), "--prompt", "a vase", "--preset", "tiny", "--device"]
        code = main([*argv, device, "--out", str(tmp_path / "o"), "-q"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("error:") == 1 and "sees no CUDA GPU" in err
        assert not (tmp_path / "o").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    from grefine_core.app.weights import check_device

    check_device("cuda:0")
    with pytest.raises(UsageError, match=r"'cuda:1'.*sees 1 GPU"):
        check_device("cuda:1")


def test_a_bad_device_and_missing_weights_are_named_together(
    empty_caches, no_network, monkeypatch, capsys
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["refine", str(IMAGE), "--prompt", "a", "--preset", "paper", "--device", "cuda"]
    assert main([*argv, "--out", str(empty_caches / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "sees no CUDA GPU" in err and "weight(s)" in err


def test_a_malformed_device_is_refused_with_the_valid_forms(capsys, tmp_path):
    argv = ["refine", str(IMAGE), "--prompt", "a", "--device", "gpu0", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "valid: auto, cpu, mps, cuda, cuda:N" in capsys.readouterr().err


def test_a_plugin_weight_declaration_is_checked():
    from grefine_core.app.weights import _weight
    from grefine_core.errors import PluginError

    with pytest.raises(PluginError, match="plugin 'x'.*keys name, present"):
        _weight("x", {"name": "a"})
    base = {"name": "a", "present": True, "source": "", "files": {}, "target": ""}
    with pytest.raises(PluginError, match="unknown keys \\['colour'\\]"):
        _weight("x", {**base, "colour": 1})
    with pytest.raises(PluginError, match="'files' must be"):
        _weight("x", {**base, "files": ["a.bin"]})


def test_a_missing_extra_is_named_with_the_weights_and_never_installed(
    empty_caches, no_network, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "spacy", None)  # as if grefine[spacy] were not installed
    args = ["--preset", "tiny", "--select", "parser=spacy"]
    assert main(["weights", "fetch", *args]) == 2 and no_network == []
    captured = capsys.readouterr()
    assert "spaCy (Python package)  [MISSING]" in captured.out
    assert 'pip install "grefine[spacy]"' in captured.out
    argv = ["refine", str(IMAGE), "--prompt", "a vase", *args, "--out"]
    code = main([*argv, str(empty_caches / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "spaCy (Python package) [plugin spacy; install it: pip install" in err
    assert "--fetch-weights" not in err  # nothing here can be fetched
    assert not (empty_caches / "o").exists()


def test_trained_pq_prompts_pass_the_check_by_their_own_manifest(empty_caches, capsys):
    """grefine train-pq output (docs/training.md): the released sha256 cannot match it; the
    manifest beside it vouches instead, and a file changed after training is caught."""
    import hashlib

    from grefine_quality.constants import PQ_FACTORS, pq_filename
    from grefine_quality.trained import TRAINED_MANIFEST, TRAINED_MANIFEST_KIND

    folder = empty_caches / "trained"
    folder.mkdir()
    files = {}
    for i, factor in enumerate(PQ_FACTORS):
        data = f"trained prompt {i}".encode()
        (folder / pq_filename(factor)).write_bytes(data)
        files[pq_filename(factor)] = hashlib.sha256(data).hexdigest()
    manifest = {"kind": TRAINED_MANIFEST_KIND, "files": files}
    (folder / TRAINED_MANIFEST).write_text(json.dumps(manifest))
    args = ["weights", *PQ_ONLY, "--set", f"plugins.pq.prompts={folder}"]
    assert main(args) == 0
    assert "present, sha256 ok" in capsys.readouterr().out
    (folder / "PQ-overall.pth").write_bytes(b"changed after training")
    assert main(args) == 2
