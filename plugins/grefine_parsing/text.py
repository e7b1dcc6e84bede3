"""Text helpers shared by the NLTK and spaCy parsers.

Both parsers work on *tokens with character offsets* and end in the same steps: mask prompt-weight
markup, drop stopwords and lone punctuation, join the kept tokens into phrase text, and turn
per-part parent links into a forest of :class:`~grefine_core.types.Phrase`. Keeping these steps in
one place makes the two parsers' outputs comparable token for token.

No spaCy or NLTK import happens here: the stopword list is spaCy's English list, vendored as
``stop_words_en.txt`` (MIT, Explosion AI; the file says which spaCy version), so the NLTK parser
works without spaCy installed (``tests/test_parser_stop_words.py`` checks it equals spaCy's).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from grefine_core.types import ParsedPrompt, Phrase


@dataclass
class Token:
    """One token of a prompt.

    :ivar start: character offset of the token in the prompt.
    :ivar end: end offset (``prompt[start:end]`` is the token).
    :ivar text: the token text (from the prompt, not from the masked text).
    :ivar tag: its Penn-Treebank tag.
    :ivar part: index of the part (phrase candidate) it belongs to, filled by the parser.
    :ivar kept: whether it survives the stopword/punctuation filter.
    :ivar nounlike: whether it may be a head noun (a noun tag, a letter in it, not a stopword).
    """

    start: int
    end: int
    text: str
    tag: str
    part: int = -1
    kept: bool = True
    nounlike: bool = False


#: The vendored list: spaCy's English stop words, one per line, ``#`` comment lines.
STOP_WORDS_FILE = "stop_words_en.txt"


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """spaCy's English stop words (``spacy.lang.en.stop_words.STOP_WORDS``), read from the
    vendored :data:`STOP_WORDS_FILE`; spaCy is never imported."""
    text = (resources.files("grefine_parsing") / STOP_WORDS_FILE).read_text("utf-8")
    return frozenset(w for w in text.splitlines() if w and not w.startswith("#"))


def is_stop(word: str) -> bool:
    """True when ``word`` (any case) is one of spaCy's English stopwords."""
    return word.lower() in stop_words()


def has_alnum(word: str) -> bool:
    """True when ``word`` holds at least one letter or digit (else: punctuation, symbol, emoji)."""
    return any(ch.isalnum() for ch in word)


def has_letter(word: str) -> bool:
    """True when ``word`` holds at least one letter (numbers and emoji are never head nouns)."""
    return any(ch.isalpha() for ch in word)


# --------------------------------------------------------------------------- weight markup

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
# A1111 / ComfyUI "(text:1.3)", compel "(text)1.1" / "(text)++", A1111 de-emphasis "[text]",
# LoRA / hypernetwork tags "<lora:name:0.8>". Innermost brackets first; the loop handles nesting.
_LORA = re.compile(r"<[^<>\s]*:[^<>]*>")
_A1111 = re.compile(rf"\(([^()]*?)(:\s*{_NUM}\s*)\)")
_COMPEL = re.compile(rf"\(([^()]*)\)((?:{_NUM}|[+]+|-+)(?!\w))")
_DEEMPH = re.compile(r"\[([^\[\]:|]*)\]")
_WORD_PLUS = re.compile(r"(?<=\w)(\+{1,3}|-{2,3})(?=[\s,.;)]|$)")


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def mask_weight_syntax(prompt: str) -> str:
    """Blank prompt-weighting markup, keeping the string length (so offsets stay valid).

    ``"(red:1.3) hat"`` -> ``" red      hat"``; ``"a (red hat)1.1"`` -> ``"a  red hat    "``.
    The words inside the markup stay; only brackets, weights and LoRA tags become spaces.

    :param prompt: the prompt as given.
    :returns: a string of the same length for tokenizers and taggers.
    """
    text = _LORA.sub(lambda m: " " * len(m.group(0)), prompt)
    for _ in range(8):  # nesting depth; each pass removes one bracket level
        before = text
        text = _A1111.sub(lambda m: " " + m.group(1) + " " * (len(m.group(2)) + 1), text)
        text = _COMPEL.sub(lambda m: " " + m.group(1) + " " * (len(m.group(2)) + 1), text)
        text = _DEEMPH.sub(lambda m: " " + m.group(1) + " ", text)
        if text == before:
            break
    text = _WORD_PLUS.sub(lambda m: " " * len(m.group(0)), text)
    assert len(text) == len(prompt)
    return text


_MULTI_SPACE = re.compile(r"\s{2,}")


def compact_text(masked: str) -> tuple[str, list[int]]:
    """Collapse every whitespace run of 2+ characters to one space (spaCy would otherwise make
    whitespace tokens out of blanked markup and parse across them).

    :param masked: usually :func:`mask_weight_syntax` output.
    :returns: ``(compact, offsets)`` with ``offsets[i]`` the index in ``masked`` of
        ``compact[i]``, plus one final entry ``len(masked)``.
    """
    out: list[str] = []
    offsets: list[int] = []
    pos = 0
    for m in _MULTI_SPACE.finditer(masked):
        out.append(masked[pos : m.start()])
        offsets.extend(range(pos, m.start()))
        out.append(" ")
        offsets.append(m.start())
        pos = m.end()
    out.append(masked[pos:])
    offsets.extend(range(pos, len(masked)))
    offsets.append(len(masked))
    return "".join(out), offsets


# --------------------------------------------------------------------------- filtering / joining

# Punctuation that stays when glued between two kept tokens ("t-shirt", "AC/DC", "rock'n'roll").
_INNER_PUNCT = frozenset("-/'’.&+_")


