"""The elastic rollout pool: W Ray actors running ``RolloutWorker``, replaced when they die.

    pool = RolloutPool(make_actor, size=4)
    ref = pool.submit(wid, version, weights_ref, random_actions=False)
    pool.resize(8)               # grow or shrink while training runs
    pool.replace(wid)            # after its actor died

Each actor appends the trajectories it collects to the store itself, so the driver only
sees small stats; weights arrive as one object ref per published version and are fetched
by a worker only when the version is newer than the one it holds.
"""

from __future__ import annotations

from typing import Any, Callable

import ray

from actors.rollout import RolloutWorker


class RolloutActor(RolloutWorker):
    """RolloutWorker plus the store client and weight fetching (the Ray-facing methods)."""

    def __init__(self, store: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.store = store

    def run_round(self, version: int, weights_box: list, random_actions: bool) -> dict[str, float]:
        """Collect one episode per env slot and append them; returns stats after the acks."""
        weights = ray.get(weights_box[0]) if weights_box and version > self.policy_version else None
        trajs, stats = self.collect_episodes(weights, random_actions=random_actions)
        self.store.append_many(trajs)
        stats["worker_id"] = float(self.worker_id)
        stats["returns"] = [float(t.rewards.sum()) for t in trajs]
        return stats

    def evaluate_remote(self, weights_box: list, tasks: Any, seed: int) -> dict[str, Any]:
        return self.evaluate(ray.get(weights_box[0]), tasks, seed)


class RolloutPool:
    """Keeps ``size`` rollout actors alive; ids are stable, actors are replaceable."""

    def __init__(self, make_actor: Callable[[int], Any], size: int):
        if size < 0:
            raise ValueError(f"rollout pool size must be >= 0, got {size}")
        self.make_actor = make_actor
        self.actors: dict[int, Any] = {}
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
            added.append(wid)
        while len(self.actors) > size:
            wid = max(self.actors)
            ray.kill(self.actors.pop(wid), no_restart=True)
            removed.append(wid)
        return added, removed

    def replace(self, wid: int) -> None:
        """Start a new actor under the same id (its episode ids stay unique: new incarnation)."""
        if wid in self.actors:
            try:
                ray.kill(self.actors[wid], no_restart=True)
            except Exception:  # already dead
                pass
            self.actors[wid] = self.make_actor(wid)
            self.replaced += 1

    def submit(self, wid: int, version: int, weights_ref: Any, random_actions: bool) -> Any:
        box = [weights_ref] if weights_ref is not None else []
        return self.actors[wid].run_round.remote(version, box, random_actions)

    def shutdown(self) -> None:
        for a in self.actors.values():
            ray.kill(a, no_restart=True)
        self.actors.clear()
