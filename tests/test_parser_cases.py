"""Hand-checked parses of both prompt parsers (docs/parsers.md).

Each case lists, per parser, the phrases as ``(text, head noun, parent index)``. Where the two
parsers differ, both readings were checked by hand to be defensible (mostly prepositional
attachment: the NLTK cascade attaches a PP to the noun right before it, the spaCy parser follows
the dependency parse).
"""

from __future__ import annotations

import pytest
from grefine_nltk import parse_prompt as parse_nltk
from grefine_parsing.text import check_parsed
from grefine_spacy import parse_prompt as parse_spacy

PARSERS = {"nltk": parse_nltk, "spacy": parse_spacy}

WORKED = "Mr. Beans wearing sun glasses with blue doctor suit and stripe tie"
WORKED_PHRASES = [
    ("Mr. Beans wearing", "Beans", 0),
    ("sun glasses", "glasses", 0),
    ("blue doctor suit", "suit", 1),
    ("stripe tie", "tie", 0),
]

# prompt -> {"both": phrases} or {"nltk": phrases, "spacy": phrases}
CASES: dict[str, dict[str, list[tuple[str, str | None, int]]]] = {
    WORKED: {"both": WORKED_PHRASES},
    # one noun
    "a cat": {"both": [("cat", "cat", 0)]},
    # no noun at all: one phrase, noun None
    "beautiful": {"both": [("beautiful", None, 0)]},
    "very beautiful and bright": {"both": [("beautiful bright", None, 0)]},
    # repeated nouns: two phrases, the second under the first (coordination)
    "a cat and another cat": {"both": [("cat", "cat", 0), ("cat", "cat", 0)]},
    # proper nouns; "in Paris" attaches low (NLTK) or to the photo (spaCy)
    "A photo of Barack Obama in Paris": {
        "nltk": [("photo", "photo", 0), ("Barack Obama", "Obama", 0), ("Paris", "Paris", 1)],
        "spacy": [("photo", "photo", 0), ("Barack Obama", "Obama", 0), ("Paris", "Paris", 0)],
    },
    # numbers: number words are spaCy stopwords, digits stay
    "two dogs": {"both": [("dogs", "dogs", 0)]},
    "three red apples and 2 green pears": {
        "both": [("red apples", "apples", 0), ("2 green pears", "pears", 0)]
    },
    # comma-separated tag list: independent roots, style tags without a noun (NLTK) vs
    # appositions of the first (spaCy, the released reading, where "1girl" is a number)
    "masterpiece, best quality, 1girl, red hair": {
        "nltk": [
            ("masterpiece", None, 0),
            ("best quality", None, 1),
            ("1girl", "1girl", 2),
            ("red hair", "hair", 3),
        ],
        "spacy": [
            ("masterpiece", "masterpiece", 0),
            ("best quality 1girl", "quality", 0),
            ("red hair", "hair", 0),
        ],
    },
    # weight syntax: markup is not part of any phrase text
    "(red:1.3) hat": {"both": [("red hat", "hat", 0)]},
    "a (red hat)1.2 on a cat": {"both": [("red hat", "hat", 0), ("cat", "cat", 0)]},
    # non-English: parsed as if English, well-formed
    "un chat noir sur la table": {"both": [("un chat noir sur la table", "table", 0)]},
    "一只猫坐在桌子上": {
        "nltk": [("一只猫坐在桌子上", "一只猫坐在桌子上", 0)],
        "spacy": [("一只猫坐在桌子上", None, 0)],
    },
    # emoji: never part of a phrase, never a noun
    "a cat 🐱 on a mat 😀": {"both": [("cat", "cat", 0), ("mat", "mat", 0)]},
    "a cat on a mat": {"both": [("cat", "cat", 0), ("mat", "mat", 0)]},
    "portrait of an old fisherman with a grey beard, dramatic lighting, oil painting": {
        "nltk": [
            ("portrait", "portrait", 0),
            ("old fisherman", "fisherman", 0),
            ("grey beard", "beard", 1),
            ("dramatic lighting", None, 3),
            ("oil painting", None, 4),
        ],
        "spacy": [
            ("portrait", "portrait", 0),
            ("old fisherman", "fisherman", 0),
            ("grey beard", "beard", 1),
            ("dramatic lighting", "lighting", 2),
            ("oil painting", "painting", 3),
        ],
    },
    # the verb joins the object (nearest noun in the tree) vs the subject's part (spaCy cut)
    "a man is riding a horse": {
        "nltk": [("man", "man", 0), ("riding horse", "horse", 0)],
        "spacy": [("man riding", "man", 0), ("horse", "horse", 0)],
    },
    # "front" is a spaCy stopword: no phrase for it
    "the front of the house": {"both": [("house", "house", 0)]},
    "the of and": {"both": []},
    "": {"both": []},
    "a small wooden cabin in a snowy forest, smoke rising from the chimney, watercolor": {
        "nltk": [
            ("small wooden cabin", "cabin", 0),
            ("snowy forest", "forest", 0),
            ("smoke rising", "smoke", 2),
            ("chimney", "chimney", 2),
            ("watercolor", None, 4),
        ],
        "spacy": [
            ("small wooden cabin", "cabin", 0),
            ("snowy forest smoke rising", "smoke", 0),
            ("chimney", "chimney", 1),
            ("watercolor", "watercolor", 2),
        ],
    },
    "A white horse and a black horse grazing in a green field": {
        "nltk": [
            ("white horse", "horse", 0),
            ("black horse grazing", "horse", 0),
            ("green field", "field", 1),
        ],
        "spacy": [
            ("white horse", "horse", 0),
            ("black horse grazing", "horse", 0),
            ("green field", "field", 0),
        ],
    },
    "an astronaut riding a horse on the moon": {
        "nltk": [("astronaut riding", "astronaut", 0), ("horse", "horse", 0), ("moon", "moon", 1)],
        "spacy": [("astronaut riding", "astronaut", 0), ("horse", "horse", 0), ("moon", "moon", 0)],
    },
    # a participle modifies the nearest noun before it (NLTK), not the photo
    "a photo of a teddy bear riding a skateboard": {
        "nltk": [
            ("photo", "photo", 0),
            ("teddy bear", "bear", 0),
            ("riding skateboard", "skateboard", 1),
        ],
        "spacy": [
            ("photo", "photo", 0),
            ("teddy bear riding", "bear", 0),
            ("skateboard", "skateboard", 1),
        ],
    },
    # style tags: no head noun, never joined to an object across a comma or without one
    "a wooden table, masterpiece, 8k, highly detailed": {
        "nltk": [
            ("wooden table", "table", 0),
            ("masterpiece", None, 1),
            ("8k", None, 2),
            ("highly detailed", None, 3),
        ],
    },
    "a wooden table masterpiece": {
        "nltk": [("wooden table", "table", 0), ("masterpiece", None, 1)]
    },
    # a comma always ends a phrase: the trailing adjective gets a noun-less phrase of its own
    "a red barn, sunny": {"nltk": [("red barn", "barn", 0), ("sunny", None, 1)]},
    # coordination of three: every conjunct under the first
    "a red ball and a green box and a yellow tree": {
        "nltk": [("red ball", "ball", 0), ("green box", "box", 0), ("yellow tree", "tree", 0)],
    },
    # each participle under the nearest noun before it
    "a photo of a cat sitting on a table next to a dog wearing a hat": {
        "nltk": [
            ("photo", "photo", 0),
            ("cat sitting", "cat", 0),
            ("table", "table", 1),
            ("dog", "dog", 2),
            ("wearing hat", "hat", 3),
        ],
    },
    # a style tag keeps its own modifiers; they never move onto an object noun
    "a large watercolor of a boat": {"nltk": [("large watercolor", None, 0), ("boat", "boat", 1)]},
    "a beautiful oil painting of a cat": {
        "nltk": [("beautiful oil painting", None, 0), ("cat", "cat", 1)]
    },
    "a blue wallpaper with a white cat": {
        "nltk": [("blue wallpaper", "wallpaper", 0), ("white cat", "cat", 0)]
    },
    # hyphenated words: NLTK keeps "t-shirt" whole, spaCy's head noun is "shirt"
    "a t-shirt with a dog on it": {
        "nltk": [("t-shirt", "t-shirt", 0), ("dog", "dog", 0)],
        "spacy": [("t-shirt", "shirt", 0), ("dog", "dog", 0)],
    },
}


