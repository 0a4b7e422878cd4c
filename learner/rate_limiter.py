"""Samples-per-insert rate limiting between collection and learning.

The ratio is (updates x batch_size) / transitions inserted, counted from the moment the
replay first holds ``min_replay`` transitions. The learner may update while it is below
``spi * (1 + tolerance)`` (above that it waits for data); collection may go on while the
learner is above ``spi * (1 - tolerance)`` (below that actors wait for the learner) and, with
``max_lag_steps``, no more than that many env steps' updates behind.
Because the two bounds differ, one side can always move: no deadlock.

    lim = RateLimiter(samples_per_insert=64, batch_size=256, min_replay=1000)
    n = lim.updates_allowed(inserted=5000, updates=100)   # learner: how many now
    lim.may_insert(inserted=5000, updates=100)            # collectors: go on?
    lim.may_insert(5000, 100, max_lag_steps=2000)         # ... and at most 2000 steps behind
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class RateLimiter:
    samples_per_insert: float
    batch_size: int
    min_replay: int
    tolerance: float = 0.5

    def __post_init__(self) -> None:
        if self.samples_per_insert <= 0:
            raise ValueError(f"samples_per_insert must be > 0, got {self.samples_per_insert}")
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"spi_tolerance must be in [0, 1), got {self.tolerance}")

    def target_updates(self, inserted: int) -> float:
        """Updates that keep the ratio exact after ``inserted`` transitions."""
        return max(0, inserted - self.min_replay) * self.samples_per_insert / self.batch_size

    def env_steps_paid(self, inserted: int, updates: int) -> int:
        """Env steps that ``updates`` updates stand for at the exact ratio (the learner's axis).

        ``min_replay`` plus the inserts the updates pay for, never more than were inserted:
        when collection overshoots ``min_replay`` before the first update (8 HalfCheetah
        envs land 8,000 steps at once), the first updates still count from ``min_replay``.
        """
        if updates <= 0 or inserted < self.min_replay:
            return 0
        paid = self.min_replay + updates * self.batch_size / self.samples_per_insert
        return int(min(inserted, math.floor(paid)))

    def updates_allowed(self, inserted: int, updates: int) -> int:
        """How many updates the learner may run now (0: wait for data)."""
        if inserted < self.min_replay:
            return 0
        upper = self.target_updates(inserted) * (1.0 + self.tolerance)
        return max(0, math.floor(upper) + 1 - updates)

    def may_insert(self, inserted: int, updates: int, max_lag_steps: float | None = None) -> bool:
        """Whether collectors may add data (False: the learner is too far behind).

        ``max_lag_steps``: the learner may also trail by no more than the updates this many
        env steps stand for (whichever bound is tighter): the relative band alone lets a
        learner-bound run fall behind by ``tolerance`` of all its updates, which it then
        owes at the end (the drain). Still at most the target, so one side can always move."""
        if inserted < self.min_replay:
            return True
        target = self.target_updates(inserted)
        lower = target * (1.0 - self.tolerance)
        if max_lag_steps is not None:
            lower = max(lower, target - max(0.0, max_lag_steps) * self.samples_per_insert / self.batch_size)
        return updates >= math.floor(lower)
