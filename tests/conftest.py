"""Shared pytest fixtures. Everything runs offline on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _shared(*parts: str) -> Path:
    from grefine_core.testing.shared_data import ENV_VAR, shared_path

    p = shared_path(*parts)
    if p is None:
        pytest.skip(
            f"shared reference data {'/'.join(parts)!r} not found: set {ENV_VAR} to the shared "
            "folder (CI always has it beside the checkout)"
        )
    return p


@pytest.fixture(scope="session")
def shared_root() -> Path:
    """The shared folder (skips when absent)."""
    return _shared()


@pytest.fixture(scope="session")
def clip_fixture_dir() -> Path:
    return _shared("fixtures", "clip_surgery")


@pytest.fixture(scope="session")
def pasd_fixture_dir() -> Path:
    return _shared("fixtures", "pasd")


@pytest.fixture(scope="session")
def pq_embeddings_dir() -> Path:
    return _shared("data", "pq_embeddings")


@pytest.fixture(scope="session")
def parti_prompts_path() -> Path:
    return _shared("data", "prompts", "PartiPrompts.tsv")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models are dominated by threading overhead on 2 shared cores: use one thread."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def no_network(monkeypatch):
    """Refuse (and record) every connection or DNS lookup made during the test."""
    import socket

    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _onnxruntime_gpu_build() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


#: For tests of the fallback from ONNX Runtime's CUDA/TensorRT providers: they need the
#: onnxruntime-gpu build (which runs on a CPU too). scripts/setup.sh installs it on Linux x86-64,
#: so CI always runs them; elsewhere they skip and say why.
needs_onnxruntime_gpu_build = pytest.mark.skipif(
    not _onnxruntime_gpu_build() and not os.environ.get("CI"),
    reason="needs the onnxruntime-gpu build (pip install 'grefine[onnx-gpu]'): the test checks "
    "the fallback from its CUDA/TensorRT providers; the CPU build has none",
)


@pytest.fixture
def image(tmp_path):
    """``tmp_path/cat.png``: the fake plugins' test image (grefine_core.testing.make_test_image)."""
    from grefine_core.testing import make_test_image

    path = tmp_path / "cat.png"
    make_test_image().save(path)
    return path
