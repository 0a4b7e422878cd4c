"""The elastic rollout pool: W Ray actors running ``RolloutWorker``, replaced when they die.

    pool = RolloutPool(make_actor, size=4)
    ref, gen = pool.submit(wid, version, weights_ref, random_actions=False)
    pool.resize(8)               # grow or shrink while training runs
    pool.replace(wid)            # after its actor died
    pool.is_current(wid, gen)    # False once wid was removed or replaced since the round began

Each actor appends the trajectories it collects to the store itself, so the driver only
sees small stats; weights arrive as one object ref per published version and are fetched
by a worker only when the version is newer than the one it holds.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import ray

from actors.rollout import MetaRolloutWorker, RolloutWorker


class RolloutActor(RolloutWorker):
    """RolloutWorker plus the store client and weight fetching (the Ray-facing methods)."""

    def __init__(self, store: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.store = store
        if store is None and getattr(self.family, "fault_dir", None):
            self.family.fault_dir = None  # injected faults (hindsight chaos) hit collection, not evaluation

    def run_round(self, version: int, weights_box: list, random_actions: bool) -> dict[str, Any]:
        """Collect one episode per env slot and append them; returns stats after the acks.

        A trajectory the store's validation rejects (a NaN reward from a faulty env, say)
        is dropped with its reason in ``stats["rejected"]``; the valid ones of the round
        are still appended, so one bad episode never costs the others.
        """
        weights = ray.get(weights_box[0]) if weights_box and version > self.policy_version else None
        trajs, stats = self.collect_episodes(weights, random_actions=random_actions)
        rejected: list[str] = []
        try:
            self.store.append_many(trajs)
        except ValueError:  # validation runs before anything is sent: find the bad ones
            good = []
            for t in trajs:
                try:
                    self.store.encode(t)
                    good.append(t)
                except ValueError as e:
                    rejected.append(f"{t.episode_id}: {e}")
            self.store.append_many(good)
            trajs = good
        stats["worker_id"] = float(self.worker_id)
        stats["returns"] = [float(t.rewards.sum()) for t in trajs]
        # acknowledged by the store: the driver's ledger (lost = acknowledged, never learned)
        stats["episode_ids"] = [t.episode_id for t in trajs]
        stats["episodes"] = float(len(trajs))
        stats["env_steps"] = float(sum(t.length for t in trajs))
        stats["rejected"] = rejected
        return stats

    def evaluate_remote(self, weights_box: list, tasks: Any, seed: int) -> dict[str, Any]:
        return self.evaluate(ray.get(weights_box[0]), tasks, seed)


class RolloutPool:
    """Keeps ``size`` rollout actors alive; ids are stable, actors are replaceable.

    Every actor has a generation (``gen[wid]``, bumped by ``replace``): a round submitted
    to generation g whose result or death arrives after the worker was removed or
    replaced is stale (``is_current`` is False) and is dropped by the caller.
    """

    def __init__(self, make_actor: Callable[[int], Any], size: int):
        if size < 0:
            raise ValueError(f"rollout pool size must be >= 0, got {size}")
        self.make_actor = make_actor
        self.actors: dict[int, Any] = {}
        self.gen: dict[int, int] = {}
        # when each actor was seen ready (None: still starting; a round's clock waits for it)
        self._ready_ref: dict[int, Any] = {}
        self._ready_at: dict[int, float | None] = {}
        self.replaced = 0
        self._next_id = 0
        self.resize(size)

    @property
    def size(self) -> int:
        return len(self.actors)

    def resize(self, size: int) -> tuple[list[int], list[int]]:
        """Grow by new ids or shrink by killing the newest; returns (added, removed) ids."""
        added, removed = [], []
        while len(self.actors) < size:
            wid = self._next_id
            self._next_id += 1
            self.actors[wid] = self.make_actor(wid)
            self.gen[wid] = 0
            self._watch_ready(wid)
            added.append(wid)
        while len(self.actors) > size:
            wid = max(self.actors)
            self._kill(self.actors.pop(wid))
            del self.gen[wid]
            self._ready_ref.pop(wid, None)
            self._ready_at.pop(wid, None)
            removed.append(wid)
        return added, removed

    def _watch_ready(self, wid: int) -> None:
        self._ready_ref[wid] = self.actors[wid].__ray_ready__.remote()
        self._ready_at[wid] = None

    def ready_since(self, wid: int) -> float | None:
        """perf_counter time at which ``wid``'s actor was first seen started, None while it
        is still starting (being placed, importing): a slow start is not a hung round."""
        if wid not in self._ready_at:
            return None
        if self._ready_at[wid] is None:
            done, _ = ray.wait([self._ready_ref[wid]], timeout=0)
            if done:
                self._ready_at[wid] = time.perf_counter()
        return self._ready_at[wid]

    def is_current(self, wid: int, gen: int) -> bool:
        """Whether ``wid`` is still in the pool and still runs generation ``gen``."""
        return self.gen.get(wid) == gen

    @staticmethod
    def _kill(actor: Any) -> None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already dead, or its node is gone
            pass

    def replace(self, wid: int, count: bool = True) -> None:
        """Start a new actor under the same id (its episode ids stay unique: new incarnation).
        ``count=False``: not a failure (a never-started actor dropped with its queued round)."""
        if wid in self.actors:
            self._kill(self.actors[wid])
            self.actors[wid] = self.make_actor(wid)
            self.gen[wid] += 1
            self._watch_ready(wid)
            self.replaced += int(count)

    def submit(self, wid: int, version: int, weights_ref: Any, random_actions: bool) -> tuple[Any, int]:
        """Start a round on ``wid``: (result ref, the generation that runs it)."""
        box = [weights_ref] if weights_ref is not None else []
        return self.actors[wid].run_round.remote(version, box, random_actions), self.gen[wid]

    def shutdown(self) -> None:
        for a in self.actors.values():
            self._kill(a)
        self.actors.clear()
        self.gen.clear()


class MetaRolloutActor(MetaRolloutWorker):
    """MetaRolloutWorker plus the store client and weight fetching (the Ray-facing methods)."""

    def __init__(self, store: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.store = store

    def run_task(self, version: int, weights_box: list, task_id: int, phases: list, embedding_size: int) -> dict:
        """Collect one iteration's phases for one task and append them; stats after the acks."""
        weights = ray.get(weights_box[0]) if weights_box and version > self.policy_version else None
        trajs, stats = self.collect_task(task_id, phases, weights, embedding_size)
        if self.store is not None:
            self.store.append_many(trajs)
        stats["worker_id"] = self.worker_id
        return stats

    def evaluate_meta_remote(self, weights_box: list, tasks: Any, seed: int, num_exploration: int,
                             num_trajectories: int) -> dict:
        return self.evaluate_meta(ray.get(weights_box[0]), tasks, seed, num_exploration, num_trajectories)
