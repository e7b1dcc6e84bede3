"""Every ``grefine`` command and the Python snippet of the README run as written, with the ``tiny``
preset put in where the README uses the real one (no weights here) and its file names pointed at
real files. A README edit that breaks a command fails here."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from grefine_core.app.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text("utf-8")
IMAGE = ROOT / "examples" / "images" / "cat_table.png"


def readme_commands() -> list[str]:
    """The ``grefine ...`` lines of the README's bash blocks, comments removed."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("grefine "):
                commands.append(line)
    return commands


def python_snippet() -> str:
    return re.findall(r"```python\n(.*?)```", README, re.S)[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The README's files: photo.png / img.png, batch.csv, generated/ (a folder with sidecars)."""
    for name in ("photo.png", "img.png"):
        shutil.copy(IMAGE, tmp_path / name)
    info = PngInfo()
    info.add_text("parameters", "a red cat on a wooden table\nSteps: 20, Seed: 1")
    Image.open(IMAGE).save(tmp_path / "img.png", pnginfo=info)  # --prompt-from-metadata
    (tmp_path / "batch.csv").write_text("image,prompt\nphoto.png,a red cat on a wooden table\n")
    (tmp_path / "generated").mkdir()
    shutil.copy(IMAGE, tmp_path / "generated" / "cat.png")
    (tmp_path / "generated" / "cat.txt").write_text("a red cat on a wooden table")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def as_run_here(command: str) -> list[str]:
    """The README command as this machine runs it: the tiny preset (no weights), the CPU."""
    argv = shlex.split(command)[1:]
    if argv[0] in ("refine", "assess") and "--preset" not in argv:
        argv += ["--preset", "tiny"]
    if argv[0] == "weights" and "paper" in argv:  # its weights are not here: list the tiny's
        argv[argv.index("paper")] = "tiny"
    for flag, value in (("--device", "cuda"), ("--dtype", "float16")):
        if flag in argv:  # no GPU in CI
            i = argv.index(flag)
            assert argv[i + 1] == value
            del argv[i : i + 2]
    return argv + (["--quiet"] if argv[0] in ("refine", "assess") else [])


def test_the_readme_has_the_commands_this_test_runs():
    commands = readme_commands()
    assert len(commands) >= 10
    assert any("--disable clip_aq" in c for c in commands)
    assert all("--out" in c for c in commands if c.split()[1] in ("refine", "assess"))


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, workdir, capsys):
    if "example_sharpen" in command:
        pytest.importorskip(
            "grefine_example_refiner", reason="the example refiner is not installed"
        )
    assert main(as_run_here(command)) == 0, capsys.readouterr().err
    argv = shlex.split(command)
    if "--out" in argv:
        out = workdir / argv[argv.index("--out") + 1]
        assert list(out.glob("*.json")), f"{command}: no report in {out}"


def test_readme_python_snippet_runs(workdir):
    code = python_snippet()
    assert 'preset="paper"' in code
    code = code.replace('preset="paper"', 'preset="tiny"')
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert (workdir / "refined.png").is_file() and (workdir / "out" / "photo.json").is_file()
