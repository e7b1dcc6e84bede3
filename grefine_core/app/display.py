"""Readable text rendering of a :class:`~grefine_core.types.ParsedPrompt` (``grefine parse``)."""

from __future__ import annotations

from grefine_core.types import ParsedPrompt, Phrase

#: Phrase-tree levels drawn with indentation; deeper phrases are labelled with their depth.
MAX_INDENT = 12


def _line(i: int, ph: Phrase) -> str:
    noun = f"noun: {ph.noun}" if ph.noun is not None else "no noun"
    return f"[{i}] {ph.text}  ({noun}; chars {ph.span[0]}-{ph.span[1]})"


def format_parsed(parsed: ParsedPrompt, *, syntax: bool = False) -> str:
    """Render the phrases as a tree: roots at the left margin, each phrase under its parent.

    Example (spaCy parser)::

        spacy: 4 phrases
        [0] Mr. Beans wearing  (noun: Beans; chars 0-17)
        ├── [1] sun glasses  (noun: glasses; chars 18-29)
        │   └── [2] blue doctor suit  (noun: suit; chars 35-51)
        └── [3] stripe tie  (noun: tie; chars 56-66)

    :param parsed: a parse from either parser.
    :param syntax: also append the parser's own syntax tree (``parsed.tree.pformat()``).
        ``grefine parse`` shows it.
    :returns: the text, without a trailing newline.
    """
    phrases = parsed.phrases
    children: dict[int, list[int]] = {i: [] for i in range(len(phrases))}
    roots: list[int] = []
    for i, ph in enumerate(phrases):
        if ph.parent == i or not 0 <= ph.parent < len(phrases):
            roots.append(i)
        else:
            children[ph.parent].append(i)

    count = len(phrases)
    lines = [f"{parsed.parser}: {count} phrase{'s' if count != 1 else ''}"]
    if not phrases:
        lines.append("(no phrases: the prompt is empty or holds only stopwords/punctuation)")

    # iterative depth-first walk (no recursion limit on long prompts)
    stack: list[tuple[int, str, str, int]] = [(r, "", "", 0) for r in reversed(roots)]
    seen: set[int] = set()
    while stack:
        i, lead, child_lead, depth = stack.pop()
        if i in seen:  # defensive: a malformed parse with a cycle
            continue
        seen.add(i)
        mark = f"(depth {depth}) " if depth > MAX_INDENT else ""
        lines.append(lead + mark + _line(i, phrases[i]))
        kids = children[i]
        deep = depth >= MAX_INDENT  # very deep chains: stop indenting, print the depth instead
        for k, c in reversed(list(enumerate(kids))):
            last = k == len(kids) - 1
            branch = "└── " if last or deep else "├── "
            through = "" if deep else ("    " if last else "│   ")
            stack.append((c, child_lead + branch, child_lead + through, depth + 1))
    if syntax and parsed.tree is not None:
        tree = parsed.tree
        lines.append("")
        lines.append(tree.pformat(margin=100) if hasattr(tree, "pformat") else str(tree))
    return "\n".join(lines)


#: The name the parser packages export.
format_tree = format_parsed
