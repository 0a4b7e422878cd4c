"""AIR's shared candidate pool: prior candidates reused across requests, reference returns kept.

GH Alg. 2 draws fresh candidate tasks for every batch, so every request re-rewards all N
reference trajectories under all K candidates: O(N K T) reward evaluations per request,
whatever the number M of new trajectories. On a non-linear family with one trajectory per
request that is nearly all of AIR's cost. ``air_candidates="pool"`` (StrategyConfig)
instead keeps a pool of P = K - 1 prior samples shared by consecutive requests and, for
each trajectory in the reference set, its returns under the pool (a row of an [N, P]
matrix):

* a trajectory that enters the reference set adds a row (its returns under the pool);
  one that leaves it drops its row;
* every request replaces ceil(P / pool_refresh) pool tasks (the oldest ones, round robin)
  with fresh prior samples and computes only those columns, so the whole pool is renewed
  every ``pool_refresh`` requests;
* the batch's own M tasks are candidates as in GH Alg. 2; their column of returns is
  computed for the reference set in every request (N M T evaluations).

Per request that is O((M P + N M + N P / pool_refresh) T) instead of O(N K T), and the
decision is the AIR decision (percentile among the reference set, ties by advantage) for
the candidate set the request used: the pool only changes which prior samples are the
candidates, not how they are scored. Every return comes from ``kernels.discounted_returns``
(the same definition as the fresh path, linear fast path and feature-sum cache included).

    pool = CandidatePool(size=99, refresh=32)
    cands, R_new, R_ref = pool.returns(family, new, reference, own, discount, rng, ...)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from envs.core import TaskFamily
from relabel_service.core import Trajectory
from relabel_service.strategies import kernels


class CandidatePool:
    """P prior tasks shared across AIR requests plus each reference trajectory's returns
    under them (see the module docstring). Holds state between calls; the decisions it
    feeds are a pure function of (candidates, trajectories)."""

    def __init__(self, size: int, refresh: int):
        if size < 0:
            raise ValueError(f"CandidatePool size must be >= 0, got {size}")
        if refresh < 1:
            raise ValueError(f"CandidatePool refresh must be >= 1, got {refresh}")
        self.size = int(size)
        self.refresh = int(refresh)
        self.tasks: np.ndarray | None = None  # [P, Z]
        self._next_column = 0  # round-robin pointer of the rolling refresh
        self._rows: dict[str, int] = {}  # episode_id -> row of self._R
        self._R = np.zeros((0, self.size))  # [rows, P] returns under self.tasks
        self._family: TaskFamily | None = None
        self._discount: float | None = None
        self.rows_computed = 0  # trajectories whose pool returns were computed (stats)
        self.columns_computed = 0  # pool tasks (re)computed over the reference set

    def __len__(self) -> int:
        return len(self._rows)

    def _reset(self, family: TaskFamily, discount: float) -> None:
        self.tasks = None
        self._rows, self._R = {}, np.zeros((0, self.size))
        self._family, self._discount = family, float(discount)

    def returns(
        self,
        family: TaskFamily,
        new: Sequence[Trajectory],
        reference: Sequence[Trajectory],
        own: np.ndarray,
        discount: float,
        rng: np.random.Generator,
        num_candidates: int,
        max_elements: int = kernels.DEFAULT_MAX_ELEMENTS,
        cache: kernels.FeatureSumCache | None = None,
        float32: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates [K', Z] = max(K - M, 0) pool tasks then the own tasks [M, Z], and the
        returns R_new [M, K'], R_ref [N, K'] under them (``float32``: as
        ``kernels.discounted_returns``; a pool is used with one setting throughout).

        ``reference`` must hold unique episode_ids; new trajectories missing from it get
        rows too (reference-less AIR ranks the new ones among themselves)."""
        if family is not self._family or float(discount) != self._discount:
            self._reset(family, discount)
        P, Z = self.size, family.task_dim
        union = list(reference)
        index = {t.episode_id: i for i, t in enumerate(union)}
        for traj in new:
            if traj.episode_id not in index:
                index[traj.episode_id] = len(union)
                union.append(traj)
        # rows: kept ones gathered, the rest (trajectories new to the set) computed
        old = np.fromiter((self._rows.get(t.episode_id, -1) for t in union), dtype=np.int64, count=len(union))
        R = np.empty((len(union), P))
        kept = old >= 0
        if self.tasks is None:
            self.tasks = family.sample_tasks(rng, P) if P else np.zeros((0, Z))
            kept[:] = False
        R[kept] = self._R[old[kept]]
        missing = np.flatnonzero(~kept)
        if len(missing) and P:
            R[missing] = kernels.discounted_returns(
                family, [union[i] for i in missing], self.tasks, discount, max_elements, cache, float32
            )
            self.rows_computed += len(missing)
        # rolling refresh: the oldest ceil(P / refresh) pool tasks are redrawn (unless every
        # row was just computed under the current pool, as on the first request); their
        # columns and the own tasks' columns come from one call over the reference set
        cols = np.zeros(0, dtype=np.int64)
        if P and len(missing) < len(union):
            c = min(P, math.ceil(P / self.refresh))
            cols = (self._next_column + np.arange(c)) % P
            self._next_column = int((self._next_column + c) % P)
            self.tasks[cols] = family.sample_tasks(rng, c)
            self.columns_computed += c
        fresh = kernels.discounted_returns(
            family, union, np.concatenate([self.tasks[cols], own]), discount, max_elements, cache, float32
        )  # [N', c + M]
        R[:, cols] = fresh[:, : len(cols)]
        R_own = fresh[:, len(cols) :]
        self._R = R
        self._rows = {t.episode_id: i for i, t in enumerate(union)}
        # candidates: the first K - M pool tasks, then the batch's own tasks (GH Alg. 2)
        M = len(new)
        n_pool = min(max(num_candidates - M, 0), P)
        candidates = np.concatenate([self.tasks[:n_pool], own])
        R_all = np.concatenate([R[:, :n_pool], R_own], axis=1)  # [N', K']
        new_rows = np.fromiter((index[t.episode_id] for t in new), dtype=np.int64, count=M)
        return candidates, R_all[new_rows], R_all[: len(reference)]
