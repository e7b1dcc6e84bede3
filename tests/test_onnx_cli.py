"""``grefine export-onnx``: exports, up-to-date detection, foreign folders, clear errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def _main(argv):
    from grefine_onnx.cli import main

    return main([str(a) for a in argv])


def test_tiny_export_check_and_up_to_date(tmp_path, capsys):
    out = tmp_path / "onnx"
    assert _main(["--model", "tiny", "--out", out, "--parts", "image", "--check"]) == 0
    text = capsys.readouterr().out
    assert "exported: tiny (float32, opset 17, dynamic batch)" in text
    assert "parity image: max |onnx - torch| =" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["graphs"]) == ["image"] and manifest["source"]["model"] == "tiny"

    assert _main(["--model", "tiny", "--out", out, "--parts", "image"]) == 0
    assert "up to date (nothing exported)" in capsys.readouterr().out

    # Other options into the same folder: refused without --force, never silently overwritten.
    assert _main(["--model", "tiny", "--out", out, "--parts", "image", "--fp16"]) == 2
    err = capsys.readouterr().err
    assert "holds an export with other options" in err and "--force" in err
    assert _main(["--model", "tiny", "--out", out, "--parts", "image", "--fp16", "--force"]) == 0
    assert json.loads((out / "manifest.json").read_text())["dtype"] == "float16"
    capsys.readouterr()

    # An export by an older grefine (older format, hence another key) of the same weights and
    # options is stale: re-exported, not refused as "other options".
    old = json.loads((out / "manifest.json").read_text())
    old["format"], old["key"] = "grefine-onnx/0", "0123456789abcdef"
    (out / "manifest.json").write_text(json.dumps(old))
    assert _main(["--model", "tiny", "--out", out, "--parts", "image", "--fp16"]) == 0
    captured = capsys.readouterr()
    assert "re-exporting" in captured.err and "grefine-onnx/0" in captured.err
    assert "exported: tiny (float16" in captured.out
    assert json.loads((out / "manifest.json").read_text())["format"] != "grefine-onnx/0"


def test_static_export_through_the_core_cli(tmp_path, capsys):
    from grefine_core.app.cli import main as grefine_main

    out = tmp_path / "static"
    argv = ["export-onnx", "--", "--model", "tiny", "--out", out, "--static", "--parts", "image"]
    assert grefine_main([str(a) for a in argv]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["static"] is True
    assert manifest["graphs"]["image"]["inputs"]["pixel_values"]["shape"] == [1, 3, 224, 224]
    assert "dynamic batch" not in capsys.readouterr().out


def test_missing_weights_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = _main(["--model", "ViT-B-16", "--pretrained", "openai", "--out", tmp_path / "x"])
    assert code == 2
    err = capsys.readouterr().err
    assert "'ViT-B-16'" in err and "not available offline" in err
    assert not (tmp_path / "x" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "tiny", "--out", "OUT", "--parts", "vision"], "unknown graph(s) ['vision']"),
        (["--model", "tiny", "--out", "OUT", "--opset", "13"], "--opset must be >= 17"),
        (["--model", "tiny"], "the following arguments are required: --out"),
        (["--model", "no-such-model", "--out", "OUT"], "unknown open_clip model 'no-such-model'"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "o") if a == "OUT" else a for a in argv]
    assert _main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert _main(["--help"]) == 0
    assert "--static" in capsys.readouterr().out
