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

On a non-linear family the pool also keeps the reference set's steps laid end to end (with
their discount weights), in its own row order: when the rows kept are the newest (the oldest
left), a request appends only the steps of the ones that joined instead of concatenating all
N trajectories again (``kernels.FeatureSumCache.laid_out``, ``kernels.step_returns``).

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
from itertools import compress
from typing import Sequence

import numpy as np

from envs.core import StepBatch, TaskFamily
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
        self._family: TaskFamily | None = None
        self._discount: float | None = None
        self._clear()
        self.rows_computed = 0  # trajectories whose pool returns were computed (stats)
        self.columns_computed = 0  # pool tasks (re)computed over the reference set

    def __len__(self) -> int:
        return len(self._rows)

    def _clear(self) -> None:
        """No rows: the pool's trajectories, their returns and (non-linear families) steps."""
        self._rows: dict[str, int] = {}  # episode_id -> row of self._R
        self._R = np.zeros((0, self.size))  # [rows, P] returns under self.tasks
        self._trajs: list[Trajectory] = []  # row order
        self._ids: list[str] = []  # their episode_ids
        self._lengths = np.zeros(0, dtype=np.int64)  # [rows]
        self._steps: StepBatch | None = None  # [S] the rows' steps end to end (non-linear)
        self._weights = np.zeros(0)  # [S] their discount weights
        self._layout = kernels.FeatureSumCache(capacity=0)  # lays the rows' steps out (non-linear)

    def _reset(self, family: TaskFamily, discount: float) -> None:
        self.tasks = None
        self._clear()
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
        ids = [t.episode_id for t in union]
        index = dict(zip(ids, range(len(ids))))
        for traj in new:
            if traj.episode_id not in index:
                index[traj.episode_id] = len(union)
                union.append(traj)
                ids.append(traj.episode_id)
        first = self.tasks is None
        if first:  # (no rows yet either: a new pool, or one reset above)
            self.tasks = family.sample_tasks(rng, P) if P else np.zeros((0, Z))
        # rows: the pool's rows still in the set keep their place and returns; the set's
        # trajectories new to the pool are appended, their returns under the pool computed
        kept = np.fromiter(map(index.__contains__, self._ids), dtype=bool, count=len(self._ids))
        rows = self._rows
        joined = [t for t, i in zip(union, ids) if i not in rows]
        self._keep_rows(family, kept, joined, discount)
        R = np.empty((len(self._trajs), P))
        n_kept = int(kept.sum())
        R[:n_kept] = self._R[kept]
        if joined and P:
            R[n_kept:] = self._returns(family, slice(n_kept, None), self.tasks, discount, max_elements, cache, float32)
            self.rows_computed += len(joined)
        # rolling refresh: the oldest ceil(P / refresh) pool tasks are redrawn (unless every
        # row was just computed under the current pool, as on the first request); their
        # columns and the own tasks' columns come from one call over the reference set
        cols = np.zeros(0, dtype=np.int64)
        if P and n_kept and not first:
            c = min(P, math.ceil(P / self.refresh))
            cols = (self._next_column + np.arange(c)) % P
            self._next_column = int((self._next_column + c) % P)
            self.tasks[cols] = family.sample_tasks(rng, c)
            self.columns_computed += c
        fresh = self._returns(family, slice(None), np.concatenate([self.tasks[cols], own]), discount,
                              max_elements, cache, float32)  # [rows, c + M]
        R[:, cols] = fresh[:, : len(cols)]
        self._R = R
        # candidates: the first K - M pool tasks, then the batch's own tasks (GH Alg. 2)
        M = len(new)
        n_pool = min(max(num_candidates - M, 0), P)
        candidates = np.concatenate([self.tasks[:n_pool], own])
        R_all = np.concatenate([R[:, :n_pool], fresh[:, len(cols):]], axis=1)  # [rows, K'] in row order
        rows = self._rows
        ref_rows = np.fromiter(map(rows.__getitem__, ids[: len(reference)]), dtype=np.int64, count=len(reference))
        new_rows = np.fromiter((rows[t.episode_id] for t in new), dtype=np.int64, count=M)
        return candidates, R_all[new_rows], R_all[ref_rows]

    def _keep_rows(self, family: TaskFamily, kept: np.ndarray, joined: list[Trajectory], discount: float) -> None:
        """Rows become the kept ones (in their order) then the ``joined`` ones; on a
        non-linear family their steps and discount weights follow (``FeatureSumCache.laid_out``:
        when the kept rows are a suffix, the usual case, only the joined ones' steps are
        laid out anew)."""
        keep = kept.tolist()
        self._trajs = list(compress(self._trajs, keep)) + joined
        self._ids = list(compress(self._ids, keep)) + [t.episode_id for t in joined]
        self._rows = dict(zip(self._ids, range(len(self._ids))))
        if kernels.linear_fast_path(family) or not self._trajs:
            self._lengths = np.concatenate([self._lengths[kept], kernels.trajectory_lengths(joined)])
            self._steps = None
        else:
            self._steps, self._lengths, self._weights = self._layout.laid_out(family, self._trajs, discount)

    def _returns(self, family: TaskFamily, rows: slice, tasks: np.ndarray, discount: float, max_elements: int,
                 cache: kernels.FeatureSumCache | None, float32: bool) -> np.ndarray:
        """Returns [rows, K] of the pool's rows ``rows`` (a slice) under ``tasks``: from the
        kept steps on a non-linear family, else ``kernels.discounted_returns`` (the linear
        fast path and its feature-sum cache)."""
        trajs = self._trajs[rows]
        if kernels.linear_fast_path(family) or self._steps is None:
            return kernels.discounted_returns(family, trajs, tasks, discount, max_elements, cache, float32)
        family.check_float32(float32)
        lengths = self._lengths[rows]
        ends = np.cumsum(self._lengths)
        r0, r1, _ = rows.indices(len(self._trajs))
        s0 = int(ends[r0 - 1]) if r0 > 0 else 0
        s1 = int(ends[r1 - 1]) if r1 > 0 else 0
        steps = self._steps if (s0, s1) == (0, len(self._weights)) else StepBatch(*(x[s0:s1] for x in self._steps))
        return kernels.step_returns(family, steps, lengths, self._weights[s0:s1], tasks, max_elements, float32)
