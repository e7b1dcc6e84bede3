"""The method's promise on planted-truth scenes (docs/behaviour.md): the real PQ, AQ, fuser and
stage code on the oracle backbone refine the bad regions and leave good regions and good images
alone. Proves the logic, not image quality (the stage models are tiny random-weight ones).

The mutation tests at the end re-compile one function with one comparison or argument order wired
backwards and check that the scene checks then fail: the checks can catch such mistakes."""

from __future__ import annotations

import inspect
import json
import re
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from grefine_clip.oracle_scenes import BALL, BOX, NOISY_QUADRANT, SCENES
from scene_checks import (
    CHECKS,
    check_missing_tree,
    check_noisy,
    check_wrong_colour,
    scene_failures,
)

from grefine_core import GRefine, load_config


def pipeline(**overrides):
    return GRefine(load_config(preset="oracle", overrides=overrides, environ={}))


@pytest.fixture(scope="module")
def oracle_pipe():
    return pipeline()


@pytest.fixture(scope="module")
def assessed(oracle_pipe):
    return {n: oracle_pipe.assess(s.image(), s.prompt, name=n) for n, s in SCENES.items()}


@pytest.mark.parametrize("name", list(CHECKS))
def test_scene_outcome(assessed, name):
    assert CHECKS[name](assessed[name]) == []


def test_the_parse_pins_nltk_and_its_attachment(assessed):
    parsed = assessed["missing_tree"].parsed
    assert parsed.parser == "nltk"
    texts = [p.text for p in parsed.phrases]
    assert texts == ["red ball", "green box", "yellow tree"]
    assert [p.parent for p in parsed.phrases] == [0, 0, 0]  # coordinated: children of the first


def test_clean_scene_comes_back_identical_and_no_stage_runs(oracle_pipe):
    scene = SCENES["clean"]
    image = scene.image()
    r = oracle_pipe.refine(image, scene.prompt, name="clean")
    assert np.array_equal(np.asarray(r.image), np.asarray(image))
    for slot in ("stage1", "stage2"):
        rec = r.stage(slot)
        assert rec.status == "skipped" and rec.reason.startswith("high-quality image")
    assert not r.refined


def test_noisy_scene_is_refined_only_inside_the_mask(oracle_pipe):
    scene = SCENES["noisy"]
    image = scene.image()
    pipe = pipeline(disable=["pasd"])
    r = pipe.refine(image, scene.prompt, name="noisy")
    rec = r.stage("stage1")
    assert rec.status == "ran" and rec.info["path"] == "crop"  # small mask: crop-to-mask
    out, inp = np.asarray(r.image), np.asarray(image)
    outside = ~r.mask.binary
    assert np.array_equal(out[outside], inp[outside])
    assert not np.array_equal(out[r.mask.binary], inp[r.mask.binary])  # and it did refine there
    x0, y0, x1, y1 = BALL.box()
    assert np.array_equal(out[y0:y1, x0:x1], inp[y0:y1, x0:x1])  # the objects are untouched


def test_stage2_runs_globally_on_an_image_that_is_not_high_quality(oracle_pipe):
    scene = SCENES["wrong_colour"]
    r = oracle_pipe.refine(scene.image(), scene.prompt, name="wrong_colour")
    assert r.stage("stage1").status == "ran" and r.stage("stage2").status == "ran"
    assert "(blue box)1.1" in r.stage("stage1").info["emphasised_prompt"]


def test_report_carries_scores_defects_and_mask_fraction(oracle_pipe, tmp_path):
    scene = SCENES["wrong_colour"]
    r = oracle_pipe.assess(scene.image(), scene.prompt, name="wrong_colour")
    paths = r.save(tmp_path)
    report = json.loads(paths["json"].read_text())
    assert report["perceptual"]["score"] >= 0.95 and report["alignment"]["score"] < 0.95
    assert report["alignment"]["defects"] == [
        {"text": "blue box", "noun": "box", "kind": "attribute"}
    ]
    assert 0 < report["mask"]["fraction"] < 0.3 and report["high_quality"] is False
    assert "Planted truth" in report["notice"]
    trace = {t["slot"]: t for t in report["trace"]}
    assert trace["perceptual"]["info"]["backbone"] == "oracle"