def _expected(case: dict, parser: str) -> list[tuple[str, str | None, int]]:
    return case.get("both", case.get(parser))


@pytest.mark.parametrize(
    ("parser", "prompt"),
    [(p, q) for q in CASES for p in sorted(PARSERS) if _expected(CASES[q], p) is not None],
)
def test_hand_checked_parse(parser, prompt):
    parsed = PARSERS[parser](prompt)
    got = [(p.text, p.noun, p.parent) for p in parsed.phrases]
    assert got == _expected(CASES[prompt], parser)
    assert parsed.parser == parser
    check_parsed(parsed)


def test_worked_example_of_the_released_code_with_spacy():
    parsed = parse_spacy(WORKED)
    texts = [p.text for p in parsed.phrases]
    assert texts == ["Mr. Beans wearing", "sun glasses", "blue doctor suit", "stripe tie"]
    assert [p.noun for p in parsed.phrases] == ["Beans", "glasses", "suit", "tie"]
    sun = parsed.phrases[texts.index("sun glasses")]
    assert parsed.phrases[sun.parent].text == "Mr. Beans wearing"


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_spans_point_into_the_prompt(parser):
    parsed = PARSERS[parser](WORKED)
    spans = [p.span for p in parsed.phrases]
    assert spans == [(0, 17), (18, 29), (35, 51), (56, 66)]
    assert [WORKED[s:e] for s, e in spans] == [p.text for p in parsed.phrases]
    assert [WORKED[s:e] for s, e in (p.noun_span for p in parsed.phrases)] == [
        "Beans",
        "glasses",
        "suit",
        "tie",
    ]


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_repeated_nouns_are_told_apart_by_span(parser):
    parsed = PARSERS[parser]("a cat and another cat")
    assert [p.noun_span for p in parsed.phrases] == [(2, 5), (18, 21)]


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_weight_markup_span_covers_the_words(parser):
    prompt = "(red:1.3) hat"
    (phrase,) = PARSERS[parser](prompt).phrases
    assert phrase.span == (1, 13) and prompt[slice(*phrase.noun_span)] == "hat"


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_500_word_prompt(parser):
    prompt = "a red cat on a wooden table, " * 80  # 560 words
    assert len(prompt.split()) == 560
    parsed = PARSERS[parser](prompt)
    check_parsed(parsed)
    assert [p.text for p in parsed.phrases] == ["red cat", "wooden table"] * 80
    assert [p.noun for p in parsed.phrases] == ["cat", "table"] * 80
    # each table hangs under the cat before it; cats are roots (NLTK) or appositions of the
    # first cat (spaCy)
    tables = [p.parent for p in parsed.phrases[1::2]]
    assert tables == list(range(0, 160, 2))
    cats = [p.parent for p in parsed.phrases[0::2]]
    assert cats == (list(range(0, 160, 2)) if parser == "nltk" else [0] * 80)
    assert parsed.phrases[-1].span[1] == len(prompt.rstrip(", "))


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_multi_sentence_prompt(parser):
    parsed = PARSERS[parser]("A cat. A dog.")
    assert [(p.text, p.noun, p.parent) for p in parsed.phrases] == [
        ("cat", "cat", 0),
        ("dog", "dog", 1),
    ]


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_non_string_prompt_is_refused(parser):
    with pytest.raises(TypeError, match="prompt must be a str"):
        PARSERS[parser](123)


