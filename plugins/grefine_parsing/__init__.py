"""grefine_parsing: what both prompt parsers share, owned by neither (tokens with offsets,
stopwords, weight markup, joining kept words into phrase text, the phrase forest, the structural
checks). The parsers are the ``nltk`` and ``spacy`` plugins; the phrase-tree printer is
``grefine_core.app.display``. No NLTK or spaCy import happens here."""
