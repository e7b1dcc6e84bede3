"""Plugin ``onnx_aq``: the alignment-map slot on the ``onnx`` backbone (:mod:`grefine_quality.alignment_plugin`).

A module of its own, so that disabling this plugin imports nothing of it.
"""

from grefine_quality.alignment_plugin import AlignmentIndicator

plugin = AlignmentIndicator("onnx_aq", "onnx")
