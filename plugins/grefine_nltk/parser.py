"""The NLTK prompt parser (the paper's default, Eq. 4 and Algorithm 1 on a constituency tree).

Steps for one prompt:

1. Blank weight markup (``(red:1.3)``), tokenize with offsets, POS-tag (:mod:`.taggers`).
2. Build a constituency tree with a cascade (:data:`GRAMMAR`): an ``nltk.RegexpParser`` stage
   for base noun phrases; prepositional phrases attached to the noun phrase on their left, right
   to left (:func:`attach_prepositions`); a second ``RegexpParser`` for the remaining PPs,
   participle phrases attached to the NP before them, coordination, finite verb phrases and
   clauses.
3. Phrase centres (Eq. 4, ``pns = Tree.Noun``): the head of every base NP, i.e. its last noun that
   is not a stopword and holds a letter. Every other leaf joins the centre nearest to it in the
   tree (edge count; ties go to the centre nearest in the word order, then the left one).
4. Parent (Algorithm 1): walking up from a phrase's base NP, the first NP or CLAUSE node whose
   head belongs to another phrase. The head of a complex NP / clause is the head of its first
   NP / clause child, so an NP's modifiers (PPs, participles, conjuncts, objects of its verb) hang
   under it. The chain only climbs, so the result is always a forest.
5. Stopwords and lone punctuation are dropped from the phrase text (:mod:`grefine_nltk.text`).

A prompt without any noun gives one phrase (all its kept words, ``noun=None``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from grefine_core.types import ParsedPrompt
from grefine_nltk.taggers import resolve_tagger, tag_text
from grefine_nltk.text import (
    Token,
    build_phrases,
    has_letter,
    is_stop,
    mark_kept,
    mask_weight_syntax,
)

PARSER_NAME = "nltk"

#: Stage 1 of the cascade: base noun phrases (a noun with its determiners and modifiers).
NP_GRAMMAR = r"""
NP: {<DT|PDT|PRP\$|WP\$>+<RB.?|JJ.*|VBN|VBG|CD>*<JJ.*|VBN|CD|NN.*|FW|HYPH|POS>*<NN.*>}
    {<RB.?|JJ.*|VBN|CD|NN.*|FW|HYPH|POS>*<NN.*>}
"""
#: Stage 3 of the cascade (after :func:`attach_prepositions`): the remaining PPs, participle
#: phrases attached to the NP before them, coordination, finite verb phrases and clauses.
CLAUSE_GRAMMAR = r"""
PP: {<RB.?|JJ.*>?<IN|TO><NP>}
VG: {<RB.?>*<VBG|VBN><RP|RB.?>*<NP|PP|JJ.*>*}
NP: {<NP><,>?<VG>+<PP>*}
    {<NP><PP>+}
