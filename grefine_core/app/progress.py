"""Progress bars for the CLI: one over the batch, one over each stage's steps (tqdm)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from grefine_core.markers import hookimpl


@contextmanager
def logging_above_bars(enabled: bool = True) -> Iterator[None]:
    """Route console log records through ``tqdm.write`` so they print above the bars instead of
    breaking them."""
    if not enabled:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger()]):
        yield


class BatchProgress:
    """A tqdm bar over batch items."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="image", desc="grefine")

    def update(self, outcome: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{outcome.item.name}: {outcome.status}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class StageProgressObserver:
    """Observer plugin: a transient tqdm bar per stage that reports steps (e.g. denoising)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar = None

    @hookimpl
    def grefine_stage_progress(self, context: Any, slot: str, step: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=f"{context.item_name}: {slot}", unit="step", leave=False
            )
        self._bar.total = total
        self._bar.n = step
        self._bar.refresh()

    @hookimpl
    def grefine_stage_end(self, context: Any, record: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
