"""The NLTK parser's stop words are spaCy's English list, vendored (no spaCy install needed)."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest
from grefine_parsing import text


def test_the_vendored_list_equals_spacys():
    spacy_stop_words = pytest.importorskip(
        "spacy.lang.en.stop_words",
        reason='spaCy is not installed (pip install "grefine[spacy]"): nothing to compare with',
    )
    vendored = text.stop_words()
    ours, theirs = set(vendored), set(spacy_stop_words.STOP_WORDS)
    assert vendored == frozenset(theirs), (
        f"only in the vendored list: {sorted(ours - theirs)}; only in spaCy's: "
        f"{sorted(theirs - ours)}. Regenerate plugins/grefine_parsing/{text.STOP_WORDS_FILE}"
    )


def test_the_vendored_file_names_its_source_and_licence():
    data = (resources.files("grefine_parsing") / text.STOP_WORDS_FILE).read_text("utf-8")
    header = "\n".join(line for line in data.splitlines() if line.startswith("#"))
    assert "spaCy 3." in header and "MIT License" in header and "ExplosionAI" in header
    words = [w for w in data.splitlines() if w and not w.startswith("#")]
    assert words == sorted(set(words)) and len(words) > 300
    assert all(w == w.strip().lower() for w in words)
    assert text.is_stop("The") and text.is_stop("n't") and not text.is_stop("cat")


def test_the_nltk_parser_runs_with_spacy_blocked():
    """Every path of the nltk parser (except tagger = 'spacy') works when spaCy is absent."""
    code = (
        "import sys\n"
        "sys.modules['spacy'] = None\n"  # `import spacy` now raises ImportError
        "from grefine_nltk import parse_prompt\n"
        "p = parse_prompt('a red cat sitting on a wooden table next to a blue vase', tagger='pattern')\n"
        "print([ph.text for ph in p.phrases])\n"
        "print(sorted(m for m, v in sys.modules.items() if m.startswith(('spacy', 'thinc')) and v))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    phrases, loaded = out.stdout.strip().splitlines()
    assert "red cat" in phrases and "wooden table" in phrases
    assert loaded == "[]"
