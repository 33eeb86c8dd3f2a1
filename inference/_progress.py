"""A word on the cost of long work when no progress bar shows it."""

from __future__ import annotations

import time
import warnings

NOTICE_SECONDS = 60.0  # a job expected to take longer than this gets a notice


class CostWarning(UserWarning):
    """A call will take long; the message gives the estimate and how to see progress."""


class CostNotice:
    """Time the first of ``num_chunks`` equal pieces of work; when the whole is expected to
    take longer than :data:`NOTICE_SECONDS` and no progress bar is ``shown``, warn once with
    the estimate, so ``num_samples=1e9`` does not start hours of silent work."""

    def __init__(self, what: str, num_chunks: int, shown: bool) -> None:
        self.what, self.num_chunks, self.shown = what, num_chunks, shown
        self.started = time.perf_counter()
        self.done = 0

    def step(self) -> None:
        self.done += 1
        if self.done != 1 or self.shown or self.num_chunks == 1:
            return
        first = time.perf_counter() - self.started
        expected = first * self.num_chunks
        if expected > NOTICE_SECONDS:
            warnings.warn(
                f"{self.what} will take about {_duration(expected)} ({self.num_chunks} chunks "
                f"of {first:.2g} s); pass progress=True for a progress bar, or fewer samples",
                CostWarning,
                stacklevel=3,
            )


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"
