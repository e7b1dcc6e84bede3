"""The evaluation's own hook, added to the plugin host by the ``metrics`` plugin
(``grefine_add_hookspecs``): the kernel knows nothing of metrics."""

from __future__ import annotations

from typing import Any

from grefine_core.markers import hookspec


@hookspec
def grefine_metrics(config: Any) -> list[Any]:
    """Register image-quality metrics for ``grefine eval``.

    :param config: the evaluation's configuration (a ``GRefineConfig``): a plugin reads its
        options from it (e.g. ``config.plugins["metrics"]``), never from state kept between calls.
    :returns: a list of :class:`grefine_metrics.registry.Metric` objects (name, direction, whether
        it needs a mask / reference, a callable). Metrics whose weights are missing should still be
        returned and report themselves unavailable with the reason.
    """
