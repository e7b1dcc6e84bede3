"""Plugin ``training``: the ``grefine train-pq`` and ``grefine calibrate`` commands
(docs/training.md). It fills no slot and reads no settings section.

Importing this module is cheap (every ``grefine`` command imports the plugins): the commands
import torch and the training code only when they run.
"""

from __future__ import annotations

from collections.abc import Callable

from grefine_core.markers import hookimpl


def train_pq_main(argv: list[str]) -> int:
    """``grefine train-pq ...``."""
    from grefine_training.cli import train_main

    return int(train_main(argv) or 0)


def calibrate_main(argv: list[str]) -> int:
    """``grefine calibrate ...``."""
    from grefine_training.cli import calibrate_main as main

    return int(main(argv) or 0)


@hookimpl
def grefine_register_commands() -> dict[str, tuple[str, Callable[[list[str]], int]]]:
    """``grefine train-pq`` and ``grefine calibrate``: ``{name: (help, main)}``."""
    return {
        "train-pq": (
            "learn the PQ-Map quality prompts from MOS data (grefine train-pq --help)",
            train_pq_main,
        ),
        "calibrate": (
            "fit a preset's thresholds (p/a bounds, tau, beta) on MOS data (grefine calibrate "
            "--help)",
            calibrate_main,
        ),
    }
