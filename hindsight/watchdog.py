"""No silent stall: notice when no data has moved and say where the run is stuck.

    dog = Watchdog(period_s=60)
    dog.observe((env_steps, relabeled, ingested, updates))   # every loop: any change = progress
    if dog.due():
        log.warning("watchdog: " + dog.message(diagnose(...)))

"Data moved" means a new env step, relabeled trajectory, ingested batch or learner
update. ``due`` is True once no data has moved for ``period_s`` and then at most once per
period, so the console gets one WARNING line per period, not a flood. ``diagnose`` turns
what the driver knows (and Ray's actor table) into the reasons: actors Ray has not placed,
a relabeler behind, a learner waiting for data, collection held by the rate limiter.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

#: actor states in which an actor exists but does not run yet (Ray's GCS actor table)
NOT_RUNNING = ("DEPENDENCIES_UNREADY", "PENDING_CREATION", "RESTARTING")


class Watchdog:
    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self.clock = clock
        self.marker: Any = None
        self.last_move = clock()
        self.last_warn = float("-inf")
        self.warnings = 0

    def observe(self, marker: Any) -> None:
        if marker != self.marker:
            self.marker = marker
            self.last_move = self.clock()

    def stalled_for(self) -> float:
        return self.clock() - self.last_move

    def due(self) -> bool:
        now = self.clock()
        if now - self.last_move < self.period_s or now - self.last_warn < self.period_s:
            return False
        self.last_warn = now
        self.warnings += 1
        return True

    def message(self, reasons: Sequence[str]) -> str:
        where = "; ".join(reasons) if reasons else "no reason found (every actor is running)"
        return f"no data moved for {self.stalled_for():.0f}s: {where}"


def pending_actors(handles: Mapping[str, Sequence[Any]]) -> dict[str, Counter]:
    """{kind: Counter(state)} of the given actor handles that exist but do not run.

    Reads Ray's GCS actor table (``ray._private.state.actors``) because ``ray.util.state``
    needs the dashboard, which Hindsight does not start.
    """
    from ray._private import state

    ids = {h._actor_id.hex(): kind for kind, hs in handles.items() for h in hs if h is not None}
    out: dict[str, Counter] = {}
    for st in NOT_RUNNING:
        for aid in state.actors(actor_state_name=st):
            if aid in ids:
                out.setdefault(ids[aid], Counter())[st] += 1
    return out


def free_resources() -> str:
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    parts = [f"{free.get(r, 0.0):.4g} of {total[r]:g} {r}s free" for r in ("CPU", "GPU") if total.get(r)]
    return ", ".join(parts) or "no CPUs"


def diagnose(
    *,
    pending: Mapping[str, Counter],
    cluster: str,
    pool_size: int,
    backlog: int,
    max_backlog: int,
    collection_held: bool,
    learner_waiting: bool,
    replay_size: int,
    min_replay: int,
    budget_spent: bool,
    learner_compiling: bool = False,
    undelivered: bool = False,
) -> list[str]:
    """Where the run is stuck, most fundamental first (pure: the facts in, sentences out)."""
    reasons = []
    if pending:
        kinds = ", ".join(
            f"{sum(c.values())} {kind} ({', '.join(f'{n} {s}' for s, n in c.items())})" for kind, c in sorted(pending.items())
        )
        reasons.append(f"actors pending placement: {kinds}; cluster: {cluster}")
    if pool_size == 0 and not budget_spent:
        reasons.append("the rollout pool is empty (hindsight scale RUN_DIR N)")
    if backlog > 0:
        held = " (collection waits: backlog above relabel.max_backlog)" if backlog > max_backlog else ""
        reasons.append(f"relabeler behind: {backlog} stored trajectories not yet relabeled{held}")
    if undelivered:
        reasons.append("the store holds records past the relabel cursors that no relabel result has delivered: "
                       "the run ends once they are relabeled and ingested")
    if learner_compiling:
        reasons.append("the learner has not finished its first train call: with learner.sac.compile it compiles "
                       "its update first (seconds with a warm inductor cache, 30 s to 3 min cold)")
    elif learner_waiting:
        if replay_size < min_replay:
            reasons.append(f"learner waiting for data: replay {replay_size} < learner.min_replay {min_replay}")
        else:
            reasons.append("learner waiting for data (samples-per-insert bound reached)")
    if collection_held:
        reasons.append("collection held back by the rate limiter (the learner is behind)")
    return reasons
