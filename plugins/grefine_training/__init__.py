"""grefine_training: learn the PQ-Map quality prompts from MOS data and fit a preset's thresholds.

Plugin ``training`` (:mod:`grefine_training.plugin`) adds two commands (docs/training.md):

* ``grefine train-pq``: CoOp-style prompt learning in the layout of the released
  ``PQ-{overall,technical,rational,natural}.pth`` files, on a frozen CLIP Surgery backbone
  (:mod:`grefine_training.train`);
* ``grefine calibrate``: the HQ bounds, ``tau`` and ``beta`` of a preset fitted on MOS data and
  region masks (:mod:`grefine_training.calibrate`).

Modules, one job each: :mod:`~grefine_training.data` (CSV layouts, checks, the split),
:mod:`~grefine_training.features` (the frozen image-feature cache), :mod:`~grefine_training.train`
(the training loop, checkpoints, early stopping), :mod:`~grefine_training.manifest` (the prompt
files, their sha256 and the manifest), :mod:`~grefine_training.calibrate`,
:mod:`~grefine_training.cli` (the two commands' arguments). Importing the package imports no torch.
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "read_mos_table": "grefine_training.data",
    "split_indices": "grefine_training.data",
    "TrainOptions": "grefine_training.train",
    "train_pq": "grefine_training.train",
    "fit_score_bound": "grefine_training.calibrate",
    "fit_region_tau": "grefine_training.calibrate",
    "calibrate": "grefine_training.calibrate",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
