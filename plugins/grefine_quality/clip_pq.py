"""Plugin ``clip_pq``: the perceptual-map slot on the ``clip`` backbone (:mod:`grefine_quality.perceptual_plugin`).

A module of its own, so that disabling this plugin imports nothing of it.
"""

from grefine_quality.perceptual_plugin import PerceptualIndicator

plugin = PerceptualIndicator("clip_pq", "clip")