def mark_kept(tokens: Sequence[Token], prompt: str) -> None:
    """Set ``kept`` on every token: stopwords and tokens without a letter or digit are dropped,
    except intra-word punctuation glued between two kept tokens (``t - shirt`` -> ``t-shirt``)."""
    for tok in tokens:
        tok.kept = has_alnum(tok.text) and not is_stop(tok.text)
    for i in range(1, len(tokens) - 1):
        tok, prev, nxt = tokens[i], tokens[i - 1], tokens[i + 1]
        if (
            not tok.kept
            and tok.text in _INNER_PUNCT
            and prev.kept
            and nxt.kept
            and prev.end == tok.start
            and tok.end == nxt.start
        ):
            tok.kept = True


def join_tokens(tokens: Sequence[Token], prompt: str) -> str:
    """Phrase text: the kept tokens in order, a single space wherever the prompt has a gap."""
    out: list[str] = []
    prev_end = None
    for tok in tokens:
        if prev_end is not None and tok.start != prev_end:
            out.append(" ")
        out.append(prompt[tok.start : tok.end])
        prev_end = tok.end
    return "".join(out)


def is_punct(word: str) -> bool:
    """True for a token made only of punctuation characters (Unicode category P*)."""
    return bool(word) and all(unicodedata.category(ch).startswith("P") for ch in word)


# --------------------------------------------------------------------------- assembling phrases


def build_phrases(
    prompt: str,
    tokens: Sequence[Token],
    n_parts: int,
    part_parent: Sequence[int],
    part_noun: Sequence[int | None],
) -> list[Phrase]:
    """Turn parts (token groups) into phrases with a forest of parents.

    Parts without a kept token are dropped; a phrase whose parent part was dropped climbs on to
    that part's parent. Cycles (possible only on odd parses) are cut at their first phrase.

    :param prompt: the prompt.
    :param tokens: all tokens, with ``part`` and ``kept`` set.
    :param n_parts: number of parts.
    :param part_parent: parent part of each part (its own index for a root).
    :param part_noun: index into ``tokens`` of each part's head noun, or ``None``.
    :returns: the phrases in part order.
    """
    kept_by_part: list[list[Token]] = [[] for _ in range(n_parts)]
    for tok in tokens:
        if tok.kept and 0 <= tok.part < n_parts:
            kept_by_part[tok.part].append(tok)
    alive = [bool(k) for k in kept_by_part]
    new_index: dict[int, int] = {}
    for p in range(n_parts):
        if alive[p]:
            new_index[p] = len(new_index)

    def resolve(p: int) -> int | None:
        """Nearest live proper ancestor part of ``p`` (None for a root)."""
        seen = {p}
        q = part_parent[p]
        while q not in seen:
            if alive[q]:
                return q
            seen.add(q)
            q = part_parent[q]
        return None

    phrases: list[Phrase] = []
    for p in range(n_parts):
        if not alive[p]:
            continue
        kept = kept_by_part[p]
        parent_part = resolve(p)
        parent = new_index[parent_part] if parent_part is not None else new_index[p]
        noun_tok = tokens[part_noun[p]] if part_noun[p] is not None else None
        phrases.append(
            Phrase(
                text=join_tokens(kept, prompt),
                noun=noun_tok.text if noun_tok is not None else None,
                span=(kept[0].start, max(t.end for t in kept)),
                parent=parent,
                noun_span=(noun_tok.start, noun_tok.end) if noun_tok is not None else None,
            )
        )
    break_cycles(phrases)
    return phrases


def break_cycles(phrases: list[Phrase]) -> None:
    """Make the parent links a forest: the first phrase met on any cycle becomes a root."""
    state = [0] * len(phrases)  # 0 = unseen, 1 = on the current path, 2 = done
    for start in range(len(phrases)):
        path: list[int] = []
        i = start
        while state[i] == 0:
            state[i] = 1
            path.append(i)
            i = phrases[i].parent
        if state[i] == 1 and phrases[i].parent != i:
            # i is on the current path: a cycle through i; cut it at its earliest member.
            cycle = path[path.index(i) :]
            phrases[min(cycle)].parent = min(cycle)
        for j in path:
            state[j] = 2


def check_parsed(parsed: ParsedPrompt) -> None:
    """Assert the structural invariants of a parse (used by tests and the benchmark).

    Spans lie inside the prompt, parents form a forest (every chain reaches a root), a phrase with
    a noun holds the noun inside its span and ``prompt[noun_span] == noun``.

    :raises AssertionError: naming the prompt and the broken invariant.
    """
    n = len(parsed.phrases)
    prompt = parsed.prompt
    for i, ph in enumerate(parsed.phrases):
        s, e = ph.span
        assert 0 <= s < e <= len(prompt), f"{prompt!r}: phrase {i} span {ph.span} outside prompt"
        assert ph.text, f"{prompt!r}: phrase {i} has empty text"
        assert 0 <= ph.parent < n, f"{prompt!r}: phrase {i} parent {ph.parent} out of range"
        if ph.noun is not None:
            assert ph.noun_span is not None, f"{prompt!r}: phrase {i} noun without noun_span"
            ns, ne = ph.noun_span
            assert s <= ns < ne <= e, f"{prompt!r}: noun {ph.noun!r} outside span {ph.span}"
            assert prompt[ns:ne] == ph.noun, f"{prompt!r}: noun_span does not give {ph.noun!r}"
        # forest: following parents from i reaches a root within n steps
        j, steps = i, 0
        while parsed.phrases[j].parent != j:
            j = parsed.phrases[j].parent
            steps += 1
            assert steps <= n, f"{prompt!r}: parent cycle through phrase {i}"
