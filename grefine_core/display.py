"""Human-readable display of a parsed prompt as a tree of phrases."""

from __future__ import annotations

from grefine_core.types import ParsedPrompt


def format_parsed(parsed: ParsedPrompt) -> str:
    """The phrases as an indented tree (children under their parent), with head nouns and spans."""
    children: dict[int, list[int]] = {}
    for i, ph in enumerate(parsed.phrases):
        if ph.parent != i:
            children.setdefault(ph.parent, []).append(i)
    lines = [f"parser: {parsed.parser}", f"prompt: {parsed.prompt}"]
    if not parsed.phrases:
        lines.append("(no phrases)")

    def walk(i: int, depth: int) -> None:
        ph = parsed.phrases[i]
        noun = ph.noun if ph.noun else "-"
        lines.append(f"{'  ' * depth}[{i}] {ph.text!r}  noun={noun}  span={list(ph.span)}")
        for c in children.get(i, []):
            walk(c, depth + 1)

    for root in parsed.roots():
        walk(root, 0)
    if parsed.tree is not None and hasattr(parsed.tree, "pformat"):
        lines += ["", "syntax tree:", parsed.tree.pformat(margin=100)]
    return "\n".join(lines)
