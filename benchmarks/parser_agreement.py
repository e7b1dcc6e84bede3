"""Agreement between the NLTK and spaCy parsers on PartiPrompts, by category (docs/parsers.md).

Run: ``.venv/bin/python benchmarks/parser_agreement.py [--tagger auto|pattern|spacy] [TSV]``

Per prompt, two comparisons:

* same nouns: the two parses have the same set of head nouns, compared by the position of the
  whitespace-delimited prompt word that holds each noun (so the two "cat"s of "a cat and another
  cat" are told apart, and "t-shirt" (NLTK keeps hyphenated words whole) matches spaCy's
  "shirt");
* same parents: the nouns agree *and* every noun has the same parent noun in both parses (parent
  = nearest ancestor phrase with a noun, the one AQ uses; a root is its own parent).

Prints a Markdown table; the last line is the all-prompts row.
"""

from __future__ import annotations

import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

from grefine_core.types import ParsedPrompt


def noun_word(prompt: str, span: tuple[int, int]) -> tuple[int, int]:
    """The whitespace-delimited word of the prompt holding a noun span (tokenizers differ:
    the NLTK parser keeps "t-shirt" whole, spaCy's head noun is "shirt")."""
    start, end = span
    while start > 0 and not prompt[start - 1].isspace():
        start -= 1
    while end < len(prompt) and not prompt[end].isspace():
        end += 1
    return start, end


def parent_relation(parsed: ParsedPrompt) -> dict[tuple[int, int], tuple[int, int]]:
    """``{noun word: parent noun word}`` over the phrases with a noun (AQ's view of the forest:
    the parent is the nearest ancestor phrase with a noun; a root maps to itself)."""
    phrases = parsed.phrases

    def key(i: int) -> tuple[int, int]:
        return noun_word(parsed.prompt, phrases[i].noun_span)

    out: dict[tuple[int, int], tuple[int, int]] = {}
    for i, ph in enumerate(phrases):
        if ph.noun_span is None:
            continue
        j, seen, target = ph.parent, {i}, i
        while j not in seen:
            if phrases[j].noun_span is not None:
                target = j
                break
            seen.add(j)
            j = phrases[j].parent
        out[key(i)] = key(target)
    return out


def compare(a: ParsedPrompt, b: ParsedPrompt) -> tuple[bool, bool]:
    """``(same head-noun sets, same nouns and same parents)`` for two parses of one prompt."""
    ra, rb = parent_relation(a), parent_relation(b)
    same_nouns = set(ra) == set(rb)
    return same_nouns, same_nouns and ra == rb


def load_parti(path: Path) -> list[tuple[str, str]]:
    """``[(prompt, category), ...]`` from the PartiPrompts TSV."""
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["Prompt"], r["Category"]) for r in csv.DictReader(f, delimiter="\t")]


def agreement_table(rows: list[tuple[str, str]], tagger: str = "auto") -> str:
    from grefine_nltk.parser import parse_prompts as parse_nltk
    from grefine_spacy.parser import parse_prompts as parse_spacy

    texts = [t for t, _ in rows]
    nltk_parses = parse_nltk(texts, tagger=tagger)
    spacy_parses = parse_spacy(texts)
    stats: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for (_, cat), a, b in zip(rows, nltk_parses, spacy_parses, strict=True):
        same_n, same_p = compare(a, b)
        for key in (cat, "all"):
            s = stats[key]
            s[0] += 1
            s[1] += same_n
            s[2] += same_p
            s[3] += sum(p.noun is not None for p in a.phrases)
            s[4] += sum(p.noun is not None for p in b.phrases)
    lines = [
        "| category | prompts | same head nouns | same nouns and parents | nouns/prompt nltk | nouns/prompt spacy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(k for k in stats if k != "all") + ["all"]:
        n, sn, sp, na, nb = stats[key]
        label = "**all**" if key == "all" else key
        lines.append(
            f"| {label} | {n} | {100 * sn / n:.1f} % | {100 * sp / n:.1f} % | {na / n:.2f} | {nb / n:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="NLTK vs spaCy parser agreement on PartiPrompts")
    ap.add_argument("tsv", nargs="?", help="PartiPrompts.tsv (default: the shared folder's)")
    ap.add_argument("--tagger", default="auto", help="the NLTK parser's tagger (default auto)")
    args = ap.parse_args(argv)
    path = args.tsv
    if path is None:
        from grefine_core.testing.shared_data import shared_path

        path = shared_path("data", "prompts", "PartiPrompts.tsv")
        if path is None:
            print("PartiPrompts.tsv not found: pass its path as the first argument")
            return 2
    from grefine_nltk.taggers import resolve_tagger

    t0 = time.perf_counter()
    print(agreement_table(load_parti(Path(path)), tagger=args.tagger))
    print(
        f"\n({time.perf_counter() - t0:.1f} s, nltk tagger = {resolve_tagger(args.tagger)})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