# ---------------------------------------------------------------- ablations (Table 8 on scenes)


def test_without_aq_only_perception_counts():
    pipe = pipeline(disable=["clip_aq"])
    for name in ("clean", "wrong_colour", "missing_tree"):
        scene = SCENES[name]
        r = pipe.refine(scene.image(), scene.prompt, name=name)
        assert r.high_quality, name
        assert np.array_equal(np.asarray(r.image), np.asarray(scene.image())), name
    full = pipeline().assess(SCENES["noisy"].image(), SCENES["noisy"].prompt)
    no_aq = pipe.assess(SCENES["noisy"].image(), SCENES["noisy"].prompt)
    assert np.array_equal(no_aq.mask.binary, full.mask.binary)
    assert check_noisy(no_aq) == []


def test_without_pq_only_alignment_counts():
    pipe = pipeline(disable=["clip_pq"])
    noisy = SCENES["noisy"]
    r = pipe.refine(noisy.image(), noisy.prompt, name="noisy")
    assert r.high_quality and np.array_equal(np.asarray(r.image), np.asarray(noisy.image()))
    assert (
        check_wrong_colour(
            pipe.assess(SCENES["wrong_colour"].image(), SCENES["wrong_colour"].prompt)
        )
        == []
    )
    assert (
        check_missing_tree(
            pipe.assess(SCENES["missing_tree"].image(), SCENES["missing_tree"].prompt)
        )
        == []
    )


