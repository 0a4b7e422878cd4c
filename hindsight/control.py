"""Reaching a running training from outside, and the autoscaling rule of its rollout pool.

    control = start_control(run_dir)            # in the driver: a named actor
    reply = request_scale(run_dir, 8)           # anywhere on the cluster: {"before": 2, "after": 8, ...}

The control actor is named after the run directory's name (``hindsight-control-NAME``) in
the ``hindsight`` Ray namespace, so ``hindsight scale RUN_DIR N`` finds it from any
machine of the cluster (``ray.init(address="auto")``) whether or not that machine sees the
run directory. The driver polls it for requests and answers each with what the pool did.
Without a reachable actor (no Ray cluster where the command runs), ``hindsight scale``
falls back to ``RUN_DIR/control.json``, which the driver also reads.

``Autoscaler`` is the rule of ``rollout.autoscale = [min, max]``, a plain class: every
``every_s`` seconds it grows the pool by one while the learner was mostly waiting for
data and shrinks it by one while collection was mostly held back by the rate limiter.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Callable

NAMESPACE = "hindsight"


def control_actor_name(run_dir: str | Path) -> str:
    return f"hindsight-control-{Path(run_dir).resolve().name}"


class RunControl:
    """The named actor of one running training: requests in, the pool's answers out."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._ids = itertools.count(1)
        self._requests: list[tuple[int, int]] = []
        self._results: dict[int, dict[str, Any]] = {}
        self._status: dict[str, Any] = {}

    def scale(self, workers: int) -> int:
        """Queue a resize of the rollout pool; returns the request id to poll ``result`` with."""
        if int(workers) < 0:
            raise ValueError(f"the number of rollout workers must be >= 0, got {workers}")
        rid = next(self._ids)
        self._requests.append((rid, int(workers)))
        return rid

    def take_requests(self) -> list[tuple[int, int]]:
        """The driver's poll: every request since the last one."""
        out, self._requests = self._requests, []
        return out

    def report(self, request_id: int, result: dict[str, Any]) -> None:
        self._results[request_id] = result

    def result(self, request_id: int) -> dict[str, Any] | None:
        return self._results.get(request_id)

    def set_status(self, status: dict[str, Any]) -> None:
        self._status = status

    def status(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, **self._status}


def start_control(run_dir: str | Path, cpu_priority: str = "normal") -> Any | None:
    """Start the run's control actor (no CPUs; ``cpu_priority``: ``actors.priority``); None,
    with a warning, if the name is taken."""
    import logging

    import ray

    from actors.priority import background

    try:
        return (
            ray.remote(background(RunControl, cpu_priority))
            .options(name=control_actor_name(run_dir), namespace=NAMESPACE, num_cpus=0, lifetime=None)
            .remote(str(run_dir))
        )
    except ValueError as e:  # another live run has the same directory name
        logging.getLogger("hindsight.control").warning(
            "no control actor (%s); `hindsight scale` falls back to %s/control.json", e, run_dir
        )
        return None


def find_control(run_dir: str | Path) -> Any | None:
    """The control actor of a running training on the connected cluster, or None."""
    import ray

    try:
        return ray.get_actor(control_actor_name(run_dir), namespace=NAMESPACE)
    except ValueError:
        return None


def request_scale(run_dir: str | Path, workers: int, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """Ask the running training to resize its pool; its answer, or None if none is running.

    Raises TimeoutError when the driver does not answer within ``timeout_s`` (it polls
    about once a second, so that means it is stuck or gone).
    """
    import ray

    actor = find_control(run_dir)
    if actor is None:
        return None
    rid = ray.get(actor.scale.remote(int(workers)), timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = ray.get(actor.result.remote(rid), timeout=timeout_s)
        if result is not None:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"the training of {run_dir} took the request but did not answer within {timeout_s:g}s")


def format_scale(result: dict[str, Any]) -> str:
    """One line for ``hindsight scale``: what the pool did."""
    extra = []
    if result.get("added"):
        extra.append(f"added {len(result['added'])}")
    if result.get("removed"):
        extra.append(f"removed {len(result['removed'])}")
    if result.get("pending"):
        extra.append(f"{result['pending']} pending placement")
    if result.get("note"):
        extra.append(result["note"])
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"rollout pool: {result['before']} -> {result['after']} workers{tail}"


class Autoscaler:
    """``rollout.autoscale`` [lo, hi]: one step per period, from what the period showed.

    ``observe_train(waiting)``: a learner call that did no update because it waited for
    data (replay below ``min_replay`` or above the samples-per-insert bound).
    ``observe_collection(held)``: a driver iteration where the rate limiter held
    collection back (the learner is the bottleneck). ``decide(size)`` returns the new size
    at the end of a period, or None. A period that showed both (the learner waited for data
    while the driver held collection back for it) moves nothing: the data between them, in
    relabeling and ingest, is what both wait for, and a worker more or less changes neither
    (growing there undid a shrink of a saturated pool).
    """

    def __init__(self, lo: int, hi: int, every_s: float, clock: Callable[[], float] = time.monotonic):
        if not 0 <= lo <= hi:
            raise ValueError(f"autoscale needs 0 <= min <= max, got [{lo}, {hi}]")
        self.lo, self.hi, self.every_s, self.clock = lo, hi, every_s, clock
        self.history: list[dict[str, Any]] = []
        self._reset(clock())

    def _reset(self, now: float) -> None:
        self.t0 = now
        self.train_calls = self.waiting = self.loops = self.held = 0

    def observe_train(self, waiting: bool) -> None:
        self.train_calls += 1
        self.waiting += bool(waiting)

    def observe_collection(self, held: bool) -> None:
        self.loops += 1
        self.held += bool(held)

    def decide(self, size: int) -> int | None:
        now = self.clock()
        if now - self.t0 < self.every_s:
            return None
        starved = self.train_calls > 0 and self.waiting / self.train_calls > 0.5
        saturated = self.loops > 0 and self.held / self.loops > 0.5
        self._reset(now)
        if starved and saturated:
            return None
        if starved and size < self.hi:
            new, why = size + 1, "learner waiting for data"
        elif saturated and size > self.lo:
            new, why = size - 1, "collection held back by the rate limiter"
        else:
            return None
        self.history.append({"t": now, "from": size, "to": new, "why": why})
        return new
