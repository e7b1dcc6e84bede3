"""Image-quality metrics for ``grefine eval``: the :class:`Metric` type and a registry.

Plugins return lists of :class:`Metric` from the ``grefine_metrics(config)`` hook; the evaluation code
collects them in a :class:`MetricRegistry`. Torch-free and import-light on purpose: a metric that
needs a model loads it inside its ``compute`` callable, on first use.

Conventions every metric follows:

* ``compute(before, after, mask, prompt) -> float``. ``before`` is the original image, ``after``
  the refined one (PIL, RGB, same size), ``mask`` the refinement mask (``(H, W)``, bool or float in
  [0, 1], ``None`` when the run produced none: then nothing counts as masked), ``prompt`` the text.
* A *no-reference* metric (``"reference"`` not in ``needs``) scores ``after`` alone and ignores
  ``before``; its value *before* refinement is ``compute(original, original, mask, prompt)``.
* A *full-reference* metric (``"reference"`` in ``needs``) compares ``after`` to ``before``; it has
  no "before" value of its own.
* ``float("nan")`` means "not defined for this input" (e.g. NIQE of an image smaller than two
  96-pixel patches); it is left out of means and counts, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grefine_core.errors import PluginError, UsageError

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

#: What a metric may need besides the refined image.
NEEDS: frozenset[str] = frozenset({"reference", "mask", "prompt"})

ComputeFn = Callable[["Image", "Image", "np.ndarray | None", str], float]
AvailableFn = Callable[[], "tuple[bool, str]"]


@dataclass(frozen=True)
class Metric:
    """One image-quality metric.

    :ivar name: unique identifier used on the command line (``psnr_outside``, ``brisque``).
    :ivar compute: ``(before, after, mask, prompt) -> float`` (see the module docstring).
    :ivar higher_is_better: the direction; ``None`` for an informational value (e.g. the masked
        fraction) that has no better side, so it is never bolded or counted as a regression.
    :ivar needs: subset of ``{"reference", "mask", "prompt"}``.
    :ivar label: short column header for tables (defaults to ``name``).
    :ivar description: one line for ``grefine eval metrics`` and the docs.
    :ivar group: ``"offline"`` (always available), ``"perceptual"`` or ``"alignment"``.
    :ivar compare_before: whether a "before" value (the metric on the original image) is
        meaningful; always false for full-reference metrics.
    :ivar check: ``() -> (ok, reason)``; ``None`` means always available.
    :ivar cap: values above it count as ``cap`` in means (PSNR: identical pixels give ``inf``,
        averaged as 100 dB); ``None`` for no cap.
    """

    name: str
    compute: ComputeFn
    higher_is_better: bool | None = True
    needs: frozenset[str] = field(default_factory=frozenset)
    label: str = ""
    description: str = ""
    group: str = "offline"
    compare_before: bool = True
    check: AvailableFn | None = None
    cap: float | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"metric name {self.name!r} must be non-empty [A-Za-z0-9_-]")
        unknown = set(self.needs) - NEEDS
        if unknown:
            raise ValueError(
                f"metric {self.name!r}: unknown needs {sorted(unknown)}; valid: {sorted(NEEDS)}"
            )
        object.__setattr__(self, "needs", frozenset(self.needs))

    @property
    def header(self) -> str:
        """Column header: the label and an arrow for the direction."""
        arrow = {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]
        return f"{self.label or self.name}{arrow}"

    @property
    def has_before(self) -> bool:
        """True when the metric can score the original image on its own."""
        return self.compare_before and "reference" not in self.needs

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when the metric can run here, else ``(False, what to install/download)``."""
        if self.check is None:
            return True, ""
        try:
            ok, reason = self.check()
        except Exception as e:  # noqa: BLE001 - a broken check must not break the listing
            return False, f"availability check failed: {type(e).__name__}: {e}"
        return bool(ok), str(reason or "")

    def __call__(self, before: Image, after: Image, mask: np.ndarray | None, prompt: str) -> float:
        return float(self.compute(before, after, mask, prompt))

    def is_worse(self, after: float, before: float, rel_tol: float = 1e-9) -> bool:
        """Whether ``after`` is worse than ``before`` in this metric's direction.

        Values within ``rel_tol`` of each other (relative to ``max(1, |before|)``) are equal, so an
        untouched image never counts as a regression. NaN on either side is never "worse".
        """
        if self.higher_is_better is None or math.isnan(after) or math.isnan(before):
            return False
        if after == before:  # also covers inf == inf
            return False
        tol = rel_tol * max(1.0, abs(before)) if math.isfinite(before) else 0.0
        if self.higher_is_better:
            return after < before - tol
        return after > before + tol

    def capped(self, value: float) -> float:
        """``value`` limited to :attr:`cap` (for means)."""
        return min(value, self.cap) if self.cap is not None and not math.isnan(value) else value

    def best(self, values: Sequence[float]) -> float | None:
        """The best of ``values`` in this metric's direction (NaN ignored), or ``None``."""
        finite = [v for v in values if not math.isnan(v)]
        if self.higher_is_better is None or not finite:
            return None
        return max(finite) if self.higher_is_better else min(finite)


