"""Both parsers over all 1,632 PartiPrompts: no error, structural invariants on every parse."""

from __future__ import annotations

import csv

import pytest
from grefine_parsing.text import check_parsed


@pytest.fixture(scope="module")
def parti_prompts(parti_prompts_path) -> list[str]:
    with open(parti_prompts_path, encoding="utf-8", newline="") as f:
        prompts = [row["Prompt"] for row in csv.DictReader(f, delimiter="\t")]
    assert len(prompts) == 1632
    return prompts


def _check_all(prompts, parses, name):
    assert len(parses) == len(prompts)
    with_noun = 0
    for prompt, parsed in zip(prompts, parses, strict=True):
        assert parsed.prompt == prompt and parsed.parser == name
        check_parsed(parsed)  # spans inside, forest, noun inside its span
        assert parsed.tree is not None
        with_noun += any(p.noun for p in parsed.phrases)
    # PartiPrompts are mostly noun phrases; a parser finding nouns in < 95 % would be broken
    assert with_noun / len(prompts) > 0.95


def test_nltk_parser_on_all_parti_prompts(parti_prompts):
    from grefine_nltk import parse_prompts

    _check_all(parti_prompts, parse_prompts(parti_prompts), "nltk")


def test_spacy_parser_on_all_parti_prompts(parti_prompts):
    from grefine_spacy import parse_prompts

    _check_all(parti_prompts, parse_prompts(parti_prompts), "spacy")


def test_batch_and_single_spacy_parses_agree(parti_prompts):
    from grefine_spacy import parse_prompt, parse_prompts

    sample = parti_prompts[::97]
    batch = parse_prompts(sample, batch_size=7)
    assert [b.to_dict() for b in batch] == [parse_prompt(p).to_dict() for p in sample]
