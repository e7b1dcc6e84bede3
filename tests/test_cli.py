"""The ``grefine`` command line with fake plugins (registered as if from entry points)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from grefine_core.app.cli import main
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
    assert main(args) == 2  # one item failed, on a bad input (a failed run would give 1)
    err = capsys.readouterr()
    assert "broken.png" in err.err and "is empty (0 bytes)" in err.err
    assert "2 done, 0 already done (resumed), 1 failed" in err.out
    assert json.loads((out / "b.json").read_text())["prompt"] == "a blue cat"
    assert main(args) == 2
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
            "unknown preset 'nope'; valid presets: oracle, paper, reference, tiny",
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
        (["refine", "DIR", "--prompt", "x", "--out", "O"], "holds no images (.png"),
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
    assert infos["fake_stage1"]["slots"] == ["stage1"] and infos["fake_stage1"][
        "source"
    ].startswith("entry point (grefine-registered-")
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


def _fake_config_file(tmp_path, extra=""):
    """A config file selecting the fakes (so the command line selects nothing itself)."""
    from grefine_core.testing import FAKE_SELECT

    lines = ["[select]", *(f'{slot} = "{plugin}"' for slot, plugin in FAKE_SELECT.items())]
    path = tmp_path / "fakes.toml"
    path.write_text(extra + "\n".join(lines) + "\n")
    return path


def test_precedence_of_file_env_and_flags_for_select_disable_and_seed(
    fakes, image, tmp_path, monkeypatch
):
    config = _fake_config_file(tmp_path, 'seed = 5\ndisable = ["fake_stage2"]\n')
    monkeypatch.setenv("GREFINE_DISABLE", "fake_pq")
    monkeypatch.setenv("GREFINE_SEED", "6")
    base = ["refine", str(image), "--prompt", "a cat", "--preset", "tiny", "--config", str(config)]

    def report(*flags):
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        assert main([*base, "--out", str(out), *flags]) == 0
        data = json.loads((out / "cat.json").read_text())
        return data, {t["slot"]: t["status"] for t in data["trace"]}

    data, status = report("--disable", "fake_aq")
    assert data["disable"] == ["fake_stage2", "fake_pq", "fake_aq"] and data["seed"] == 6
    assert status["perceptual"] == status["alignment"] == status["stage2"] == "skipped"
    assert status["parser"] == "skipped" and status["fuser"] == "ran"
    # a flag's --select re-enables a plugin disabled by the file or the environment; --seed wins
    data, status = report("--select", "stage2=fake_stage2", "--select", "perceptual=fake_pq",
                          "--seed", "7")  # fmt: skip
    assert data["disable"] == [] and data["seed"] == 7 and data["trace"][5]["seed"] == 7
    assert status["perceptual"] == status["stage2"] == "ran"
    # the environment's select beats the file's, a flag beats the environment
    monkeypatch.setenv("GREFINE_SELECT__STAGE2", "none")
    assert report()[1]["stage2"] == "skipped"
    assert report("--select", "stage2=fake_stage2")[1]["stage2"] == "ran"


def test_global_options_work_after_the_subcommand(fakes, image, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["refine", str(image), "--prompt", "a", "--out", str(out), *FAKES, "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    with pytest.raises(Exception, match="unknown preset"):
        main(["refine", str(image), "--prompt", "a", "--out", str(out), "--preset", "x", "--debug"])


def test_refine_help_describes_outputs_precedence_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as info:
        main(["refine", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in (
        "DIR/<stem>.png",
        "DIR/<stem>.json",
        "--prompt-file F",
        "--select SLOT=PLUGIN",
        "--disable PLUGIN",
        "--seed N",
        "--device DEVICE",
        "paper, reference, tiny",
        "configuration precedence (lowest to highest): --preset, --config FILE, GREFINE_*",
        "exit status: 0 success, 2 bad usage or input, 1 a failed run",
    ):
        assert needle in text, needle


def test_a_batch_shows_a_progress_bar_unless_quiet(fakes, tmp_path, capsys):
    for name in ("a", "b"):
        make_test_image(seed=2).save(tmp_path / f"{name}.png")
    images = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    args = ["refine", *images, "--prompt", "a cat", "--out", str(tmp_path / "o"), *FAKES]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "grefine: 100%" in err and "2/2" in err
    assert main([*args, "--no-resume", "-q"]) == 0
    assert "2/2" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty (0 bytes)"),
        (b"GIF89a not really", "is not a readable image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", "is corrupt or truncated"),
    ],
)
def test_an_unusable_image_exits_2_naming_the_file(fakes, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    code = main(["refine", str(bad), "--prompt", "x", "--out", str(tmp_path / "o"), *FAKES])
    err = capsys.readouterr().err
    assert code == 2 and f"'{bad}' {message}" in err and "Traceback" not in err


def test_an_unwritable_output_directory_exits_1(fakes, image, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["refine", str(image), "--prompt", "x", "--out", str(blocker / "sub"), *FAKES])
    err = capsys.readouterr().err
    assert code == 1 and f"output directory '{blocker / 'sub'}' cannot be created" in err


def test_one_failing_item_lets_the_next_one_finish(fakes, image, tmp_path, capsys):
    from grefine_core.markers import hookimpl
    from grefine_core.testing import registered_plugin
    from grefine_core.types import StageOutput

    class Picky:
        @hookimpl
        def grefine_refine_stage1(self, image, context):
            if context.item_name == "cat":
                raise RuntimeError("not cats")
            return StageOutput(image)

    dog = image.parent / "dog.png"
    make_test_image(seed=3).save(dog)
    out = tmp_path / "o"
    with registered_plugin("picky", Picky()):
        code = main(["refine", str(image), str(dog), "--prompt", "a cat", "--out", str(out),
                     *FAKES, "--select", "stage1=picky"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert f"FAILED {image}: plugin 'picky' failed in slot 'stage1': RuntimeError: not cats" in (
        captured.err
    )
    assert "1 done, 0 already done (resumed), 1 failed" in captured.out
    assert (out / "dog.json").is_file() and not (out / "cat.json").exists()


def test_plugins_shows_disabled_and_failed_plugins_with_the_reason(
    fakes, capsys, monkeypatch, tmp_path
):
    import importlib.metadata as md

    from grefine_core import plugins as plugin_module

    real = plugin_module._entry_points()
    broken = md.EntryPoint("broken", "no_such_module_xyz.plugin", "grefine")
    monkeypatch.setattr(plugin_module, "_entry_points", lambda: [*real, broken])
    monkeypatch.setenv("GREFINE_DISABLE", "fake_stage2")
    assert main(["plugins", "--json", "--disable", "pasd"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert infos["pasd"]["status"] == infos["fake_stage2"]["status"] == "disabled"
    assert infos["pasd"]["reason"] == "disabled by configuration"
    assert infos["broken"]["status"] == "failed"
    assert "No module named 'no_such_module_xyz'" in infos["broken"]["reason"]
    assert infos["nltk"]["status"] == "loaded"
    assert main(["plugins"]) == 0
    assert "failed (ModuleNotFoundError: No module named 'no_such_module_xyz')" in (
        capsys.readouterr().out
    )


def test_parse_json_has_the_tree_and_a_disabled_parser_can_be_chosen(fakes, capsys, monkeypatch):
    monkeypatch.setenv("GREFINE_DISABLE", "fake_parser")
    assert main(["parse", "a red cat", "--parser", "fake_parser", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parser"] == "fake_parser" and "tree" in data and data["tree"] is None
    monkeypatch.setenv("GREFINE_SELECT__PARSER", "none")
    assert main(["parse", "a red cat"]) == 2
    assert "no parser to run: no plugin selected for this slot; select one of:" in (
        capsys.readouterr().err
    )


def test_a_plugin_adds_a_command_through_the_hook(capsys):
    from grefine_core.markers import hookimpl
    from grefine_core.testing import registered_plugin

    seen = []

    class Greeter:
        @hookimpl
        def grefine_register_commands(self):
            return {"greet": ("say hello", lambda argv: seen.append(argv) or 3)}

    with registered_plugin("greeter", Greeter()):
        assert main(["greet", "--loud", "x"]) == 3
        assert "greet" in main_help(capsys)
    assert seen == [["--loud", "x"]]


def test_a_command_name_clash_is_an_error_naming_both(capsys):
    from grefine_core.markers import hookimpl
    from grefine_core.testing import registered_plugin

    class Clash:
        @hookimpl
        def grefine_register_commands(self):
            return {"refine": ("mine", lambda argv: 0)}

    with registered_plugin("clash", Clash()):
        assert main(["presets"]) == 2
    assert "plugin 'clash' adds the command 'refine', which the built-in command already has" in (
        capsys.readouterr().err
    )


def main_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["--help"])
    return capsys.readouterr().out