class MetricRegistry:
    """Metrics by name, collected from plugins.

    :param metrics: the metrics; two with the same name are an error naming both.
    """

    def __init__(self, metrics: Iterable[Metric] = ()) -> None:
        self._metrics: dict[str, Metric] = {}
        for metric in metrics:
            self.add(metric)

    @classmethod
    def from_hook_results(cls, results: Iterable[Iterable[Any] | None]) -> MetricRegistry:
        """Build from the return value of ``pm.hook.grefine_metrics(config=...)`` (a list of
        lists).

        :raises PluginError: an item is not a :class:`Metric`, or two metrics share a name.
        """
        registry = cls()
        for group in results:
            if group is None:
                continue
            if isinstance(group, Metric):
                group = [group]
            for item in group:
                if not isinstance(item, Metric):
                    raise PluginError(
                        "grefine_metrics(config) must return a list of grefine_metrics.Metric; "
                        f"got an item of type {type(item).__name__}: {item!r}"
                    )
                registry.add(item)
        return registry

    @classmethod
    def from_hook(cls, hook: Any, config: Any) -> MetricRegistry:
        """Build from a pluggy hook relay (``plugin_manager.hook``) for ``config``."""
        return cls.from_hook_results(hook.grefine_metrics(config=config))

    def add(self, metric: Metric) -> None:
        """Register ``metric``.

        :raises PluginError: a metric of the same name is already registered.
        """
        if metric.name in self._metrics:
            raise PluginError(f"two plugins register a metric named {metric.name!r}")
        self._metrics[metric.name] = metric

    def names(self) -> list[str]:
        """All metric names, in registration order."""
        return list(self._metrics)

    def get(self, name: str) -> Metric:
        """The metric called ``name``.

        :raises UsageError: unknown name; the message lists the valid ones.
        """
        try:
            return self._metrics[name]
        except KeyError:
            raise UsageError(
                f"unknown metric {name!r}; valid metrics: {', '.join(self.names()) or '(none)'}"
            ) from None

    def select(self, names: Iterable[str]) -> list[Metric]:
        """The metrics called ``names`` in that order (duplicates dropped).

        :raises UsageError: a name is unknown (all unknown names are listed).
        """
        wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        unknown = [n for n in wanted if n not in self._metrics]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise UsageError(
                f"unknown metric{plural} {', '.join(map(repr, unknown))}; "
                f"valid metrics: {', '.join(self.names()) or '(none)'}"
            )
        return [self._metrics[n] for n in wanted]

    def split_available(self, metrics: Iterable[Metric]) -> tuple[list[Metric], dict[str, str]]:
        """Partition ``metrics`` into the available ones and ``{name: reason}`` for the rest."""
        ok: list[Metric] = []
        skipped: dict[str, str] = {}
        for metric in metrics:
            available, reason = metric.available()
            if available:
                ok.append(metric)
            else:
                skipped[metric.name] = reason or "unavailable"
        return ok, skipped

    def __contains__(self, name: object) -> bool:
        return name in self._metrics

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._metrics.values())

    def __len__(self) -> int:
        return len(self._metrics)
