"""The example parser's own tests: the parse, then the whole pipeline and the CLI with fakes in
every other slot (grefine_core.testing)."""

import json

import pytest

from grefine_core.testing import fake_config, make_test_image, pipeline_context, registered_fakes

plugin = pytest.importorskip("grefine_example_parser.plugin")


def test_one_phrase_per_part_with_spans_in_the_prompt():
    prompt = "a red cat,  a wooden table, 4k"
    parsed = plugin.grefine_parse_prompt(prompt=prompt, context=pipeline_context())
    assert [p.text for p in parsed.phrases] == ["a red cat", "a wooden table", "4k"]
    assert [p.noun for p in parsed.phrases] == ["cat", "table", None]
    for p in parsed.phrases:
        assert prompt[p.span[0] : p.span[1]] == p.text
        if p.noun:
            assert prompt[p.noun_span[0] : p.noun_span[1]] == p.noun


def test_it_fills_the_parser_slot_of_a_pipeline():
    from grefine_core import GRefine

    cfg = fake_config(select={"parser": "example_commas"})
    with registered_fakes(example_commas=plugin):
        result = GRefine(cfg).refine(make_test_image(), "a cat, a missing hat")
    assert result.stage("parser").plugin == "example_commas"
    assert [p.noun for p in result.parsed.phrases] == ["cat", "hat"]


def test_the_cli_reads_its_settings(capsys):
    from grefine_core.app.cli import main
    from grefine_core.testing import fake_select_args

    args = ["parse", "a cat; a dog", "--json", "--set", "plugins.example_commas.separator=;"]
    with registered_fakes(example_commas=plugin):
        assert main([*args, *fake_select_args(parser="example_commas")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["noun"] for p in data["phrases"]] == ["cat", "dog"]
