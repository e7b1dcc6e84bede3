"""No network unless asked: the tiny pipeline, run as a user would (HF_HUB_OFFLINE unset), makes
no connection but local sockets. strace sees native code too (ONNX Runtime's telemetry resolved a
host from C++, which patching Python's socket module would miss)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_tiny_refine_connects_to_nothing(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ORT_DISABLE_TELEMETRY")
    }
    log = tmp_path / "strace.log"
    image = ROOT / "examples" / "images" / "vase_odd.png"
    cmd = [
        sys.executable,
        "-m",
        "grefine_core.app.cli",
        "refine",
        str(image),
        "--prompt",
        "a blue vase",
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log), *cmd],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "vase_odd.json").is_file()
    calls = log.read_text().splitlines()
    # An internet socket of any kind, or a lookup through systemd-resolved. (glibc also asks nscd
    # for user names; a host lookup that nscd cannot answer falls back to AF_INET, caught here.)
    remote = [line for line in calls if re.search(r"AF_INET6?\b|io\.systemd\.Resolve", line)]
    assert remote == [], "network use attempted:\n" + "\n".join(remote[:5])


def test_onnxruntime_telemetry_is_off_before_it_is_imported():
    code = (
        "import os, sys; import grefine_core; "
        "assert 'onnxruntime' not in sys.modules; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    env["ORT_DISABLE_TELEMETRY"] = "0"  # a user's own choice is kept
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "0"
