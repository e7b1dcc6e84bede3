"""The ``grefine`` command line with fake plugins (registered as if from entry points)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from grefine_core.cli import main
from grefine_core.testing import (
    RaisingPlugin,
    fake_select_args,
    make_test_image,
    registered_fakes,
)

FAKES = fake_select_args()


@pytest.fixture
def fakes():
    with registered_fakes(bad=RaisingPlugin("stage1", "exploded")) as f:
        yield f


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "in" / "cat.png"
    path.parent.mkdir()
    make_test_image().save(path)
    return path


def test_refine_writes_image_json_and_maps(fakes, image, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "refine",
            str(image),
            "--prompt",
            "a red cat",
            "--preset",
            "tiny",
            "--out",
            str(out),
            *FAKES,
        ]
    )
    assert code == 0
    assert Image.open(out / "cat.png").size == (64, 48)
    report = json.loads((out / "cat.json").read_text())
    assert report["trace"][4]["plugin"] == "fake_stage1" and report["preset"] == "tiny"
    assert (out / "cat_maps" / "overview.png").is_file()
    captured = capsys.readouterr()
    assert "1 done, 0 already done (resumed), 0 failed" in captured.out
    assert "plumbing" in captured.err  # the tiny preset says what it proves


def test_assess_writes_maps_and_scores_only(fakes, image, tmp_path):
    out = tmp_path / "a"
    assert (
        main(
            [
                "assess",
                str(image),
                "--prompt",
                "a red cat",
                "--out",
                str(out),
                "--preset",
                "tiny",
                *FAKES,
            ]
        )
        == 0
    )
    report = json.loads((out / "cat.json").read_text())
    assert report["mode"] == "assess" and report["refined"] is False
    assert 0 <= report["perceptual"]["score"] <= 1
    assert (out / "cat_maps" / "pq_map_overlay.png").is_file()


def test_prompt_file_batch_resumes_and_reports_failures(fakes, tmp_path, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("a", "b"):
        make_test_image(seed=1).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"")
    manifest = folder / "items.csv"
    manifest.write_text(
        'image,prompt\na.png,a red cat\nbroken.png,"a dog, with a hat"\nb.png,a blue cat\n'
    )
    out = tmp_path / "out"
    args = ["refine", "--prompt-file", str(manifest), "--out", str(out), "--preset", "tiny", *FAKES]
    assert main(args) == 1  # one item failed
    err = capsys.readouterr()
    assert "broken.png" in err.err and "is empty (0 bytes)" in err.err
    assert "2 done, 0 already done (resumed), 1 failed" in err.out
    assert json.loads((out / "b.json").read_text())["prompt"] == "a blue cat"
    assert main(args) == 1
    assert "0 done, 2 already done (resumed), 1 failed" in capsys.readouterr().out
    jsonl = folder / "items.jsonl"
    jsonl.write_text('{"image": "a.png", "prompt": "x"}\nnot json\n')
    assert main(["refine", "--prompt-file", str(jsonl), "--out", str(out), *FAKES]) == 2
    assert ":2: not valid JSON" in capsys.readouterr().err


def test_a_plugin_that_raises_fails_the_item_not_the_batch(fakes, image, tmp_path, capsys):
    second = image.parent / "dog.png"
    make_test_image(seed=3).save(second)
    out = tmp_path / "o"
    code = main(
        [
            "refine",
            str(image),
            str(second),
            "--prompt",
            "a cat",
            "--out",
            str(out),
            *FAKES,
            "--select",
            "stage1=bad",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "plugin 'bad' failed in slot 'stage1': RuntimeError: exploded" in err
    assert err.count("FAILED") == 2 and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["refine", "IMG", "--prompt", "", "--out", "O"], "--prompt is empty"),
        (["refine", "IMG", "--out", "O"], "--prompt is required"),
        (
            ["refine", "IMG", "--prompt", "x", "--out", "O", "--preset", "nope"],
            "unknown preset 'nope'; valid presets: paper, reference, tiny",
        ),
        (
            ["refine", "IMG", "--prompt", "x", "--out", "O", "--select", "stage1=nope"],
            "unknown plugin 'nope' in select; known plugins:",
        ),
        (
            ["refine", "IMG", "--prompt", "x", "--out", "O", "--disable", "nope"],
            "unknown plugin 'nope' in disable; known plugins:",
        ),
        (
            ["refine", "IMG", "--prompt", "x", "--out", "O", "--select", "stage9=x"],
            "unknown slot 'stage9'",
        ),
        (
            ["refine", "IMG", "--prompt", "x", "--out", "O", "--select", "stage1"],
            "--select expects SLOT=PLUGIN",
        ),
        (
            ["refine", "IMG", "--prompt", "x", "--out", "O", "--select", "stage1=fake_pq"],
            "plugin 'fake_pq' does not implement slot 'stage1'",
        ),
        (["refine", "DIR", "--prompt", "x", "--out", "O"], "is a directory, not an image file"),
        (["refine", "MISSING", "--prompt", "x", "--out", "O"], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(fakes, image, tmp_path, capsys, argv, message):
    subst = {
        "IMG": str(image),
        "O": str(tmp_path / "o"),
        "DIR": str(tmp_path),
        "MISSING": str(tmp_path / "m.png"),
    }
    argv = [subst.get(a, a) for a in argv]
    if argv[0] == "refine":
        argv = [argv[0], *FAKES, *argv[1:]]  # the test's own --select comes later and wins
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_output_that_would_overwrite_the_input_is_refused(fakes, image, capsys):
    code = main(["refine", str(image), "--prompt", "x", "--out", str(image.parent), *FAKES])
    assert code == 1
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert Image.open(image).size == (64, 48)


def test_debug_shows_the_traceback(fakes, image, tmp_path):
    with pytest.raises(Exception, match="unknown preset"):
        main(
            [
                "--debug",
                "refine",
                str(image),
                "--prompt",
                "x",
                "--out",
                str(tmp_path),
                "--preset",
                "nope",
            ]
        )


def test_plugins_lists_builtin_and_registered_plugins(fakes, capsys):
    assert main(["plugins", "--json"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert (
        infos["fake_stage1"]["slots"] == ["stage1"]
        and infos["fake_stage1"]["source"] == "registered"
    )
    assert infos["nltk"]["source"] == "builtin"
    assert {"status", "version", "slots", "source", "reason"} <= set(infos["nltk"])
    assert main(["plugins"]) == 0
    assert "fake_parser" in capsys.readouterr().out


def test_parse_prints_tree_and_json(fakes, capsys):
    assert main(["parse", "a red cat with a hat", "--parser", "fake_parser", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parser"] == "fake_parser"
    assert [p["text"] for p in data["phrases"]] == ["a red cat", "a hat"]
    assert data["phrases"][1]["span"] == [15, 20] and data["phrases"][1]["parent"] == 0
    assert main(["parse", "a red cat with a hat", "--parser", "fake_parser"]) == 0
    out = capsys.readouterr().out
    assert "fake_parser: 2 phrases" in out
    assert (
        "[0] a red cat  (noun: cat; chars 0-9)" in out
        and "└── [1] a hat  (noun: hat; chars 15-20)" in out
    )


def test_presets_command(capsys):
    assert main(["presets"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["presets", "reference"]) == 0
    assert 'fuser = "mask_reference"' in capsys.readouterr().out


def test_delegated_subcommands_receive_their_options(monkeypatch):
    import types

    seen = {}
    fake = types.SimpleNamespace(main=lambda argv: seen.setdefault("argv", argv) and 0)
    monkeypatch.setitem(__import__("sys").modules, "grefine_onnx.cli", fake)
    assert main(["-q", "export-onnx", "--model", "tiny", "--out", "x"]) == 0
    assert seen["argv"] == ["--model", "tiny", "--out", "x"]
