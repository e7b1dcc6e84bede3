"""grefine-example-parser: the ``example_commas`` prompt parser (see ``plugin.py``)."""

__version__ = "0.1.0"
