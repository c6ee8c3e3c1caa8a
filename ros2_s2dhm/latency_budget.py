"""A per-query time budget that follows the measured pipeline time, for a stream of frames.

A frame that verifies nothing in its top-k looks ``retrieval_extra`` references further and
can take 3-4x the median query; on a live stream its pose arrives late and the frames behind it
wait. :class:`AdaptiveBudget` turns the recent pipeline times into a budget of ``factor`` times
their median (after ``warmup`` frames): the cascade verifies no further reference once a query
has taken that long (``Localizer.localize_features(time_budget_ms=...)``). It adapts to the
machine and its load (a shared CPU slows every stage, so the median grows with it). Cut frames
do not pull the median down: they stop at about the budget, above it.
"""
from __future__ import annotations

import collections

import numpy as np


class AdaptiveBudget:
    """``factor`` x the median of the last ``window`` pipeline times (ms); None (no budget)
    before ``warmup`` times were seen or with ``factor`` 0."""

    def __init__(self, factor: float, window: int = 50, warmup: int = 5):
        if factor < 0 or window < 1 or warmup < 1:
            raise ValueError(f"AdaptiveBudget: factor >= 0, window >= 1, warmup >= 1; got "
                             f"{factor}, {window}, {warmup}")
        self.factor = factor
        self.warmup = warmup
        self.times_ms: collections.deque[float] = collections.deque(maxlen=window)

    def observe(self, total_ms: float) -> None:
        """Record one query's pipeline time (features included)."""
        if np.isfinite(total_ms) and total_ms > 0:
            self.times_ms.append(float(total_ms))

    def budget_ms(self) -> float | None:
        if self.factor == 0 or len(self.times_ms) < self.warmup:
            return None
        return self.factor * float(np.median(self.times_ms))
