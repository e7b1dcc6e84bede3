"""grefine's evaluation metrics and evaluation library (plugin ``metrics``).

Public API (imported lazily, so ``import grefine_metrics`` stays light)::

    from grefine_metrics import read_manifest, evaluate_refine, evaluate_assess, build_metrics

See ``docs/evaluation.md``.
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "read_manifest": "grefine_metrics.manifest",
    "ManifestItem": "grefine_metrics.manifest",
    "evaluate_refine": "grefine_metrics.evaluate",
    "RefineEvaluation": "grefine_metrics.evaluate",
    "evaluate_assess": "grefine_metrics.assess",
    "read_mos_csv": "grefine_metrics.assess",
    "build_metrics": "grefine_metrics.catalog",
    "Metric": "grefine_metrics.registry",
    "MetricRegistry": "grefine_metrics.registry",
    "offline_metrics": "grefine_metrics.catalog",
    "MetricsSettings": "grefine_metrics.settings",
    "GRefineRunner": "grefine_metrics.runner",
    "GRefineScorer": "grefine_metrics.runner",
    "srcc": "grefine_metrics.stats",
    "plcc": "grefine_metrics.stats",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
