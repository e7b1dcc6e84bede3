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
5. Stopwords and lone punctuation are dropped from the phrase text (:mod:`grefine_parsing.text`).

A prompt without any noun gives one noun-less phrase per comma segment (its kept words,
``noun=None``); style tags (:mod:`grefine_nltk.style_tags`) are noun-less phrases of their own,
with the other words of their noun phrase.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from grefine_parsing.text import (
    Token,
    build_phrases,
    has_letter,
    is_stop,
    mark_kept,
    mask_weight_syntax,
)

from grefine_core.types import ParsedPrompt
from grefine_nltk.style_tags import DEFAULT_STYLE_TAGS, mark_style
from grefine_nltk.taggers import resolve_tagger, tag_text

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
#: Tokens that end a phrase: a leaf never joins a head noun across them.
PHRASE_BREAKS = frozenset({",", ";"})
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


def _nearest_np(node):
    """``(holder, index)`` of the innermost NP on ``node``'s right spine (through trailing PPs,
    VGs and NPs: ``NP(photo PP(of NP(teddy bear)))`` -> teddy bear), or ``None`` when ``node``
    ends in a word (it is the nearest noun phrase itself)."""
    from nltk import Tree

    found = None
    cur = node
    while len(cur):
        last = cur[-1]
        if not (isinstance(last, Tree) and last.label() in ("NP", "PP", "VG")):
            break
        if last.label() == "NP":
            found = (cur, len(cur) - 1)
        cur = last
    return found


def attach_participles(tree) -> None:
    """Stage 4: a participle phrase modifies the nearest noun before it.

    The cascade chunks ``NP VG+`` with the whole complex NP on its left, so in "a photo of a teddy
    bear riding a skateboard" the rider would be the photo. Each VG (in order) moves under the
    innermost NP on the right spine of what comes before it: the teddy bear; in "a cat sitting
    on a table next to a dog wearing a hat" the second VG goes under the dog. A comma before a VG
    keeps its attachment as it is. Works in place, bottom up.
    """
    from nltk import Tree

    for child in tree:
        if isinstance(child, Tree):
            attach_participles(child)
    if tree.label() != "NP" or len(tree) < 2:
        return
    host = tree[0]
    if not (isinstance(host, Tree) and host.label() == "NP"):
        return
    kept = [host]
    for child in list(tree)[1:]:
        is_vg = isinstance(child, Tree) and child.label() == "VG"
        prev = kept[-1]
        if not is_vg or not isinstance(prev, Tree):  # a PP, or a VG after a comma: as it is
            kept.append(child)
            continue
        target = _nearest_np(prev)
        if target is None:  # what comes before ends in its own noun: the VG hangs there
            kept.append(child)
            continue
        holder, index = target
        holder[index] = Tree("NP", [holder[index], child])
    if len(kept) == 1:
        tree[:] = list(host)
    else:
        tree[:] = kept


def chunk(tagged: list[tuple[str, str]]):
    """The constituency tree of a tagged prompt (the cascade stages)."""
    np_stage, clause_stage = _stages()
    tree = np_stage.parse(tagged)
    attach_prepositions(tree)
    tree = clause_stage.parse(tree)
    attach_participles(tree)
    return tree


def _lcp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _segments(tokens: list[Token]) -> list[int]:
    """Per token, the index of its comma-delimited segment: a comma always ends a phrase."""
    seg, out = 0, []
    for tok in tokens:
        if tok.text in PHRASE_BREAKS:
            seg += 1
        out.append(seg)
    return out