def test_style_tags_are_configurable_and_recorded():
    default = parse_nltk("a red barn, oil painting")
    assert [(p.text, p.noun) for p in default.phrases] == [
        ("red barn", "barn"),
        ("oil painting", None),
    ]
    assert default.info["style_tags"] == ["oil painting"]
    plain = parse_nltk("a red barn, oil painting", style_tags=())
    assert [(p.text, p.noun) for p in plain.phrases] == [
        ("red barn", "barn"),
        ("oil painting", "painting"),
    ]
    custom = parse_nltk("a red barn, moody", style_tags=["MOODY"])
    assert custom.info["style_tags"] == ["moody"] and custom.phrases[1].noun is None


def test_the_parse_records_which_tagger_and_model_ran():
    assert parse_nltk("a cat").info["tagger"] in ("perceptron", "pattern")
    assert parse_nltk("a cat", tagger="pattern").info["tagger"] == "pattern"
    assert parse_nltk("a cat", tagger="pattern").to_dict()["info"]["tagger"] == "pattern"
    assert parse_spacy("a cat").info["model"].startswith("en_core_web_sm")


def test_style_tags_are_never_scored_as_objects():
    """A style tag has no head noun, so AQ skips it: it can never be a missing object."""
    from grefine_quality.aq_logic import scored_indices

    parsed = parse_nltk("a cat, masterpiece, 8k, oil painting, trending on artstation")
    scored = [parsed.phrases[i].text for i in scored_indices(parsed.phrases)]
    assert scored == ["cat"]
