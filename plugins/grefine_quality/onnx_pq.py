"""Plugin ``onnx_pq``: the perceptual-map slot on the ``onnx`` backbone (:mod:`grefine_quality.perceptual_plugin`).

A module of its own, so that disabling this plugin imports nothing of it.
"""

from grefine_quality.perceptual_plugin import PerceptualIndicator

plugin = PerceptualIndicator("onnx_pq", "onnx")
