"""The relabel worker: streams new trajectories from its shards, runs a strategy, emits transitions.

    worker = RelabelWorker(family="point_reacher", strategy="air", store=store, shard_ids=[0, 1], ...)
    batch, stats = worker.relabel()        # TransitionBatch (originals + relabeled copies), dict

It is a plain class; the composition root wraps it with ``ray.remote``. The strategy is a
pure function; this class only does the I/O around it: cursors over the shards, the
reference set (the N most recent trajectories in the store, refreshed every few calls),
the versioned value function where a strategy needs one, and the conversion of the
strategy's decision into transitions.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from envs import get_family
from relabel_service.core import RelabelRequest, Trajectory, TransitionBatch, ValueFn
from relabel_service.strategies import make_strategy
from relabel_service.strategies.config import StrategyConfig
from relabel_service.strategies.transitions import to_transitions

#: builds a value function V(s0, z) from published weights (injected by the composition root)
ValueFnFactory = Callable[[Any], ValueFn]

#: strategies that need V(s0, z) from the learner's critic
NEEDS_VALUE = {"advantage"}
#: strategies whose tie-break uses V when it is available
USES_VALUE = {"air", "advantage"}


def most_recent(trajs: Sequence[Trajectory], n: int) -> list[Trajectory]:
    """The n most recent of ``trajs`` by ``created_at``, oldest first, each episode_id once.

    A stable sort: trajectories created at the same instant keep their given order, so
    with the store's oldest-first ``recent`` followed by the newly read ones the later
    arrivals count as newer."""
    seen: dict[str, Trajectory] = {}
    for t in trajs:
        seen.setdefault(t.episode_id, t)
    ordered = sorted(seen.values(), key=lambda t: t.created_at)
    return ordered[max(0, len(ordered) - n) :] if n > 0 else []


class RelabelWorker:
    def __init__(
        self,
        worker_id: int,
        family: str,
        strategy: str,
        strategy_cfg: StrategyConfig,
        store: Any,
        shard_ids: Sequence[int],
        discount: float,
        seed: int,
        family_kwargs: dict | None = None,
        batch_trajectories: int = 16,
        reference_refresh: int = 4,
        value_fn_factory: ValueFnFactory | None = None,
        cursors: dict[int, int] | None = None,
    ):
        self.worker_id = worker_id
        self.family = get_family(family, **(family_kwargs or {}))
        self.strategy_name = strategy
        self.strategy = make_strategy(strategy, strategy_cfg)
        self.cfg = strategy_cfg
        self.store = store
        self.shard_ids = list(shard_ids)
        self.cursors = {s: 0 for s in self.shard_ids}
        self.cursors.update({int(k): int(v) for k, v in (cursors or {}).items()})
        self.discount = discount
        self.rng = np.random.default_rng([seed, 7919, worker_id])
        self.batch_trajectories = batch_trajectories
        self.reference_refresh = reference_refresh
        self.value_fn_factory = value_fn_factory
        self.value_fn: ValueFn | None = None
        self.value_version = -1
        self.reference: list = []
        self.calls = 0

    def set_value_weights(self, version: int, weights: Any) -> None:
        if self.value_fn_factory is not None and version > self.value_version:
            self.value_fn = self.value_fn_factory(weights)
            self.value_version = version

    def relabel(self, wait_s: float = 0.5) -> tuple[TransitionBatch | None, dict[str, Any]]:
        """Relabel up to ``batch_trajectories`` new trajectories (waits up to ``wait_s`` for data)."""
        t0 = time.perf_counter()
        if self.strategy_name in NEEDS_VALUE and self.value_fn is None:
            # Advantage scores need V(s0, z) from the learner's critic: leave the data in the
            # store (cursors do not move) until the first weights arrive.
            time.sleep(wait_s)
            return None, {"trajectories": 0, "cursors": dict(self.cursors), "waiting_for": "value weights"}
        deadline = t0 + wait_s
        while True:
            trajs, self.cursors = self.store.read_new(self.cursors, self.batch_trajectories)
            if trajs or time.perf_counter() >= deadline:
                break
            time.sleep(0.05)
        stats: dict[str, Any] = {"trajectories": len(trajs), "cursors": dict(self.cursors)}
        if not trajs:
            return None, stats
        reference: Sequence = ()
        if self.cfg.reference_size > 0 and self.strategy_name == "air":
            if self.calls % self.reference_refresh == 0 or not self.reference:
                self.reference = self.store.recent(self.cfg.reference_size)
            # GH Alg. 2: the N most recent trajectories, the new ones included. Between
            # refreshes the trajectories read since join the set and the oldest leave it.
            self.reference = most_recent([*self.reference, *trajs], self.cfg.reference_size)
            reference = self.reference
        self.calls += 1
        request = RelabelRequest(
            family=self.family,
            new=trajs,
            discount=self.discount,
            reference=reference,
            value_fn=self.value_fn if self.strategy_name in USES_VALUE else None,
        )
        result = self.strategy(request, self.rng)
        batch = to_transitions(self.family, trajs, result)
        stats.update(
            {
                "transitions": len(batch),
                "env_steps": int(sum(t.length for t in trajs)),
                "relabeled_copies": len(result.copies),
                "fraction_relabeled": len(result.copies) / max(1, len(result.copies) + len(trajs) * result.keep_original),
                "value_version": self.value_version,
                "policy_versions": [t.policy_version for t in trajs],
                "seconds": time.perf_counter() - t0,
                "strategy_stats": {
                    k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in result.stats.items()
                },
            }
        )
        return batch, stats