NP: {<NP>(<,>?<CC><NP>|<,><NP>)*<,>?<CC><NP>}
VP: {<RB.?|MD>*<VB|VBD|VBP|VBZ|MD><RB.?|VB.*|RP>*<NP|PP|JJ.*|VG>*}
CLAUSE: {<NP><VP>}
"""
#: The whole cascade, for display: stage 1, prepositional attachment, stage 3.
GRAMMAR = (
    NP_GRAMMAR
    + "# PP attachment: NP (JJ|RB)? IN|TO NP -> NP(NP PP), right to left\n"
    + CLAUSE_GRAMMAR
)

_PHRASE_NODES = ("NP", "CLAUSE")
_PREPS = ("IN", "TO")


@lru_cache(maxsize=1)
def _stages():
    from nltk import RegexpParser

    return RegexpParser(NP_GRAMMAR), RegexpParser(CLAUSE_GRAMMAR)


def attach_prepositions(tree) -> None:
    """Stage 2: attach each ``IN|TO NP`` to the NP right before it, from right to left.

    ``NP1 in NP2 of NP3`` becomes ``NP(NP1 PP(in NP(NP2 PP(of NP3))))``: every prepositional
    phrase hangs under the nearest noun phrase on its left (low attachment), which is how most
    prompt modifiers read ("a cloud in the shape of a teacup"). An adverb/adjective may sit
    before the preposition ("next to", "right above"). Works in place on the top level.
    """
    from nltk import Tree

    def is_np(x) -> bool:
        return isinstance(x, Tree) and x.label() == "NP"

    def leaf_tag(x) -> str:
        return x[1] if isinstance(x, tuple) else ""

    kids = list(tree)
    i = len(kids) - 1
    while i >= 2:
        host = None
        if is_np(kids[i]) and leaf_tag(kids[i - 1]) in _PREPS:
            if is_np(kids[i - 2]):
                host = i - 2
            elif i >= 3 and leaf_tag(kids[i - 2]).startswith(("JJ", "RB")) and is_np(kids[i - 3]):
                host = i - 3
        if host is None:
            i -= 1
            continue
        merged = Tree("NP", [kids[host], Tree("PP", kids[host + 1 : i + 1])])
        kids[host : i + 1] = [merged]
        i = host
    tree[:] = kids


def chunk(tagged: list[tuple[str, str]]):
    """The constituency tree of a tagged prompt (the three cascade stages)."""
    np_stage, clause_stage = _stages()
    tree = np_stage.parse(tagged)
    attach_prepositions(tree)
    return clause_stage.parse(tree)


def _lcp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _analyse(tree, tokens: list[Token]) -> tuple[list[int], list[int]]:
    """Eq. 4 and Algorithm 1 on the chunk tree.

    :returns: ``(centres, part_parent)``: the token index of each part's head noun (in prompt
        order) and each part's parent part; also sets ``token.part`` for every token.
    """
    from nltk import Tree

    leaf_pos = tree.treepositions("leaves")
    # Base NPs: NP nodes whose children are all leaves; their centre = last noun-like leaf.
    centre_of_np: dict[tuple[int, ...], int] = {}
    part_of_leaf: dict[int, int] = {}
    centres: list[int] = []
    for i, pos in enumerate(leaf_pos):
        np_pos = pos[:-1]
        if len(np_pos) and tree[np_pos].label() == "NP" and tokens[i].nounlike:
            centre_of_np[np_pos] = i  # later nouns of the same NP overwrite: the last one wins
    centres = sorted(centre_of_np.values())
    part_index = {tok: k for k, tok in enumerate(centres)}
    if not centres:
        for tok in tokens:
            tok.part = 0
        return [], [0]

    centre_pos = [leaf_pos[c] for c in centres]
    for i, pos in enumerate(leaf_pos):
        np_pos = pos[:-1]
        if np_pos in centre_of_np:  # inside a base NP with a head: joins that head
            part_of_leaf[i] = part_index[centre_of_np[np_pos]]
            continue
        best = None
        for k, cpos in enumerate(centre_pos):
            d = len(pos) + len(cpos) - 2 * _lcp(pos, cpos)
            key = (d, abs(centres[k] - i), centres[k] > i)
            if best is None or key < best[0]:
                best = (key, k)
        part_of_leaf[i] = best[1]
    for i, tok in enumerate(tokens):
        tok.part = part_of_leaf[i]

    head_cache: dict[tuple[int, ...], int | None] = {}

    def head(pos: tuple[int, ...]) -> int | None:
        """Part heading the NP/CLAUSE node at ``pos`` (None when it has no noun head)."""
        if pos in head_cache:
            return head_cache[pos]
        if pos in centre_of_np:
            result = part_index[centre_of_np[pos]]
        else:
            result = None
            node = tree[pos]
            for j, child in enumerate(node):
                if isinstance(child, Tree) and child.label() in _PHRASE_NODES:
                    result = head(pos + (j,))
                    if result is not None:
                        break
        head_cache[pos] = result
        return result

    part_parent = list(range(len(centres)))
    for k, cpos in enumerate(centre_pos):
        np_pos = cpos[:-1]
        for depth in range(len(np_pos) - 1, 0, -1):
            anc = np_pos[:depth]
            if tree[anc].label() in _PHRASE_NODES:
                h = head(anc)
                if h is not None and h != k:
                    part_parent[k] = h
                    break
    return centres, part_parent


def _parse_tokens(prompt: str, tokens: list[Token], tagger: str) -> ParsedPrompt:
    mark_kept(tokens, prompt)
    for tok in tokens:
        tok.nounlike = tok.tag.startswith("NN") and has_letter(tok.text) and not is_stop(tok.text)
    # Emoji and symbols carry no syntax: left out of the tree so that they do not split phrases.
    tokens = [tok for tok in tokens if tok.kept or tok.tag != "SYM"]
    if not tokens:  # RegexpParser prints a warning on empty input
        from nltk import Tree

        return ParsedPrompt(prompt=prompt, phrases=[], parser=PARSER_NAME, tree=Tree("S", []))
    tree = chunk([(tok.text, tok.tag) for tok in tokens])
    centres, part_parent = _analyse(tree, tokens)
    n_parts = max(len(centres), 1)
    part_noun: list[int | None] = list(centres) if centres else [None]
    phrases = build_phrases(prompt, tokens, n_parts, part_parent, part_noun)
    return ParsedPrompt(prompt=prompt, phrases=phrases, parser=PARSER_NAME, tree=tree)


def parse_prompt(text: str, tagger: str = "auto") -> ParsedPrompt:
    """Parse one prompt with the NLTK constituency-tree parser.

    :param text: the prompt (any length; non-English text and emoji are accepted).
    :param tagger: ``"auto"``, ``"perceptron"``, ``"pattern"`` or ``"spacy"``
        (see :mod:`grefine_nltk.taggers`).
    :returns: a :class:`~grefine_core.types.ParsedPrompt` (``parser="nltk"``, ``tree`` = the chunk
        tree with ``(word, tag)`` leaves).
    :raises ConfigError: for an unknown or unavailable tagger.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    concrete = resolve_tagger(tagger)
    tokens = tag_text(text, mask_weight_syntax(text), concrete)
    return _parse_tokens(text, tokens, concrete)


def parse_prompts(texts: Iterable[str], tagger: str = "auto") -> list[ParsedPrompt]:
    """Parse many prompts (same result as :func:`parse_prompt` on each)."""
    concrete = resolve_tagger(tagger)
    return [parse_prompt(t, concrete) for t in texts]
