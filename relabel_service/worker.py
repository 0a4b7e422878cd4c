"""The relabel worker: streams new trajectories from its shards, runs a strategy, emits transitions.

    worker = RelabelWorker(family="point_reacher", strategy="air", store=store, shard_ids=[0, 1], ...)
    batch, stats = worker.relabel()        # TransitionBatch (originals + relabeled copies), dict

It is a plain class; the composition root wraps it with ``ray.remote``. The strategy is a
pure function; this class only does the I/O around it: cursors over the shards, the
reference set (the N most recent trajectories in the store, refreshed every few calls),
the versioned value function where a strategy needs one, and the conversion of the
strategy's decision into transitions.

Fixed batches (trajectory-level ``hipi``): the candidate set and log Z of HIPI Eq. 7 come
from the batch itself, so the worker relabels exactly ``strategy_cfg.hipi_batch`` (B)
trajectories at a time, whatever arrived when. It reads only what it still needs
(B - buffered, shard by shard), so the cursors it reports (those of the last delivered
batch, from which a replacement worker resumes) never skip a buffered trajectory. While it
waits its stats say so (``buffered``, ``waiting_for``); ``relabel(flush=True)``, sent by
the driver once collection has finished, relabels the last < B as one smaller batch.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import numpy as np

from actors.policy import retain_freed_memory
from envs import fused, get_family
from relabel_service.core import RelabelRequest, Trajectory, TransitionBatch, ValueFn
from relabel_service.strategies import make_strategy
from relabel_service.strategies.config import StrategyConfig
from relabel_service.strategies.transitions import to_transitions

log = logging.getLogger(__name__)

#: builds a value function V(s0, z) from published weights (injected by the composition root)
ValueFnFactory = Callable[[Any], ValueFn]

#: strategies that need V(s0, z) from the learner's critic
NEEDS_VALUE = {"advantage"}
#: strategies whose tie-break uses V when it is available
USES_VALUE = {"air", "advantage"}
#: strategies that relabel fixed-size batches (candidates and log Z come from the batch)
FIXED_BATCH = {"hipi"}
#: polling the shards for new data: the first pause after an empty read, doubling while the
#: shards stay empty, up to the last. Each read is a round trip over Ray to every shard the
#: worker owns: at a fixed 50 ms, the relabel worker and the two shards of an e2e air run
#: (HalfCheetahMO, 1 worker x 1 env, a trajectory every ~7 s) used 0.058 and 0.072 of a
#: core on the 2-core box, 0.029 and 0.038 with these. 0.2 s bounds what the pause adds to
#: a trajectory's way to the learner.
POLL_FIRST_S, POLL_MAX_S = 0.05, 0.2


class Backoff:
    """Pauses between reads that found nothing: ``wait(left)`` sleeps the current pause (at
    most ``left`` seconds: a call's deadline) and doubles it up to ``most``; ``reset()``
    after a read that found data. Kept across calls, so a worker whose shards stay empty
    polls every ``most`` seconds, not every ``first``."""

    def __init__(self, first: float = POLL_FIRST_S, most: float = POLL_MAX_S):
        self.first, self.most, self.pause = first, most, first

    def wait(self, left: float) -> None:
        time.sleep(max(0.0, min(self.pause, left)))
        self.pause = min(2.0 * self.pause, self.most)

    def reset(self) -> None:
        self.pause = self.first


def read_new_until(store: Any, cursors: dict[int, int], n: int, deadline: float,
                   backoff: Backoff) -> tuple[list, dict[int, int]]:
    """Up to ``n`` new trajectories after ``cursors`` (and the advanced cursors), reading
    again after ``backoff``'s pauses until some arrive or ``time.perf_counter()`` passes
    ``deadline``; the backoff restarts after a read that found data."""
    while True:
        trajs, cursors = store.read_new(cursors, n)
        now = time.perf_counter()
        if trajs or now >= deadline:
            break
        backoff.wait(deadline - now)
    if trajs:
        backoff.reset()
    return trajs, cursors


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
        batch_trajectories: int = 50,
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
        # fixed-batch strategies: trajectories read but not yet relabeled, and the cursors
        # of the last delivered batch (what a replacement worker must resume from)
        self.buffer: list = []
        self.delivered = dict(self.cursors)
        self._next_shard = 0
        self.backoff = Backoff()
        # the worker owns its process: keep freed numpy temporaries in the heap (V(s0, z)'s
        # layers, the returns' blocks) instead of faulting fresh pages in on every call
        retain_freed_memory()
        if strategy == "air" and strategy_cfg.air_kernel == "compiled":
            # compile the family's return kernel now, not in the first request (envs/fused.py)
            t0 = time.perf_counter()
            if fused.warm_up(self.family, float32=strategy_cfg.air_precision == "float32"):
                log.info("relabel worker %d: compiled return kernel of %s ready in %.1fs",
                         worker_id, self.family.name, time.perf_counter() - t0)
            else:
                log.warning("relabel worker %d: air_kernel='compiled' unavailable (%s); numpy returns",
                            worker_id, fused.failure() or f"{self.family.name} has no compiled kernel")

    def set_value_weights(self, version: int, weights: Any) -> None:
        if self.value_fn_factory is not None and version > self.value_version:
            self.value_fn = self.value_fn_factory(weights)
            self.value_version = version

    def relabel(self, wait_s: float = 0.5, flush: bool = False) -> tuple[TransitionBatch | None, dict[str, Any]]:
        """Relabel up to ``batch_trajectories`` new trajectories (waits up to ``wait_s`` for data).

        Fixed-batch strategies relabel exactly B buffered trajectories, or with ``flush``
        (no more data will come) whatever is buffered once the shards are empty."""
        t0 = time.perf_counter()
        if self.strategy_name in NEEDS_VALUE and self.value_fn is None:
            # Advantage scores need V(s0, z) from the learner's critic: leave the data in the
            # store (cursors do not move) until the first weights arrive.
            time.sleep(wait_s)
            return None, {"trajectories": 0, "cursors": dict(self.cursors), "waiting_for": "value weights"}
        deadline = t0 + wait_s
        if self.strategy_name in FIXED_BATCH:
            trajs, stats = self._fixed_batch(deadline, flush)
        else:
            trajs, self.cursors = read_new_until(self.store, self.cursors, self.batch_trajectories, deadline,
                                                 self.backoff)
            stats = {"trajectories": len(trajs), "cursors": dict(self.cursors)}
        if not trajs:
            return None, stats
        return self._relabel(trajs, stats, t0, self.strategy)

    def relabel_range(self, start: dict[int, int], end: dict[int, int]) -> tuple[TransitionBatch | None, dict[str, Any]]:
        """Relabel the stored records with ``start[s] <= seq < end[s]`` of each shard s, by
        the run's strategy, without moving the stream's cursors: how a learner restarted
        from a checkpoint refills its replay with the data it had before (a strategy that
        needs V(s0, z) and has none yet gives plain transitions)."""
        t0 = time.perf_counter()
        strategy = self.strategy
        if self.strategy_name in NEEDS_VALUE and self.value_fn is None:
            strategy = make_strategy("none", self.cfg)
        batches, ids, steps = [], [], 0
        # hipi's candidates and log Z come from the batch: refill in batches of B as well
        size = self.cfg.hipi_batch if self.strategy_name in FIXED_BATCH else self.batch_trajectories
        for s, first in start.items():
            cur, stop = int(first), int(end[int(s)])
            while cur < stop:
                trajs, new = self.store.read_new({int(s): cur}, min(size, stop - cur))
                if not trajs or new[int(s)] <= cur:
                    break
                cur = new[int(s)]
                batch, st = self._relabel(trajs, {}, t0, strategy)
                batches.append(batch)
                ids += st["episode_ids"]
                steps += st["env_steps"]
        stats = {"trajectories": len(ids), "episode_ids": ids, "env_steps": steps, "seconds": time.perf_counter() - t0}
        return (TransitionBatch.concat(batches) if batches else None), stats

    def _relabel(self, trajs: Sequence, stats: dict[str, Any], t0: float, strategy: Any) -> tuple[TransitionBatch, dict[str, Any]]:
        reference: Sequence = ()
        if self.cfg.reference_size > 0 and self.strategy_name == "air":
            if self.calls % self.reference_refresh == 0 or not self.reference:
                held = {t.episode_id: t for t in self.reference}
                self.reference = self.store.recent(self.cfg.reference_size, held=held)
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
        result = strategy(request, self.rng)
        batch = to_transitions(self.family, trajs, result)
        stats.update(
            {
                "transitions": len(batch),
                "env_steps": int(sum(t.length for t in trajs)),
                "relabeled_copies": len(result.copies),
                "fraction_relabeled": len(result.copies) / max(1, len(result.copies) + len(trajs) * result.keep_original),
                "value_version": self.value_version,
                "policy_versions": [t.policy_version for t in trajs],
                "episode_ids": [t.episode_id for t in trajs],
                "seconds": time.perf_counter() - t0,
                "strategy_stats": {
                    k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in result.stats.items()
                },
            }
        )
        return batch, stats

    def _fixed_batch(self, deadline: float, flush: bool) -> tuple[list, dict[str, Any]]:
        """Fill the buffer up to B; hand out exactly B (or, flushing, the rest)."""
        B = self.cfg.hipi_batch
        while True:
            if self._fill(B - len(self.buffer)):
                self.backoff.reset()
            now = time.perf_counter()
            if len(self.buffer) >= B or now >= deadline:
                break
            if flush and self.buffer and not self._fill(B - len(self.buffer)):
                break  # the shards are empty: no more data is coming
            self.backoff.wait(deadline - now)
        flushed = flush and 0 < len(self.buffer) < B
        if len(self.buffer) < B and not flushed:
            n = len(self.buffer)
            return [], {
                "trajectories": 0,
                "cursors": dict(self.delivered),
                "buffered": n,
                "buffered_env_steps": int(sum(t.length for t in self.buffer)),
                "waiting_for": f"{B - n} more trajectories to fill a hipi batch of {B}",
            }
        trajs, self.buffer = self.buffer[:B], self.buffer[B:]
        assert not self.buffer, "reads never go past the batch"
        self.delivered = dict(self.cursors)
        stats = {"trajectories": len(trajs), "cursors": dict(self.delivered), "buffered": 0, "buffered_env_steps": 0}
        return trajs, {**stats, "flushed": flushed}

    def _fill(self, need: int) -> int:
        """Read at most ``need`` new trajectories into the buffer, one shard at a time
        (starting from a rotating shard), so that no read goes past the batch; -> count."""
        got = 0
        for i in range(len(self.shard_ids)):
            if got >= need:
                break
            s = self.shard_ids[(self._next_shard + i) % len(self.shard_ids)]
            trajs, new = self.store.read_new({s: self.cursors[s]}, need - got)
            self.cursors[s] = int(new[s])
            self.buffer.extend(trajs)
            got += len(trajs)
        self._next_shard = (self._next_shard + 1) % max(1, len(self.shard_ids))
        return got

class MetaRelabelWorker:
    """Meta-RL relabeling (``strategies.meta``: none | random | hipi | hfr) for PEARL.

        worker = MetaRelabelWorker(0, "four_corners", "hfr", store, [0, 1], seed=0,
                                   utility_factory=factory, utility_batch_size=1024)
        worker.set_value_weights(version, weights)      # once per iteration: log Z is re-estimated
        rows, stats = worker.relabel()                  # MetaTransitions for the learner

    The I/O around the pure strategies: cursors over its shards, and per weights version
    the per-task data HFR needs from the store (each task's newest ``task_history`` original
    trajectories: start states for U, contexts for log Z and for HIPI's z). The value model
    comes from ``utility_factory(weights)``, injected by the composition root.
    """

    def __init__(self, worker_id: int, family: str, strategy: str, store: Any, shard_ids: Sequence[int], seed: int,
                 family_kwargs: dict | None = None, batch_trajectories: int = 64,
                 utility_factory: Callable[[Any], Any] | None = None, utility_batch_size: int = 256,
                 log_z_samples: int = 20, context_size: int | None = None, embedding_size: int = 100,
                 probability: float = 0.5, temperature: float = 1.0, task_history: int = 5,
                 cursors: dict[int, int] | None = None):
        from relabel_service.strategies.meta import get_meta_strategy

        self.worker_id = worker_id
        self.family = get_family(family, **(family_kwargs or {}))
        self.train_tasks = self.family.train_tasks()
        self.strategy_name = strategy
        self.strategy = get_meta_strategy(strategy)
        self.store = store
        self.shard_ids = list(shard_ids)
        self.cursors = {s: 0 for s in self.shard_ids}
        self.cursors.update({int(k): int(v) for k, v in (cursors or {}).items()})
        self.rng = np.random.default_rng([seed, 7907, worker_id])
        self.batch_trajectories = batch_trajectories
        self.utility_factory = utility_factory
        self.model: Any = None
        self.value_version = -1
        self.n_u, self.log_z_samples = utility_batch_size, log_z_samples
        self.context_size = context_size or self.family.horizon
        self.embedding_size = embedding_size
        self.probability, self.temperature = probability, temperature
        self.task_history = task_history
        self.start_states: np.ndarray | None = None
        self.log_Z = np.zeros(len(self.train_tasks))
        self.task_contexts: np.ndarray | None = None
        self._stale = True
        self.refresh_seconds = 0.0
        self.backoff = Backoff()

    def set_value_weights(self, version: int, weights: Any) -> None:
        if self.utility_factory is not None and version > self.value_version:
            self.model = self.utility_factory(weights)
            self.value_version = version
            self._stale = True

    def _refresh(self) -> None:
        """Start states, log Z (HFR) and task contexts (HIPI) from each task's original data."""
        from relabel_service.strategies import kernels
        from relabel_service.strategies.meta import hfr_reference_utilities

        t0 = time.perf_counter()
        fam, J = self.family, len(self.train_tasks)
        per_task = [self.store.by_task(fam.name, self.train_tasks[j], self.task_history) for j in range(J)]
        all_starts = [np.asarray(t.obs[0], np.float64) for trajs in per_task for t in trajs]
        if not all_starts:
            return
        steps: list = []
        starts = np.zeros((J, self.n_u, fam.obs_dim))
        for j, trajs in enumerate(per_task):
            # psi's start states; where psi has no data yet, any task's (one start distribution)
            pool = np.stack([np.asarray(t.obs[0], np.float64) for t in trajs]) if trajs else np.stack(all_starts)
            starts[j] = pool[self.rng.integers(len(pool), size=self.n_u)]
            steps.append(None if not trajs else (
                np.concatenate([t.obs[:-1] for t in trajs]), np.concatenate([t.actions for t in trajs]),
                np.concatenate([t.rewards for t in trajs]), np.concatenate([t.obs[1:] for t in trajs])))
        self.start_states = starts
        if self.strategy_name == "hfr":
            U_ref, have = hfr_reference_utilities(steps, starts, self.model, self.rng, self.log_z_samples,
                                                  self.context_size)
            self.log_Z = np.where(have, kernels.hfr_log_partition(U_ref, self.temperature), 0.0)
        if self.strategy_name == "hipi":
            D = self.model.context(np.zeros((1, fam.obs_dim)), np.zeros((1, fam.action_dim)), np.zeros(1),
                                   np.zeros((1, fam.obs_dim))).shape[-1]
            ctx = np.zeros((J, self.embedding_size, D), np.float32)
            for j, s in enumerate(steps):
                src = s if s is not None else next(x for x in steps if x is not None)
                pick = self.rng.integers(len(src[2]), size=self.embedding_size)
                ctx[j] = self.model.context(src[0][pick], src[1][pick], src[2][pick], src[3][pick])
            self.task_contexts = ctx
        self._stale = False
        self.refresh_seconds = time.perf_counter() - t0

    def relabel(self, wait_s: float = 0.5) -> tuple[Any, dict[str, Any]]:
        from relabel_service.strategies.meta import MetaRequest, meta_none, meta_transitions

        t0 = time.perf_counter()
        deadline = t0 + wait_s
        trajs, self.cursors = read_new_until(self.store, self.cursors, self.batch_trajectories, deadline, self.backoff)
        stats: dict[str, Any] = {"trajectories": len(trajs), "cursors": dict(self.cursors)}
        if not trajs:
            return None, stats
        needs_model = self.strategy_name in ("hfr", "hipi")
        if needs_model and self.model is not None and self._stale:
            self._refresh()
        request = MetaRequest(self.family, trajs, self.train_tasks, model=self.model, start_states=self.start_states,
                              log_Z=self.log_Z, task_contexts=self.task_contexts, temperature=self.temperature,
                              probability=self.probability)
        ready = not needs_model or (self.model is not None and self.start_states is not None)
        # before the first PEARL weights (the initial pool, never relabeled anyway) keep originals
        decision = self.strategy(request, self.rng) if ready else meta_none(request, self.rng)
        rows = meta_transitions(self.family, trajs, self.train_tasks, decision)
        st = decision.stats
        stats.update({
            "transitions": rows.size,
            "env_steps": int(sum(t.length for t in trajs)),
            "relabeled": int(decision.relabeled.sum()),
            "fraction_relabeled": float(decision.relabeled.mean()),
            "changed_task_fraction": float(st.get("changed_task_fraction", 0.0)),
            "chosen_tasks": np.asarray(st.get("chosen_task_index", []), dtype=np.int64).tolist(),
            "chosen_probability": np.asarray(st.get("chosen_probability", []), dtype=np.float64).tolist(),
            "entropy": st.get("entropy"),
            "utility_mean": st.get("utility_mean"),
            "log_z_mean": float(np.mean(self.log_Z)) if self.strategy_name == "hfr" else None,
            "value_version": self.value_version,
            "refresh_seconds": self.refresh_seconds,
            "seconds": time.perf_counter() - t0,
        })
        return rows, stats