def test_cli_assess_and_refine_on_a_scene(tmp_path, capsys):
    from grefine_core.app.cli import main

    scene = SCENES["wrong_colour"]
    path = tmp_path / "wrong_colour.png"
    scene.image().save(path)
    argv = [str(path), "--prompt", scene.prompt, "--preset", "oracle", "--quiet"]
    assert main(["assess", *argv, "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "wrong_colour.json").read_text())
    assert [d["text"] for d in report["alignment"]["defects"]] == ["blue box"]
    assert main(["refine", *argv, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "wrong_colour_maps" / "overview.png").is_file()
    clean = tmp_path / "clean.png"
    SCENES["clean"].image().save(clean)
    assert (
        main(
            [
                "refine",
                str(clean),
                "--prompt",
                SCENES["clean"].prompt,
                "--preset",
                "oracle",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "Planted truth" in err
    from PIL import Image

    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "c" / "clean.png")), np.asarray(SCENES["clean"].image())
    )


def test_cli_oracle_on_a_photo_says_it_means_nothing_and_runs(tmp_path):
    import subprocess
    import sys

    photo = Path(__file__).resolve().parents[1] / "examples" / "images" / "cat_table.png"
    out = tmp_path / "o"
    cmd = [
        sys.executable,
        "-m",
        "grefine_core.app.cli",
        "assess",
        str(photo),
        "--prompt",
        "a red cat",
    ]
    proc = subprocess.run(
        [*cmd, "--preset", "oracle", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "not a planted-truth scene" in proc.stderr and "means anything" in proc.stderr
    report = json.loads((out / "cat_table.json").read_text())
    assert "nothing the oracle preset reports" in report["trace"][0]["info"]["warning"]


# ---------------------------------------------------------------- mutation checks


@contextmanager
def mutated(monkeypatch, owner, name: str, swaps: dict[str, str], *, where=()):
    """Re-compile ``owner.name`` with every key of ``swaps`` replaced by its value (all at once,
    so ``{a: b, b: a}`` exchanges two pieces) and patch it into ``owner`` and the ``where``
    modules that imported it by name."""
    func = getattr(owner, name)
    source = textwrap.dedent(inspect.getsource(func))
    for old in swaps:
        assert old in source, f"mutation target {old!r} not found in {name}"
    pattern = "|".join(re.escape(k) for k in sorted(swaps, key=len, reverse=True))
    source = re.sub(pattern, lambda m: swaps[m.group(0)], source)
    namespace = dict(func.__globals__)
    exec(compile(source, inspect.getsourcefile(func), "exec"), namespace)  # noqa: S102
    for target in (owner, *where):
        monkeypatch.setattr(target, name, namespace[name])
    yield


def failing(pipe=None) -> dict[str, list[str]]:
    result = scene_failures(pipe or pipeline())
    return {k: v for k, v in result.items() if v}


def test_unmutated_scenes_pass():
    assert failing() == {}


@pytest.mark.parametrize(
    ("swaps", "what"),
    [
        ({"scores[ph],": "scores[nn_],", "scores[nn_],": "scores[ph],"}, "scores"),
        ({"maps[ph] if ph": "maps[nn_] if nn_", "maps[nn_] if nn_": "maps[ph] if ph"}, "maps"),
    ],
)
def test_swapping_phrase_and_noun_is_caught(monkeypatch, swaps, what):
    import grefine_quality.aq as aq

    with mutated(monkeypatch, aq.AlignmentQuality, "from_tokens", swaps):
        assert failing(), f"swapping phrase and noun {what} went unnoticed"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("if a_pns[pos] < a_bound:", "if a_pns[pos] > a_bound:"),  # noun-missing test inverted
        ("elif a_phs[pos] < a_pns[pos]:", "elif a_phs[pos] > a_pns[pos]:"),  # attribute inverted
        (  # a missing noun drawn on its own (empty) map instead of its parent's
            "used.append(m_pns[slot_of[anc]] if anc is not None else m_pns[pos])",
            "used.append(m_pns[pos])",
        ),
    ],
)
def test_defect_rule_mutations_are_caught(monkeypatch, old, new):
    import grefine_quality.aq as aq
    import grefine_quality.aq_logic as logic

    with mutated(monkeypatch, logic, "resolve_alignment", {old: new}, where=(aq,)):
        assert failing(), f"{old!r} -> {new!r} went unnoticed"


def test_fuser_sign_mutation_is_caught(monkeypatch):
    import grefine_masks.ops as ops

    with mutated(monkeypatch, ops, "paper_quality", {"q += 1.0 - p_map": "q += p_map"}):
        assert failing()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("perceptual.score >= bounds.p_bound", "perceptual.score < bounds.p_bound"),
        ("perceptual.score >= bounds.p_bound and ", ""),  # p ignored: the noisy scene kept
        ("a >= bounds.a_bound and not defects", "a >= bounds.a_bound"),  # defects ignored
    ],
)
def test_hq_rule_mutations_are_caught(monkeypatch, old, new):
    from grefine_core.pipeline import GRefine as Pipeline

    # a_bound 0.3: the defect scenes' a (about 0.34 and 0.55) pass it, so only their defects
    # keep them from counting as high quality.
    assert failing(pipeline(hq_skip={"a_bound": 0.3})) == {}
    with mutated(monkeypatch, Pipeline, "_high_quality_reason", {old: new}):
        assert failing(pipeline(hq_skip={"a_bound": 0.3})), f"{old!r} -> {new!r} went unnoticed"


def test_the_ball_and_box_are_where_the_checks_expect():
    """Guards the checks themselves: the planted boxes are the drawn ones."""
    from grefine_clip.oracle_scene import read_scene

    found = {o.noun: o.box for o in read_scene(SCENES["clean"].image()).objects}
    assert found == {"ball": BALL.box(), "box": BOX.box()}
    assert NOISY_QUADRANT == (128, 128, 256, 256)


def test_a_very_long_prompt_is_capped_with_a_warning(caplog):
    prompt = ", ".join(f"a red ball number {i}" for i in range(60))
    pipe = pipeline(plugins={"aq": {"max_phrases": 5}})
    with caplog.at_level("WARNING", logger="grefine.quality"):
        r = pipe.assess(SCENES["clean"].image(), prompt)
    assert len([p for p in r.alignment.phrases]) == 5
    assert r.alignment.info["phrases_dropped"] > 50
    assert "only the first 5 are scored" in caplog.text


def test_a_prompt_past_clips_window_is_warned_about(caplog):
    import torch
    from grefine_clip import SurgeryCLIP
    from grefine_nltk import parse_prompt
    from grefine_quality import AlignmentQuality

    torch.manual_seed(0)
    aq = AlignmentQuality(SurgeryCLIP.tiny())
    prompt = " ".join(["a red cat on a wooden table"] * 20)
    with caplog.at_level("WARNING", logger="grefine.quality"):
        r = aq(SCENES["clean"].image(), parse_prompt(prompt))
    assert r.info["prompt_tokens"] > 75
    assert "CLIP reads 77" in caplog.text
