"""The real ``run_method`` and PQ/AQ scorer, backed by :class:`grefine_core.pipeline.GRefine`.

Both import the pipeline lazily (on the first call), so the evaluation code and its tests never
need it; tests pass fakes with the same signatures instead.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np


def load_method_config(method: str, overrides: dict[str, Any] | None = None) -> Any:
    """The configuration of a method: a shipped preset's name or a TOML config/ablation file."""
    from grefine_core.config import load_config

    if method.strip().lower().endswith(".toml"):
        return load_config(config_file=method.strip(), overrides=overrides)
    return load_config(preset=method.strip(), overrides=overrides)


class GRefineRunner:
    """``run_method`` for :func:`~grefine_metrics.evaluate.evaluate_refine`: one ``GRefine`` per
    method, built on first use and reused for every image (models load once).

    :param device: ``"cpu"``/``"cuda"`` to override the method's configured device.
    :param save_records: also write the maps with ``result.save(work_dir)``; the JSON report
        (scores, defects, trace) is always written beside ``refined.png`` as ``refined.json``
        when the result supports it.
    """

    def __init__(self, device: str | None = None, save_records: bool = False) -> None:
        self.overrides: dict[str, Any] = {"device": device} if device else {}
        self.save_records = save_records
        self._engines: dict[str, Any] = {}
        self._models: Any = None  # one model cache for every method: ablations share the models
        self._lock = threading.Lock()

    def engine(self, method: str) -> Any:
        """The ``GRefine`` of ``method`` (built on first use)."""
        with self._lock:
            if method not in self._engines:
                from grefine_core.context import ModelCache
                from grefine_core.pipeline import GRefine

                if self._models is None:
                    self._models = ModelCache()
                self._engines[method] = GRefine(
                    load_method_config(method, self.overrides or None), models=self._models
                )
            return self._engines[method]

    def __call__(
        self, method: str, image_path: Path, prompt: str, work_dir: Path
    ) -> tuple[Path, np.ndarray | None]:
        result = self.engine(method).refine(str(image_path), prompt, name=work_dir.name)
        # One atomic save writes refined.png and its report refined.json (maps only on request).
        out = result.save(work_dir, "refined", maps="png" if self.save_records else "none")["image"]
        mask = getattr(result, "mask", None)
        binary = getattr(mask, "binary", None) if mask is not None else None
        return out, (None if binary is None else np.asarray(binary, dtype=bool))


class GRefineScorer:
    """PQ and AQ scores of an image (``{"pq": p, "aq": a}``) for ``evaluate_assess``.

    Runs the method's indicators only (``GRefine.assess``; with a facade that lacks it, ``refine``
    with both refiner slots' plugins disabled), so no diffusion model is loaded. A disabled
    indicator gives NaN.

    :param method: a preset name or TOML file choosing the indicators (default ``paper``).
    :param device: ``"cpu"``/``"cuda"`` override.
    """

    def __init__(self, method: str = "paper", device: str | None = None) -> None:
        self.method = method
        self.overrides: dict[str, Any] = {"device": device} if device else {}
        self._engine: Any = None

    def engine(self) -> Any:
        if self._engine is None:
            from grefine_core.pipeline import GRefine

            base = load_method_config(self.method, self.overrides or None)
            if hasattr(GRefine, "assess"):
                self._engine = GRefine(base)
            else:
                stages = [base.select.get(s) for s in ("stage1", "stage2")]
                disable = list(dict.fromkeys([*base.disable, *(s for s in stages if s)]))
                overrides = {**self.overrides, "disable": disable}
                self._engine = GRefine(load_method_config(self.method, overrides))
        return self._engine

    def __call__(self, image_path: Path, prompt: str) -> dict[str, float]:
        engine = self.engine()
        run = getattr(engine, "assess", None) or engine.refine
        result = run(str(image_path), prompt)
        perceptual = getattr(result, "perceptual", None)
        alignment = getattr(result, "alignment", None)
        pq = (
            math.nan
            if perceptual is None or getattr(perceptual, "neutral", False)
            else float(perceptual.score)
        )
        aq = math.nan if alignment is None else float(alignment.score)
        return {"pq": pq, "aq": aq}
