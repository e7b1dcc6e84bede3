"""Keep the code in docs/plugins.md identical to the tested files it shows (the datasette way).

Between ``<!-- snippet: PATH -->`` and ``<!-- end snippet -->`` the docs hold PATH's text in a
code block; between ``<!-- result-types -->`` and ``<!-- end result-types -->`` a table of every
result type's fields, made from the dataclasses themselves. ``python scripts/sync_snippets.py``
rewrites both; ``tests/test_plugin_docs.py`` fails when they differ from what this renders.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
SNIPPET = re.compile(
    r"(<!-- snippet: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end snippet -->)", re.S
)
TYPES = re.compile(r"(<!-- result-types -->\n)(?P<body>.*?)(<!-- end result-types -->)", re.S)
#: The result types a plugin constructs, in slot order.
RESULT_TYPES = (
    "PerceptualResult",
    "ParsedPrompt",
    "Phrase",
    "AlignmentResult",
    "PhraseAlignment",
    "Emphasis",
    "MaskResult",
    "StageOutput",
)


def _code_block(path: str) -> str:
    language = "toml" if path.endswith(".toml") else "python"
    text = (ROOT / path).read_text("utf-8").rstrip("\n")
    return f"```{language}\n# {path}\n{text}\n```\n"


def _type_name(annotation: object) -> str:
    """The annotation as written in the source (``from __future__ import annotations``)."""
    text = (
        annotation if isinstance(annotation, str) else getattr(annotation, "__name__", annotation)
    )
    return str(text).replace("np.ndarray", "ndarray").replace("|", "or")


def result_types_table() -> str:
    """One row per field of every result type: name, type, required or its default."""
    import grefine_core

    rows = [
        "| type | field | type of the value | required / default |",
        "| --- | --- | --- | --- |",
    ]
    for name in RESULT_TYPES:
        cls = getattr(grefine_core, name)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f"`{f.default!r}`"
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f"`{f.default_factory()!r}`"  # type: ignore[misc]
            else:
                default = "required"
            shown = _type_name(f.type)
            rows.append(f"| `{name}` | `{f.name}` | `{shown}` | {default} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """``text`` with every snippet and the result-type table brought up to date."""
    text = SNIPPET.sub(lambda m: m.group(1) + _code_block(m.group("path")) + m.group(4), text)
    return TYPES.sub(lambda m: m.group(1) + result_types_table() + m.group(3), text)


def snippet_paths(text: str) -> list[str]:
    return [m.group("path") for m in SNIPPET.finditer(text)]


def main() -> int:
    current = DOC.read_text("utf-8")
    updated = render(current)
    if updated != current:
        DOC.write_text(updated, "utf-8")
        print(f"updated {DOC.relative_to(ROOT)}")
    else:
        print(f"{DOC.relative_to(ROOT)} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
