"""The ``metrics`` plugin: registers the evaluation metrics through ``grefine_metrics(config)``.

Importing this module is cheap: every ``grefine`` command loads it with the other plugins, so
the metric implementations (numpy, scipy, PIL) are imported only when ``grefine_metrics(config)`` is
called. Settings come from the ``[plugins.metrics]`` table of the configuration the hook is
called with (no state is kept between calls).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from grefine_core.config import format_validation_error
from grefine_core.errors import ConfigError
from grefine_core.markers import hookimpl
from grefine_metrics.registry import Metric
from grefine_metrics.settings import MetricsSettings

SECTION = "metrics"


@hookimpl
def grefine_add_hookspecs(pluginmanager: Any) -> None:
    from grefine_metrics import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def eval_main(argv: list[str]) -> int:
    """``grefine eval ...`` (imports the evaluation code only when run)."""
    from grefine_metrics.eval_cli import main

    return int(main(argv) or 0)


@hookimpl
def grefine_register_commands() -> dict[str, tuple[str, object]]:
    return {"eval": ("evaluate refinement or assessment (grefine eval --help)", eval_main)}


@hookimpl
def grefine_settings_models() -> dict[str, type[MetricsSettings]]:
    return {SECTION: MetricsSettings}


def settings_of(config: Any) -> MetricsSettings:
    """The ``[plugins.metrics]`` settings of ``config`` (defaults when it has none).

    :raises ConfigError: invalid settings, naming the section and the keys.
    """
    raw = (getattr(config, "plugins", None) or {}).get(SECTION) or {}
    try:
        return MetricsSettings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(
            f"invalid [plugins.{SECTION}] settings:\n{format_validation_error(e)}"
        ) from None


@hookimpl
def grefine_metrics(config: Any) -> list[Metric]:
    from grefine_metrics.catalog import build_metrics

    return build_metrics(settings_of(config))