def _analyse(
    tree, tokens: list[Token], style: list[tuple[int, int]]
) -> tuple[list[int | None], list[int]]:
    """Eq. 4 and Algorithm 1 on the chunk tree.

    Parts: one per head noun (in prompt order), then one per style tag, then one per comma
    segment whose words have no head noun of their own segment. A leaf joins the nearest head in
    the tree within its comma segment (a comma always ends a phrase).

    :returns: ``(part_noun, part_parent)``: each part's head-noun token index (``None`` for the
        noun-less parts) and each part's parent part; also sets ``token.part`` for every token.
    """
    from nltk import Tree

    leaf_pos = tree.treepositions("leaves")
    segment = _segments(tokens)
    style_part = {i: k for k, (lo, hi) in enumerate(style) for i in range(lo, hi)}
    # Base NPs: NP nodes whose children are all leaves; their centre = last noun-like leaf.
    centre_of_np: dict[tuple[int, ...], int] = {}
    for i, pos in enumerate(leaf_pos):
        np_pos = pos[:-1]
        if len(np_pos) and tree[np_pos].label() == "NP" and tokens[i].nounlike:
            centre_of_np[np_pos] = i  # later nouns of the same NP overwrite: the last one wins
    centres = sorted(centre_of_np.values())
    part_index = {tok: k for k, tok in enumerate(centres)}
    n_style = len(style)
    # A base NP headed by a style tag ("a blue wallpaper", "a large watercolor"): its other words
    # belong to the tag's phrase, not to the nearest object noun.
    style_of_np: dict[tuple[int, ...], int] = {}
    for i, pos in enumerate(leaf_pos):
        np_pos = pos[:-1]
        if i in style_part and len(np_pos) and tree[np_pos].label() == "NP":
            style_of_np[np_pos] = style_part[i]
    orphan: dict[int, int] = {}  # comma segment -> its noun-less part
    centre_pos = [leaf_pos[c] for c in centres]
    for i, pos in enumerate(leaf_pos):
        if i in style_part:
            tokens[i].part = len(centres) + style_part[i]
            continue
        np_pos = pos[:-1]
        if np_pos in centre_of_np:  # inside a base NP with a head: joins that head
            tokens[i].part = part_index[centre_of_np[np_pos]]
            continue
        if np_pos in style_of_np:
            tokens[i].part = len(centres) + style_of_np[np_pos]
            continue
        best = None
        for k, cpos in enumerate(centre_pos):
            if segment[centres[k]] != segment[i]:
                continue
            d = len(pos) + len(cpos) - 2 * _lcp(pos, cpos)
            key = (d, abs(centres[k] - i), centres[k] > i)
            if best is None or key < best[0]:
                best = (key, k)
        if best is None:
            part = orphan.setdefault(segment[i], len(centres) + n_style + len(orphan))
        else:
            part = best[1]
        tokens[i].part = part

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

    n_parts = len(centres) + n_style + len(orphan)
    part_parent = list(range(n_parts))  # the noun-less parts are roots
    for k, cpos in enumerate(centre_pos):
        np_pos = cpos[:-1]
        for depth in range(len(np_pos) - 1, 0, -1):
            anc = np_pos[:depth]
            if tree[anc].label() in _PHRASE_NODES:
                h = head(anc)
                if h is not None and h != k:
                    part_parent[k] = h
                    break
    part_noun: list[int | None] = [*centres, *([None] * (n_style + len(orphan)))]
    # Phrases in prompt order: renumber the parts by their first token.
    first = [len(tokens)] * n_parts
    for i, tok in enumerate(tokens):
        first[tok.part] = min(first[tok.part], i)
    order = sorted(range(n_parts), key=lambda p: (first[p], p))
    new = {old: k for k, old in enumerate(order)}
    for tok in tokens:
        tok.part = new[tok.part]
    return [part_noun[p] for p in order], [new[part_parent[p]] for p in order]


def _parse_tokens(
    prompt: str, tokens: list[Token], tagger: str, style_tags: Sequence[str]
) -> ParsedPrompt:
    mark_kept(tokens, prompt)
    # Emoji and symbols carry no syntax: left out of the tree so that they do not split phrases.
    tokens = [tok for tok in tokens if tok.kept or tok.tag != "SYM"]
    style = mark_style(tokens, prompt, style_tags)
    in_style = {i for lo, hi in style for i in range(lo, hi)}
    for i, tok in enumerate(tokens):
        tok.nounlike = (
            tok.tag.startswith("NN")
            and has_letter(tok.text)
            and not is_stop(tok.text)
            and i not in in_style
        )
    info = {
        "tagger": tagger,
        "style_tags": [prompt[tokens[lo].start : tokens[hi - 1].end] for lo, hi in style],
    }
    if not tokens:  # RegexpParser prints a warning on empty input
        from nltk import Tree

        return ParsedPrompt(
            prompt=prompt, phrases=[], parser=PARSER_NAME, tree=Tree("S", []), info=info
        )
    tree = chunk([(tok.text, tok.tag) for tok in tokens])
    part_noun, part_parent = _analyse(tree, tokens, style)
    phrases = build_phrases(prompt, tokens, len(part_noun), part_parent, part_noun)
    return ParsedPrompt(prompt=prompt, phrases=phrases, parser=PARSER_NAME, tree=tree, info=info)


def parse_prompt(
    text: str, tagger: str = "auto", style_tags: Sequence[str] = DEFAULT_STYLE_TAGS
) -> ParsedPrompt:
    """Parse one prompt with the NLTK constituency-tree parser.

    :param text: the prompt (any length; non-English text and emoji are accepted).
    :param tagger: ``"auto"``, ``"perceptron"``, ``"pattern"`` or ``"spacy"``
        (see :mod:`grefine_nltk.taggers`).
    :param style_tags: words about style or quality (:mod:`grefine_nltk.style_tags`): they get no
        head noun and are never scored as objects.
    :returns: a :class:`~grefine_core.types.ParsedPrompt` (``parser="nltk"``, ``tree`` = the chunk
        tree with ``(word, tag)`` leaves, ``info`` = the tagger that ran and the style tags found).
    :raises ConfigError: for an unknown or unavailable tagger.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    concrete = resolve_tagger(tagger)
    tokens = tag_text(text, mask_weight_syntax(text), concrete)
    return _parse_tokens(text, tokens, concrete, style_tags)


def parse_prompts(
    texts: Iterable[str], tagger: str = "auto", style_tags: Sequence[str] = DEFAULT_STYLE_TAGS
) -> list[ParsedPrompt]:
    """Parse many prompts (same result as :func:`parse_prompt` on each)."""
    concrete = resolve_tagger(tagger)
    return [parse_prompt(t, concrete, style_tags) for t in texts]
